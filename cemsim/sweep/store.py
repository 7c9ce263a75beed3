"""The results store: one small Parquet file per finished point under OUT/points/<hash>.parquet, each
written atomically, so a killed sweep loses nothing it finished; and OUT/results.parquet, the combined
table, written atomically at the end. Analysis (plots) reads these files only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cemsim.atomic import atomic_path
from cemsim.errors import CemsimError

RESULTS_FILE = "results.parquet"
META_KEY = b"cemsim.sweep"  # Parquet key-value metadata: the spec's name, kind, axes and chart options


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ordinary_permissions(path: Path) -> None:
    """Result files are for sharing: 0666 less the umask, not the 0600 of the temporary file they began as."""
    os.chmod(path, 0o666 & ~_umask())


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted columns (energy_breakdown_j.cem); lists become JSON text."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(value, default=str)
        else:
            out[name] = value
    return out


class ResultStore:
    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.points_dir = self.out / "points"

    def point_file(self, point_id: str) -> Path:
        return self.points_dir / f"{point_id}.parquet"

    def done(self, point_id: str) -> bool:
        return self.point_file(point_id).is_file()

    def write_point(self, point_id: str, row: dict[str, Any]) -> None:
        table = pa.Table.from_pylist([row])
        with atomic_path(self.point_file(point_id)) as tmp:
            pq.write_table(table, tmp)
            ordinary_permissions(tmp)

    def read_point(self, point_id: str) -> dict[str, Any]:
        rows = pq.read_table(self.point_file(point_id)).to_pylist()
        return rows[0]

    def write_results(self, frame: pd.DataFrame, meta: dict[str, Any]) -> Path:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        existing = table.schema.metadata or {}
        table = table.replace_schema_metadata({**existing, META_KEY: json.dumps(meta, default=str).encode()})
        target = self.out / RESULTS_FILE
        with atomic_path(target) as tmp:
            pq.write_table(table, tmp)
            ordinary_permissions(tmp)
        return target


def read_results(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A results table and its sweep metadata; ``path`` is a results.parquet or a sweep output folder."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise CemsimError(f"{path}: no results file (run `cemsim sweep SPEC --out DIR` first)")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise CemsimError(f"{path}: not a readable Parquet results file ({exc})") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    meta = json.loads(raw) if raw else {}
    return table.to_pandas(), meta
