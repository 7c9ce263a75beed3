"""The replay API as the DReX and host-memory models use it: channels, closed loop, internal ops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cemsim.dram import load_dram_spec, replay
from cemsim.errors import CemsimError


def random_keys(spec, n_keys, seed, channels=1):
    rng = np.random.default_rng(seed)
    nb = spec.ranks * spec.banks
    bank = np.repeat(rng.integers(0, nb, n_keys), 8)
    return {
        "channel": np.repeat(rng.integers(0, channels, n_keys), 8),
        "rank": bank // spec.banks,
        "bankgroup": (bank % spec.banks) // spec.banks_per_group,
        "bank": bank % spec.banks_per_group,
        "row": np.repeat(rng.integers(0, spec.rows, n_keys), 8),
        "column": np.repeat(rng.integers(0, spec.columns // 8, n_keys) * 8, 8)
        + np.tile(np.arange(8), n_keys),
        "key_id": np.repeat(np.arange(n_keys), 8),
        "is_write": (rng.random(8 * n_keys) < 0.1).astype(np.int64),
    }


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.sampled_from([None, 1, 4, 16]))
def test_channels_are_independent_controllers(seed, depth):
    """One call with a channel array equals one call per channel's sub-stream."""
    spec = load_dram_spec("lpddr5x-8533")
    s = random_keys(spec, 96, seed, channels=3)
    both = replay(spec, depth=depth, **s)
    for c in range(3):
        m = s["channel"] == c
        alone = replay(spec, depth=depth, **{k: v[m] for k, v in s.items() if k != "channel"})
        assert np.array_equal(both.done[m], alone.done)
        assert np.array_equal(both.accepted[m], alone.accepted)


def test_closed_loop_never_has_more_than_depth_keys_in_flight():
    spec = load_dram_spec("lpddr5x-8533")
    s = random_keys(spec, 300, 7)
    s["is_write"][:] = 0
    res = replay(spec, depth=5, **s)
    key = s["key_id"]
    start = np.array([res.issued[key == k].min() for k in range(300)])
    end = np.array([res.done[key == k].max() for k in range(300)])
    for t in np.unique(start):
        assert ((start <= t) & (end >= t)).sum() <= 5
    # a key starts the tick after an earlier key's last burst returned (or at 0)
    later = start[5:]
    assert np.isin(later - 1, end).all()


def test_more_keys_in_flight_never_lowers_bandwidth_on_random_keys():
    spec = load_dram_spec("lpddr5x-8533")
    s = random_keys(spec, 512, 3)
    s["is_write"][:] = 0
    bw = [replay(spec, depth=k, **s).stats["read_bandwidth_bytes_per_s"] for k in (1, 2, 4, 8, 16)]
    assert all(b2 >= b1 * 0.99 for b1, b2 in itertools.pairwise(bw))
    assert bw[-1] > 3 * bw[0]


def test_internal_ops_report_their_end_and_use_no_data_bus():
    spec = load_dram_spec("lpddr5x-8533")
    n = 32  # one op in each bank of the channel, row 5
    b = np.arange(n)
    kw = dict(
        rank=b // 16, bankgroup=(b % 16) // 4, bank=b % 4, row=np.full(n, 5), column=np.zeros(n, dtype=np.int64),
        is_write=np.zeros(n, dtype=np.int64), kind=np.full(n, 2), hold=np.full(n, 128),
    )  # fmt: skip
    res = replay(spec, **kw)
    assert res.stats["commands"]["OP"] == n and res.stats["commands"]["RD"] == 0
    assert res.stats["reads"] == 0 and res.stats["internal_ops"] == n
    acts = res.first_command
    assert np.all(res.done >= acts + spec.timing["nRCD"] + 128)
    # tFAW paces the ACTs under JEDEC limits; broadcast ACTs go one per command slot
    from dataclasses import replace

    fast = replay(replace(spec, act_limits="broadcast"), **kw)
    assert fast.done.max() < res.done.max()
    per_call = replay(spec, act_limits="broadcast", **kw)
    assert np.array_equal(per_call.done, fast.done)


def test_bad_inputs_are_clear_errors():
    spec = load_dram_spec("lpddr5x-8533")
    one = np.zeros(1, dtype=np.int64)
    with pytest.raises(CemsimError, match="row"):
        replay(spec, rank=one, bankgroup=one, bank=one, row=one + 10**6, column=one, is_write=one)
    with pytest.raises(CemsimError, match="depth"):
        replay(spec, rank=one, bankgroup=one, bank=one, row=one, column=one, is_write=one, depth=0)
    with pytest.raises(CemsimError, match="entries"):
        replay(
            spec, rank=one, bankgroup=one, bank=one, row=one, column=np.zeros(2, dtype=np.int64), is_write=one
        )


@pytest.mark.parametrize("tail_writes", [1, 5, 8])
def test_dramsim3_profile_drains_a_short_write_tail(tail_writes):
    """DRAMsim3 drains writes only when its buffer is full or holds more than 8 with the command queues empty;
    a stream whose last requests are a few writes must still finish (it used to wait forever), with each
    write done after it was accepted and the reads unchanged by the tail."""
    spec = load_dram_spec("lpddr5x-8533").with_controller("dramsim3")
    s = random_keys(spec, 12, seed=3)
    s["is_write"][:] = 0
    s["is_write"][-tail_writes:] = 1
    res = replay(spec, **s)
    w = s["is_write"] == 1
    assert (res.done[w] > res.accepted[w]).all()
    reads_only = replay(spec, **{k: v[~w] for k, v in s.items()})
    assert np.array_equal(res.done[~w], reads_only.done)
