"""The on-disk trace: one Parquet file, one row per (decode step, layer, KV head), zstd-compressed.

Columns (see traces/README.md for the full table):
    step, layer, kv_head, context_len, window, sinks, keys_considered, survivors, values_fetched  (scalars)
    metadata_bytes   int64, null when the policy reads no metadata
    survivor_blocks  binary: survivors per position block as uint8 (little-endian uint16 when block_size > 255)
    topk_counts      binary, null when not captured: int16 per query head of the group, positions it chose
    topk_positions   binary, null when not captured: int32 per position, each query head's positions sorted
                     and stored as deltas (first value absolute), concatenated over the group's query heads

Per-row blobs rather than Parquet lists: a list stores a repetition level per value, and decoding 2M of
them per step at 1M tokens ran at 12 steps/s; blobs decode at several hundred (docs/benchmarks.md).

Footer key-value metadata: ``cemsim.schema_version``, ``cemsim.header`` (TraceHeader as JSON),
``cemsim.summary`` (steps, rows, context range), and ``cemsim.sha256``: the SHA-256 of the whole file with
those 64 hex characters replaced by zeros. The reader checks it, streaming, before Parquet parses a byte,
so any corruption or truncation is a CemsimError rather than whatever the Parquet decoder would do with it.

Row groups always end on a step boundary, so the reader holds one row group (a few steps, or one step of
a 1M-token trace) at a time: memory does not grow with the trace length.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cemsim.atomic import atomic_path
from cemsim.errors import CemsimError
from cemsim.trace.records import READABLE_VERSIONS, SCHEMA_VERSION, StepRecord, TraceHeader

KEY_VERSION = "cemsim.schema_version"
KEY_HEADER = "cemsim.header"
KEY_SUMMARY = "cemsim.summary"
KEY_SHA = "cemsim.sha256"
_SHA_PLACEHOLDER = b"0" * 64
# Thrift compact encoding of a KeyValue's value field holding 64 bytes: field header 0x18, length 0x40.
_SHA_PREFIX = KEY_SHA.encode() + b"\x18\x40"
_MAGIC = b"PAR1"
_CHUNK = 1 << 20
# Flush a row group once it holds this many survivor-block values (about 4 MB as uint8) or rows.
_GROUP_BLOCK_VALUES = 4_000_000
_GROUP_ROWS = 16_384

SCALARS = (
    "step",
    "layer",
    "kv_head",
    "context_len",
    "window",
    "sinks",
    "keys_considered",
    "survivors",
    "values_fetched",
    "metadata_bytes",
)


def block_dtype(block_size: int) -> np.dtype:
    """Survivors per block never exceed block_size: one byte per block unless blocks are wider than 255."""
    return np.dtype("u1") if block_size <= 255 else np.dtype("<u2")


def arrow_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("step", pa.int32(), nullable=False),
            pa.field("layer", pa.int16(), nullable=False),
            pa.field("kv_head", pa.int16(), nullable=False),
            pa.field("context_len", pa.int64(), nullable=False),
            pa.field("window", pa.int32(), nullable=False),
            pa.field("sinks", pa.int32(), nullable=False),
            pa.field("keys_considered", pa.int64(), nullable=False),
            pa.field("survivors", pa.int64(), nullable=False),
            pa.field("values_fetched", pa.int64(), nullable=False),
            pa.field("metadata_bytes", pa.int64()),
            pa.field("survivor_blocks", pa.binary(), nullable=False),
            pa.field("topk_counts", pa.binary()),
            pa.field("topk_positions", pa.binary()),
        ]
    )


def header_to_json(header: TraceHeader) -> str:
    return json.dumps(dataclasses.asdict(header), sort_keys=True)


def header_from_json(text: str, where: str) -> TraceHeader:
    try:
        data = json.loads(text)
        names = {f.name for f in dataclasses.fields(TraceHeader)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown header fields {unknown}")
        return TraceHeader(**data)
    except (ValueError, TypeError) as exc:
        raise CemsimError(
            f"the trace header in the file's metadata is unreadable ({exc})", where=where
        ) from None


# ---------------------------------------------------------------------------------------------- writing


class TraceWriter:
    """Write a trace step by step. Use as a context manager: the file appears at ``path`` only when the block
    exits normally; an exception or Ctrl-C deletes the temporary file and leaves nothing at ``path``."""

    def __init__(self, path: str | os.PathLike[str], header: TraceHeader) -> None:
        if header.schema_version != SCHEMA_VERSION:
            raise CemsimError(
                f"header schema_version {header.schema_version}, this writer writes {SCHEMA_VERSION}"
            )
        self.path = Path(path)
        try:
            header.check_layer_types()
        except ValueError as exc:
            raise CemsimError(f"trace header: {exc}", where=str(path)) from None
        self.header = header
        self.schema = arrow_schema()
        self._block_dtype = block_dtype(header.block_size)
        self._stack = contextlib.ExitStack()
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._rows: dict[str, list[Any]] = {}
        self._buffered_values = 0
        self._steps = 0
        self._total_rows = 0
        self._last_step: int | None = None
        self._ctx_min: int | None = None
        self._ctx_max = 0

    def __enter__(self) -> TraceWriter:
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        self._writer = pq.ParquetWriter(
            self._tmp,
            self.schema,
            compression="zstd",
            compression_level=1,  # measured: smaller and faster than 3 on survivor counts
            write_statistics=False,
            store_schema=False,
            use_dictionary=["step", "context_len", "window", "sinks", "layer", "kv_head"],
        )
        self._reset()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self._finish()
            elif self._writer is not None:
                with contextlib.suppress(Exception):
                    self._writer.close()
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        self._stack.__exit__(exc_type, exc, tb)

    def _reset(self) -> None:
        self._rows = {name: [] for name in self.schema.names}
        self._buffered_values = 0

    def write(self, rec: StepRecord) -> None:
        """Append one decode step (all layers and KV heads)."""
        if self._writer is None:
            raise RuntimeError("TraceWriter.write outside its `with` block")
        h = self.header
        try:
            rec.check(h)
        except ValueError as exc:
            raise CemsimError(str(exc), where=str(self.path)) from None
        if self._last_step is not None and rec.step <= self._last_step:
            raise CemsimError(
                f"steps must increase: step {rec.step} after {self._last_step}", where=str(self.path)
            )
        if h.block_size <= 255 and rec.survivor_blocks.size and int(rec.survivor_blocks.max()) > 255:
            raise CemsimError(
                f"step {rec.step}: a block holds more survivors than block_size", where=str(self.path)
            )
        n_rows = h.layers * h.kv_heads
        r = self._rows
        r["step"].extend([rec.step] * n_rows)
        r["layer"].extend(np.repeat(np.arange(h.layers), h.kv_heads).tolist())
        r["kv_head"].extend(np.tile(np.arange(h.kv_heads), h.layers).tolist())
        r["context_len"].extend([rec.context_len] * n_rows)
        if h.sliding_layers:  # per row: sliding layers attend their local window, no sinks
            local = [h.layer_type(i) != "full" for i in range(h.layers) for _ in range(h.kv_heads)]
            lw = h.local_window_at(rec.context_len)
            r["window"].extend([lw if x else rec.window for x in local])
            r["sinks"].extend([0 if x else rec.sinks for x in local])
        else:
            r["window"].extend([rec.window] * n_rows)
            r["sinks"].extend([rec.sinks] * n_rows)
        for name in ("keys_considered", "survivors", "values_fetched"):
            r[name].append(np.asarray(getattr(rec, name), dtype=np.int64).reshape(-1))
        md = rec.metadata_bytes
        r["metadata_bytes"].extend(
            [None] * n_rows if md is None else np.asarray(md, np.int64).reshape(-1).tolist()
        )
        blocks = np.asarray(rec.survivor_blocks).reshape(n_rows, -1)
        r["survivor_blocks"].append(
            (np.full(n_rows, blocks.shape[1]), blocks.astype(self._block_dtype).reshape(-1))
        )
        counts, deltas = _encode_topk(rec.topk_positions, h, rec.step)
        r["topk_counts"].append(counts)
        r["topk_positions"].append(deltas)
        self._buffered_values += rec.survivor_blocks.size
        self._steps += 1
        self._total_rows += n_rows
        self._last_step = rec.step
        self._ctx_min = rec.context_len if self._ctx_min is None else min(self._ctx_min, rec.context_len)
        self._ctx_max = max(self._ctx_max, rec.context_len)
        if self._buffered_values >= _GROUP_BLOCK_VALUES or len(r["step"]) >= _GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        r = self._rows
        if not r["step"]:
            return
        cols: dict[str, pa.Array] = {}
        for name in ("step", "layer", "kv_head", "context_len", "window", "sinks", "metadata_bytes"):
            cols[name] = pa.array(r[name], type=self.schema.field(name).type)
        for name in ("keys_considered", "survivors", "values_fetched"):
            cols[name] = pa.array(np.concatenate(r[name]), type=pa.int64())
        for name in ("survivor_blocks", "topk_counts", "topk_positions"):
            cols[name] = _blob_array(r[name])
        assert self._writer is not None
        self._writer.write_table(pa.table(cols, schema=self.schema), row_group_size=len(r["step"]))
        self._reset()

    def _finish(self) -> None:
        self._flush()
        assert self._writer is not None and self._tmp is not None
        summary = {
            "steps": self._steps,
            "rows": self._total_rows,
            "context_min": self._ctx_min or 0,
            "context_max": self._ctx_max,
        }
        # All metadata goes in at close (with store_schema=False, schema metadata given at open is dropped).
        self._writer.add_key_value_metadata(
            {
                KEY_VERSION: str(SCHEMA_VERSION),
                KEY_HEADER: header_to_json(self.header),
                KEY_SUMMARY: json.dumps(summary),
                KEY_SHA: _SHA_PLACEHOLDER.decode(),
            }
        )
        self._writer.close()
        self._writer = None
        _seal(self._tmp)
        # mkstemp makes the temp file 0600; a trace is an ordinary output file: 0666 less the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self._tmp, 0o666 & ~umask)


def _blob_array(parts: list[tuple[np.ndarray, np.ndarray | None]]) -> pa.Array:
    """Binary column from steps given as (elements per row, flat little-endian values); values None makes
    that step's rows null. Raw blobs decode far faster than Parquet lists (no per-value levels)."""
    itemsize = next((v.dtype.itemsize for _, v in parts if v is not None), 1)
    lens = (
        np.concatenate([np.zeros(len(n)) if v is None else n for n, v in parts]).astype(np.int64) * itemsize
    )
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise CemsimError("one row group would exceed 2 GB; this should not happen (row groups are bounded)")
    data = b"".join(v.tobytes() for _, v in parts if v is not None)
    null = np.concatenate([np.full(len(n), v is None) for n, v in parts])
    buffers = [
        None if not null.any() else pa.array(~null).buffers()[1],
        pa.py_buffer(offsets.astype(np.int32)),
    ]
    return pa.Array.from_buffers(
        pa.binary(), len(lens), [*buffers, pa.py_buffer(data)], null_count=int(null.sum())
    )


