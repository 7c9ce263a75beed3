"""SCF threshold files: per-(layer, KV head) thresholds, written by ``cemsim tune``, read by ``eval``,
``capture`` and hardware configs.

Format (JSON, or the same keys in YAML)::

    format: cemsim-scf-thresholds
    version: 1
    model: smollm2-135m            # the model the thresholds were tuned on
    head_dim: 64
    convention: "keep key when matches >= T"   # the published artifact uses > T: T_cemsim = T_artifact + 1
    itq: true                       # whether queries/keys were ITQ-rotated before taking signs
    thresholds: [[T, T, T], ...]    # shape [layers][kv_heads], integers in 0..head_dim + 1
    layer_types: [sliding, ..., full, ...]  # optional: models with sliding-window layers, whose thresholds
                                    # are unused (no sparse stage there)
    provenance: {...}               # free-form: how they were found (tune settings, text, budget, results)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cemsim.atomic import atomic_write_text
from cemsim.errors import CemsimError

FORMAT = "cemsim-scf-thresholds"
CONVENTION = "keep key when matches >= T"


@dataclass
class ThresholdFile:
    model: str
    head_dim: int
    thresholds: np.ndarray  # int [layers, kv_heads]
    itq: bool = True
    layer_types: list[str] | None = None  # "full" | "sliding" per layer, for models that have both
    provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": 1,
            "model": self.model,
            "head_dim": self.head_dim,
            "convention": CONVENTION,
            "itq": self.itq,
            "thresholds": self.thresholds.astype(int).tolist(),
            **({"layer_types": self.layer_types} if self.layer_types else {}),
            "provenance": self.provenance,
        }

    def save(self, path: str | Path) -> None:
        p = Path(path)
        if p.suffix in (".yaml", ".yml"):
            import yaml

            atomic_write_text(p, yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            atomic_write_text(p, json.dumps(self.to_dict(), indent=2) + "\n")


def load_thresholds(
    path: str | Path, *, layers: int | None = None, kv_heads: int | None = None, head_dim: int | None = None
) -> ThresholdFile:
    """Read and check a thresholds file; every problem is a CemsimError naming the file and the field."""
    p = Path(path)
    where = str(p)
    try:
        raw = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CemsimError(f"cannot read the thresholds file: {exc.strerror or exc}", where=where) from exc
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(raw)
        else:
            data = json.loads(raw)
    except Exception as exc:
        raise CemsimError(
            f"not valid {'YAML' if p.suffix in ('.yaml', '.yml') else 'JSON'}: {exc}", where=where
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CemsimError(f"field 'format' must be {FORMAT!r} (write one with `cemsim tune`)", where=where)
    if data.get("convention", CONVENTION) != CONVENTION:
        raise CemsimError(
            f"field 'convention' must be {CONVENTION!r}, got {data.get('convention')!r}", where=where
        )
    try:
        th = np.asarray(data["thresholds"])
    except KeyError:
        raise CemsimError("field 'thresholds' is missing", where=where) from None
    if th.ndim != 2 or th.size == 0 or not np.issubdtype(th.dtype, np.integer):
        raise CemsimError(
            f"field 'thresholds' must be a [layers][kv_heads] list of integers, got {th.tolist()!r:.80}",
            where=where,
        )
    hd = int(data.get("head_dim", head_dim or 0))
    if head_dim is not None and hd != head_dim:
        raise CemsimError(f"field 'head_dim' is {hd}, the model has {head_dim}", where=where)
    if (th < 0).any() or (hd and (th > hd + 1).any()):
        raise CemsimError(f"field 'thresholds' holds values outside 0..{hd + 1}", where=where)
    if (layers is not None and th.shape[0] != layers) or (kv_heads is not None and th.shape[1] != kv_heads):
        raise CemsimError(
            f"field 'thresholds' has shape {list(th.shape)}, the model needs [{layers}][{kv_heads}]",
            where=where,
        )
    return ThresholdFile(
        model=str(data.get("model", "")),
        head_dim=hd,
        thresholds=th.astype(np.int64),
        itq=bool(data.get("itq", True)),
        layer_types=data.get("layer_types"),
        provenance=dict(data.get("provenance") or {}),
    )
