"""`cemsim dram replay` and the stream readers (DRAMsim3 text traces, .npz)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cemsim.cli import main
from cemsim.dram import encode_address, load_dram_spec
from cemsim.dram.streams import read_stream
from cemsim.errors import CemsimError


def _run(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _keys_stream(spec, n_keys=64, seed=0):
    rng = np.random.default_rng(seed)
    bank = rng.integers(0, spec.ranks * spec.banks, n_keys)
    coords = {
        "rank": np.repeat(bank // spec.banks, 8),
        "bankgroup": np.repeat((bank % spec.banks) // spec.banks_per_group, 8),
        "bank": np.repeat(bank % spec.banks_per_group, 8),
        "row": np.repeat(rng.integers(0, spec.rows, n_keys), 8),
        "column": np.tile(np.arange(8), n_keys),
    }
    return coords, encode_address(spec, coords)


def test_replay_json_on_a_closed_loop_npz_equals_the_python_api(tmp_path, capsys):
    from cemsim.dram import replay

    spec = load_dram_spec("lpddr5x-8533")
    coords, addr = _keys_stream(spec)
    key = np.repeat(np.arange(64), 8)
    p = tmp_path / "s.npz"
    np.savez(p, addr=addr, is_write=np.zeros(addr.size, dtype=np.int64), K=np.array([4]), key_id=key)
    code, out, _ = _run(capsys, "dram", "replay", "lpddr5x-8533", str(p), "--json")
    assert code == 0
    got = json.loads(out)
    for k in ("read_bandwidth_bytes_per_s", "mean_read_latency_s", "p95_read_latency_s", "row_hit_rate"):
        assert k in got
    assert {"commands", "simulated_s", "wall_s"} <= set(got)
    api = replay(spec, is_write=np.zeros(addr.size, dtype=np.int64), depth=4, key_id=key, **coords).stats
    assert got["mean_read_latency_s"] == pytest.approx(api["mean_read_latency_s"])
    assert got["commands"]["ACT"] == api["commands"]["ACT"]


def test_replay_text_trace_prints_a_table(tmp_path, capsys):
    spec = load_dram_spec("lpddr5x-8533")
    _, addr = _keys_stream(spec, 8)
    p = tmp_path / "t.trace"
    p.write_text(
        "".join(f"{hex(int(a))} {'WRITE' if i % 5 == 0 else 'READ'} {2 * i}\n" for i, a in enumerate(addr))
    )
    code, out, _ = _run(capsys, "dram", "replay", "lpddr5x-8533", str(p))
    assert code == 0
    assert "read bandwidth" in out and "row-hit rate" in out
    assert "energy by part" in out  # the preset's per-bit read and write energy


def test_replay_json_energy_parts_add_up_on_a_dramsim3_ini(tmp_path, capsys):
    """IDD energy from a DRAMsim3 .ini: the parts (ACT, RD, WR, REF, active and precharge standby) sum to the
    total, and reads cost IDD4R over IDD3N for one burst: 1.05 V x (243 - 47) mA x 2 CK (BL4) x 0.9375 ns."""
    from tests.dram.test_reference import DATA

    ini = DATA / "dramsim3_LP5X-8533-like_x16.ini"
    spec = load_dram_spec(ini)
    _, addr = _keys_stream(spec, 16)
    p = tmp_path / "t.trace"
    p.write_text(
        "".join(f"{hex(int(a))} {'WRITE' if i % 3 == 0 else 'READ'} {4 * i}\n" for i, a in enumerate(addr))
    )
    code, out, _ = _run(capsys, "dram", "replay", str(ini), str(p), "--json")
    assert code == 0
    got = json.loads(out)
    parts = got["energy_breakdown_j"]
    assert sum(parts.values()) == pytest.approx(got["energy_j"])
    assert parts["read_j"] == pytest.approx(got["commands"]["RD"] * 1.05 * (243 - 47) * 2 * 0.9375e-12)
    assert parts["active_standby_j"] > 0 and parts["precharge_standby_j"] > 0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("0x40 READ\n", "line 1"),
        ("0x40 FETCH 3\n", "READ or WRITE"),
        ("zz READ 3\n", "hex"),
        ("0x40 READ 5\n0x80 READ 4\n", "decrease"),
    ],
)
def test_bad_trace_is_one_clear_error_and_exit_1(tmp_path, capsys, text, match):
    p = tmp_path / "bad.trace"
    p.write_text(text)
    code, _, err = _run(capsys, "dram", "replay", "lpddr5x-8533", str(p))
    assert code == 1
    assert match in err and "Traceback" not in err


def test_bad_config_and_npz_are_clear_errors(tmp_path, capsys):
    p = tmp_path / "s.npz"
    np.savez(p, addr=np.arange(4) * 32)
    code, _, err = _run(capsys, "dram", "replay", "lpddr5x-8533", str(p))
    assert code == 1 and "arrival" in err
    code, _, err = _run(capsys, "dram", "replay", "no-such-dram", str(p))
    assert code == 1 and "preset" in err


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 2**40), st.booleans(), st.integers(0, 1000)), min_size=1, max_size=30
    ),
    comment=st.booleans(),
)
def test_text_trace_round_trip(tmp_path_factory, rows, comment):
    rows = sorted(rows, key=lambda r: r[2])
    text = "".join(
        f"{hex(a)} {'WRITE' if w else 'READ'} {c}" + (" # note" if comment else "") + "\n" for a, w, c in rows
    )
    p = tmp_path_factory.mktemp("t") / "x.trace"
    p.write_text("# header\n" + text)
    s = read_stream(p)
    assert [int(a) for a in s.addr] == [r[0] for r in rows]
    assert list(s.is_write) == [int(r[1]) for r in rows]
    assert list(s.arrival) == [r[2] for r in rows]


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 50),
    closed=st.booleans(),
    k=st.integers(1, 64),
    seed=st.integers(0, 1000),
)
def test_npz_round_trip(tmp_path_factory, n, closed, k, seed):
    rng = np.random.default_rng(seed)
    addr = rng.integers(0, 2**34, n).astype(np.uint64)
    wr = rng.integers(0, 2, n)
    p = tmp_path_factory.mktemp("n") / "x.npz"
    if closed:
        np.savez(p, addr=addr, is_write=wr, K=np.array([k, 2 * k]), key_id=np.arange(n) // 3)
    else:
        np.savez(p, addr=addr, is_write=wr, arrival_cycle=np.sort(rng.integers(0, 99, n)))
    s = read_stream(p)
    assert np.array_equal(s.addr, addr) and np.array_equal(s.is_write, wr)
    assert (s.depth == k) if closed else (s.depth is None and s.arrival is not None)


def test_npz_rejects_mismatched_arrays(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, addr=np.arange(4), is_write=np.zeros(3), arrival=np.zeros(4, dtype=np.int64))
    with pytest.raises(CemsimError, match="is_write"):
        read_stream(p)
