"""Trace file format: round trip, streaming, corruption, truncation, interruption, wrong inputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cemsim.trace.format as fmt
from cemsim.config.workload import ModelGeometry
from cemsim.errors import CemsimError
from cemsim.trace.format import TraceReader, TraceWriter
from cemsim.trace.records import StepRecord
from cemsim.trace.synthetic import SurvivalLaw, synthetic_header, synthetic_steps

TINY = ModelGeometry(
    name="tiny", layers=2, hidden=64, q_heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab=100
)


def write(path: Path, header, recs) -> Path:
    with TraceWriter(path, header) as w:
        for r in recs:
            w.write(r)
    return path


def assert_same(a: StepRecord, b: StepRecord) -> None:
    assert (a.step, a.context_len, a.window, a.sinks) == (b.step, b.context_len, b.window, b.sinks)
    for name in ("keys_considered", "survivors", "values_fetched", "survivor_blocks"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    if a.metadata_bytes is None:
        assert b.metadata_bytes is None
    else:
        np.testing.assert_array_equal(a.metadata_bytes, b.metadata_bytes)
    if a.topk_positions is None:
        assert b.topk_positions is None
    else:
        # Per query head the reader returns the positions sorted, padded with -1 to width >= k.
        ka = np.sort(np.where(a.topk_positions < 0, np.iinfo(np.int32).max, a.topk_positions), axis=-1)
        ka = np.where(ka == np.iinfo(np.int32).max, -1, ka)
        w = b.topk_positions.shape[-1]
        padded = np.full((*ka.shape[:-1], max(w, ka.shape[-1])), -1)
        padded[..., : ka.shape[-1]] = ka
        np.testing.assert_array_equal(padded[..., :w], b.topk_positions)
        assert np.all(padded[..., w:] == -1)


@st.composite
def traces(draw):
    block = draw(st.sampled_from([1, 16, 128, 300]))
    k = draw(st.integers(1, 40))
    header = synthetic_header(
        TINY, window=draw(st.integers(0, 64)), sinks=draw(st.integers(0, 8)), k=k, block_size=block
    )
    context = draw(st.integers(1, 700))
    steps = draw(st.integers(0, 4))
    law = SurvivalLaw(
        survival=draw(st.floats(0, 1)), decay=draw(st.floats(0, 1)), clustering=draw(st.floats(0, 0.9))
    )
    recs = list(
        synthetic_steps(
            header,
            context=context,
            steps=steps,
            law=law,
            with_topk=draw(st.booleans()),
            seed=draw(st.integers(0, 2**16)),
        )
    )
    if recs and draw(st.booleans()):
        recs[0].metadata_bytes = np.arange(TINY.layers * TINY.kv_heads, dtype=np.int64).reshape(2, 2) * 7
    return header, recs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(traces())
def test_random_records_round_trip(tmp_path, data):
    header, recs = data
    path = write(tmp_path / "t.parquet", header, recs)
    with TraceReader(path) as r:
        assert r.header == header
        assert r.num_steps == len(recs)
        out = list(r.iter_steps())
    assert len(out) == len(recs)
    for a, b in zip(recs, out, strict=True):
        assert_same(a, b)


def test_summary_and_pandas(tmp_path):
    header = synthetic_header("smollm2-135m", k=32)
    recs = list(synthetic_steps(header, context=2048, steps=3, seed=1))
    path = write(tmp_path / "t.parquet", header, recs)
    r = TraceReader(path)
    assert r.summary == {"steps": 3, "rows": 3 * 30 * 3, "context_min": 2048, "context_max": 2050}
    df = r.to_pandas()
    assert len(df) == 3 * 30 * 3
    assert df["survivors"].sum() == sum(int(x.survivors.sum()) for x in recs)
    ratio = df["keys_considered"] / df["survivors"]
    np.testing.assert_allclose(df["filter_ratio"].dropna(), ratio[df["survivors"] > 0])


def test_streams_one_row_group_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(fmt, "_GROUP_ROWS", 1)  # flush after every step: one row group per step
    header = synthetic_header(TINY, window=16, sinks=2, k=4, block_size=16)
    recs = list(synthetic_steps(header, context=300, steps=6, seed=3))
    path = write(tmp_path / "t.parquet", header, recs)
    r = TraceReader(path)
    assert r.num_row_groups == 6
    reads: list[int] = []
    real = r._read_group
    monkeypatch.setattr(r, "_read_group", lambda i, cols=None: reads.append(i) or real(i, cols))
    it = r.iter_steps()
    first = next(it)
    assert reads == [0]  # the rest of the file has not been read
    assert_same(recs[0], first)
    rest = list(it)
    assert reads == list(range(6)) and len(rest) == 5


def test_interrupted_write_leaves_nothing(tmp_path):
    header = synthetic_header(TINY, window=16, sinks=2, k=4, block_size=16)
    recs = list(synthetic_steps(header, context=300, steps=3))
    target = tmp_path / "t.parquet"
    with pytest.raises(KeyboardInterrupt), TraceWriter(target, header) as w:
        w.write(recs[0])
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    # An existing trace survives an interrupted overwrite untouched.
    write(target, header, recs)
    before = target.read_bytes()
    with pytest.raises(RuntimeError), TraceWriter(target, header) as w:
        w.write(recs[0])
        raise RuntimeError("boom")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_writer_rejects_inconsistent_records(tmp_path):
    header = synthetic_header(TINY, window=16, sinks=2, k=4, block_size=16)
    rec = next(synthetic_steps(header, context=300, steps=1, law=SurvivalLaw(survival=0.5)))
    rec.survivors = rec.survivors + 1
    with pytest.raises(CemsimError, match="do not add up"), TraceWriter(tmp_path / "t.parquet", header) as w:
        w.write(rec)
    assert not (tmp_path / "t.parquet").exists()


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory) -> bytes:
    header = synthetic_header(TINY, window=16, sinks=2, k=4, block_size=16)
    recs = list(synthetic_steps(header, context=200, steps=2, with_topk=True, law=SurvivalLaw(survival=0.3)))
    return write(tmp_path_factory.mktemp("c") / "t.parquet", header, recs).read_bytes()


def read_all(path: Path) -> None:
    r = TraceReader(path)
    list(r.iter_steps())
    r.to_pandas()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_corrupted_byte_is_a_cemsim_error(tmp_path, small_trace, data):
    pos = data.draw(st.integers(0, len(small_trace) - 1))
    flip = data.draw(st.integers(1, 255))
    b = bytearray(small_trace)
    b[pos] ^= flip
    p = tmp_path / "bad.parquet"
    p.write_bytes(bytes(b))
    with pytest.raises(CemsimError):
        read_all(p)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_truncation_is_a_cemsim_error(tmp_path, small_trace, data):
    n = data.draw(st.integers(0, len(small_trace) - 1))
    p = tmp_path / "short.parquet"
    p.write_bytes(small_trace[:n])
    with pytest.raises(CemsimError):
        read_all(p)


def test_corruption_message_names_file(tmp_path, small_trace):
    b = bytearray(small_trace)
    b[len(b) // 3] ^= 0xFF
    p = tmp_path / "bad.parquet"
    p.write_bytes(bytes(b))
    with pytest.raises(CemsimError, match=r"bad\.parquet.*checksum mismatch"):
        TraceReader(p)


def test_wrong_schema_version(tmp_path, monkeypatch):
    header = synthetic_header(TINY, window=16, sinks=2, k=4, block_size=16)
    recs = list(synthetic_steps(header, context=100, steps=1))
    import dataclasses

    monkeypatch.setattr(fmt, "SCHEMA_VERSION", 99)
    path = write(tmp_path / "v99.parquet", dataclasses.replace(header, schema_version=99), recs)
    monkeypatch.undo()
    with pytest.raises(CemsimError, match=r"schema version 99.*reads versions 1, 2"):
        TraceReader(path)


def test_not_a_trace(tmp_path):
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), plain)
    with pytest.raises(CemsimError, match="not a cemsim trace"):
        TraceReader(plain)
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not parquet at all\n")
    with pytest.raises(CemsimError, match="not a Parquet file"):
        TraceReader(text)
    with pytest.raises(CemsimError, match="no such trace file"):
        TraceReader(tmp_path / "missing.parquet")
    with pytest.raises(CemsimError, match="directory"):
        TraceReader(tmp_path)
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(CemsimError, match="truncated"):
        TraceReader(empty)


def test_uint8_blocks_keep_file_small(tmp_path):
    header = synthetic_header("llama3-8b", k=1024)
    recs = list(synthetic_steps(header, context=64 * 1024, steps=2, law=SurvivalLaw(survival=0.05)))
    path = write(tmp_path / "t.parquet", header, recs)
    raw_u16 = sum(r.survivor_blocks.size * 2 for r in recs)
    assert os.path.getsize(path) < raw_u16 / 3