Part = tuple[np.ndarray, np.ndarray | None]


def _encode_topk(topk: np.ndarray | None, h: TraceHeader, step: int) -> tuple[Part, Part]:
    """[L, H, G, k] positions, -1 padded -> the topk_counts part and the topk_positions part (sorted deltas,
    first value absolute, per query head), each as (list length per row, flat values)."""
    n_rows = h.layers * h.kv_heads
    g = h.group_size
    if topk is None:
        empty = np.zeros(n_rows, np.int32)
        return (empty, None), (empty, None)
    arr = np.asarray(topk)
    if arr.ndim != 4 or arr.shape[:3] != (h.layers, h.kv_heads, g):
        raise CemsimError(
            f"step {step}: topk_positions has shape {arr.shape}, expected ({h.layers}, {h.kv_heads}, {g}, k)"
        )
    arr = arr.reshape(n_rows * g, -1).astype(np.int64)
    valid = arr >= 0
    counts = valid.sum(axis=1)
    # Sort each query head's positions with the padding (-1) last, then delta-encode the valid prefix.
    keyed = np.where(valid, arr, np.iinfo(np.int64).max)
    keyed.sort(axis=1)
    deltas = np.diff(keyed, axis=1, prepend=0)
    flat = deltas[np.arange(keyed.shape[1])[None, :] < counts[:, None]].astype("<i4")
    per_row = counts.reshape(n_rows, g)
    return (
        (np.full(n_rows, g, np.int32), per_row.reshape(-1).astype("<i2")),
        (per_row.sum(axis=1).astype(np.int32), flat),
    )


def _seal(path: Path) -> None:
    """Hash the finished file (placeholder in place) and write the digest over the placeholder."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        off = _sha_offset(f, size, str(path))
        f.seek(off)
        if f.read(64) != _SHA_PLACEHOLDER:
            raise RuntimeError("checksum placeholder not found after writing")
        digest = _file_digest(f, size, off)
        f.seek(off)
        f.write(digest.encode())


# ---------------------------------------------------------------------------------------------- reading


def _sha_offset(f: Any, size: int, where: str) -> int:
    """Byte offset of the 64 hex digits of ``cemsim.sha256`` inside the Parquet footer."""
    if size < 12:
        raise CemsimError(f"the file is {size} bytes: truncated, or not a trace", where=where)
    f.seek(0)
    head = f.read(4)
    f.seek(size - 8)
    tail = f.read(8)
    if head != _MAGIC or tail[4:] != _MAGIC:
        raise CemsimError(
            "not a Parquet file (its first or last bytes are not 'PAR1'): the trace is truncated or corrupted, "
            "or the path names some other file",
            where=where,
        )
    (footer_len,) = struct.unpack("<i", tail[:4])
    if footer_len <= 0 or footer_len > size - 12:
        raise CemsimError(
            f"the Parquet footer length ({footer_len}) does not fit the file: corrupted", where=where
        )
    f.seek(size - 8 - footer_len)
    footer = f.read(footer_len)
    at = footer.find(_SHA_PREFIX)
    if at < 0 or footer.find(_SHA_PREFIX, at + 1) >= 0:
        raise CemsimError(
            "a Parquet file without a cemsim checksum: not a cemsim trace (or a corrupted one). "
            "Make traces with `cemsim capture` or `cemsim trace project`",
            where=where,
        )
    return size - 8 - footer_len + at + len(_SHA_PREFIX)


def _file_digest(f: Any, size: int, sha_off: int) -> str:
    h = hashlib.sha256()
    f.seek(0)
    pos = 0
    while pos < size:
        chunk = f.read(min(_CHUNK, size - pos))
        if not chunk:
            break
        lo, hi = sha_off - pos, sha_off + 64 - pos
        if hi > 0 and lo < len(chunk):
            b = bytearray(chunk)
            b[max(lo, 0) : min(hi, len(chunk))] = b"0" * (min(hi, len(chunk)) - max(lo, 0))
            chunk = bytes(b)
        h.update(chunk)
        pos += len(chunk)
    return h.hexdigest()


def verify_file(path: str | os.PathLike[str]) -> None:
    """Raise CemsimError unless ``path`` is a complete, uncorrupted cemsim trace file (streaming SHA-256)."""
    where = str(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            off = _sha_offset(f, size, where)
            f.seek(off)
            stored = f.read(64)
            if not all(c in b"0123456789abcdef" for c in stored):
                raise CemsimError("the stored checksum is not hexadecimal: corrupted", where=where)
            if _file_digest(f, size, off) != stored.decode():
                raise CemsimError(
                    "checksum mismatch: the trace file is corrupted (its content differs from what was written)",
                    where=where,
                )
    except FileNotFoundError:
        raise CemsimError("no such trace file", where=where) from None
    except IsADirectoryError:
        raise CemsimError("is a directory, not a trace file", where=where) from None
    except OSError as exc:
        raise CemsimError(f"cannot read the trace file: {exc.strerror or exc}", where=where) from None


class TraceReader:
    """Stream a trace: ``.header``, ``.summary``, ``.iter_steps()`` one row group at a time, ``.to_pandas()``.

    ``verify=True`` (default) checks the whole-file SHA-256 first, streaming in 1 MB chunks."""

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = True) -> None:
        self.path = Path(path)
        where = str(self.path)
        if verify:
            verify_file(self.path)
        elif not self.path.is_file():
            raise CemsimError("no such trace file", where=where)
        try:
            self._pf = pq.ParquetFile(self.path)
            meta = {k.decode(): v.decode() for k, v in (self._pf.metadata.metadata or {}).items()}
        except CemsimError:
            raise
        except Exception as exc:
            raise CemsimError(
                f"cannot read the trace as Parquet ({type(exc).__name__}: {exc})", where=where
            ) from None
        if KEY_VERSION not in meta or KEY_HEADER not in meta:
            raise CemsimError("a Parquet file without cemsim trace metadata: not a cemsim trace", where=where)
        version = meta[KEY_VERSION]
        if version not in {str(v) for v in READABLE_VERSIONS}:
            raise CemsimError(
                f"trace schema version {version}, but this cemsim reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}; recapture the trace with this cemsim (or use the "
                "cemsim release that wrote it)",
                where=where,
            )
        self.header = header_from_json(meta[KEY_HEADER], where)
        if str(self.header.schema_version) != version:
            raise CemsimError(
                f"the header says schema version {self.header.schema_version}, the file metadata {version}",
                where=where,
            )
        try:
            self.header.check_layer_types()
        except ValueError as exc:
            raise CemsimError(f"trace header: {exc}", where=where) from None
        try:
            self.summary: dict[str, Any] = json.loads(meta.get(KEY_SUMMARY, "{}"))
        except ValueError:
            raise CemsimError("the trace summary metadata is unreadable", where=where) from None
        expected = arrow_schema()
        got = self._pf.schema_arrow.remove_metadata()
        if not got.equals(expected.remove_metadata()):
            raise CemsimError("the trace's columns differ from the schema this cemsim reads", where=where)

    @property
    def num_steps(self) -> int:
        return int(self.summary.get("steps", 0))

    @property
    def num_row_groups(self) -> int:
        return self._pf.num_row_groups

    def close(self) -> None:
        self._pf.close()

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _read_group(self, i: int, columns: list[str] | None = None) -> pa.Table:
        try:
            return self._pf.read_row_group(i, columns=columns)
        except Exception as exc:
            raise CemsimError(
                f"row group {i} is unreadable ({type(exc).__name__}: {exc})", where=str(self.path)
            ) from None

    def iter_steps(self, *, topk: bool = True, check: bool = True) -> Iterator[StepRecord]:
        """Yield one StepRecord per decode step. ``topk=False`` skips the top-k columns (faster)."""
        cols = list(self.schema_names)
        if not topk:
            cols = [c for c in cols if not c.startswith("topk_")]
        for gi in range(self._pf.num_row_groups):
            yield from self._steps_of(self._read_group(gi, cols), gi, check)

    @property
    def schema_names(self) -> list[str]:
        return list(self._pf.schema_arrow.names)

    def _steps_of(self, t: pa.Table, gi: int, check: bool) -> Iterator[StepRecord]:
        h = self.header
        n_rows = h.layers * h.kv_heads
        where = f"{self.path}, row group {gi}"
        if t.num_rows % n_rows:
            raise CemsimError(
                f"{t.num_rows} rows is not a whole number of steps of {n_rows} rows", where=where
            )
        scal = {c: t.column(c).to_numpy() for c in SCALARS if c != "metadata_bytes"}
        md_col = t.column("metadata_bytes")
        bdt = block_dtype(h.block_size)
        sb_off, sb_val, _ = _blob_view(t.column("survivor_blocks"), bdt)
        has_topk = "topk_positions" in t.column_names
        if has_topk:
            tc_off, tc_val, tc_valid = _blob_view(t.column("topk_counts"), np.dtype("<i2"))
            tp_off, tp_val, _ = _blob_view(t.column("topk_positions"), np.dtype("<i4"))
        expect_layer = np.repeat(np.arange(h.layers), h.kv_heads)
        full = h.full_layers
        # The step's window and sinks are those of a full-attention row (sliding rows hold the local window).
        w_row = full[0] * h.kv_heads if full else 0
        expect_head = np.tile(np.arange(h.kv_heads), h.layers)
        for s in range(t.num_rows // n_rows):
            a, b = s * n_rows, (s + 1) * n_rows
            step = int(scal["step"][a])
            if (
                np.any(scal["step"][a:b] != step)
                or not np.array_equal(scal["layer"][a:b], expect_layer)
                or not np.array_equal(scal["kv_head"][a:b], expect_head)
            ):
                raise CemsimError(f"step {step}: rows are not one per (layer, KV head) in order", where=where)
            ctx = int(scal["context_len"][a])
            nb = -(-ctx // h.block_size)
            lo, hi = int(sb_off[a]), int(sb_off[b])
            if hi - lo != n_rows * nb or np.any(np.diff(sb_off[a : b + 1]) != nb):
                raise CemsimError(
                    f"step {step}: survivor_blocks hold {hi - lo} values, expected {n_rows * nb}", where=where
                )
            blocks = sb_val[lo:hi].astype(np.uint16).reshape(h.layers, h.kv_heads, nb)
            md = md_col.slice(a, n_rows)
            metadata = None if md.null_count == n_rows else md.to_numpy(zero_copy_only=False).astype(np.int64)
            topk_positions = None
            if has_topk and tc_valid[a]:
                topk_positions = _decode_topk(tc_off, tc_val, tp_off, tp_val, a, b, h, step, where)
            rec = StepRecord(
                step=step,
                context_len=ctx,
                keys_considered=scal["keys_considered"][a:b].reshape(h.layers, h.kv_heads).astype(np.int64),
                survivors=scal["survivors"][a:b].reshape(h.layers, h.kv_heads).astype(np.int64),
                survivor_blocks=blocks,
                values_fetched=scal["values_fetched"][a:b].reshape(h.layers, h.kv_heads).astype(np.int64),
                window=int(scal["window"][a + w_row]),
                sinks=int(scal["sinks"][a + w_row]),
                metadata_bytes=None if metadata is None else metadata.reshape(h.layers, h.kv_heads),
                topk_positions=topk_positions,
            )
            if check:
                try:
                    rec.check(h)
                except ValueError as exc:
                    raise CemsimError(str(exc), where=where) from None
            yield rec

    def to_pandas(self) -> Any:
        """One row per (step, layer, kv_head) with the scalar columns and the filter ratio; no per-block data."""
        import pandas as pd

        frames = [self._read_group(i, list(SCALARS)).to_pandas() for i in range(self._pf.num_row_groups)]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(SCALARS))
        df["filter_ratio"] = df["keys_considered"] / df["survivors"].where(df["survivors"] > 0)
        return df


def _blob_view(col: pa.ChunkedArray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A binary column as (row offsets in elements, flat values, row valid mask), without copying the data."""
    arr = col.combine_chunks()
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32)[arr.offset : arr.offset + n + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    start = int(offsets[0]) if n else 0
    offsets -= start
    if n and (np.any(offsets % dtype.itemsize) or int(offsets[-1]) + start > data.size):
        raise CemsimError(f"a blob of the trace is not a whole number of {dtype} values")
    valid = np.ones(n, bool) if arr.null_count == 0 else arr.is_valid().to_numpy(zero_copy_only=False)
    values = data[start : start + int(offsets[-1] if n else 0)].view(dtype)
    return offsets // dtype.itemsize, values, valid


def _decode_topk(
    tc_off: np.ndarray,
    tc_val: np.ndarray,
    tp_off: np.ndarray,
    tp_val: np.ndarray,
    a: int,
    b: int,
    h: TraceHeader,
    step: int,
    where: str,
) -> np.ndarray:
    g = h.group_size
    counts = tc_val[int(tc_off[a]) : int(tc_off[b])].astype(np.int64)
    if counts.size != (b - a) * g or np.any(counts < 0) or np.any(np.diff(tc_off[a : b + 1]) != g):
        raise CemsimError(f"step {step}: topk_counts malformed", where=where)
    deltas = tp_val[int(tp_off[a]) : int(tp_off[b])].astype(np.int64)
    per_row = counts.reshape(b - a, g).sum(axis=1)
    if deltas.size != int(counts.sum()) or not np.array_equal(np.diff(tp_off[a : b + 1]), per_row):
        raise CemsimError(
            f"step {step}: topk_positions hold {deltas.size} values, expected {counts.sum()}", where=where
        )
    kmax = int(counts.max()) if counts.size else 0
    width = max(kmax, h.k)
    out = np.full((counts.size, width), -1, dtype=np.int32)
    starts = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    # Cumulative sum restarted at each query head's first delta.
    csum = np.cumsum(deltas)
    base = np.repeat(np.concatenate([[0], csum])[starts[:-1]], counts)
    positions = csum - base
    col = np.arange(deltas.size) - np.repeat(starts[:-1], counts)
    row = np.repeat(np.arange(counts.size), counts)
    out[row, col] = positions
    return out.reshape(h.layers, h.kv_heads, g, width)
