"""Address mapping: decode/encode round trips (hypothesis) and the two simulators' bit orders."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cemsim.dram import decode_address, encode_address, load_dram_spec
from cemsim.dram.mapping import normalise
from cemsim.errors import CemsimError
from tests.dram.conftest import toy_spec

MAPPINGS = ["rorabgbacoch", "rochrababgco", "rorabachcobg", "chrobabgraco", "RoBaRaCoCh"]


@settings(max_examples=60, deadline=None)
@given(
    mapping=st.sampled_from(MAPPINGS),
    seed=st.integers(0, 2**32 - 1),
    channels=st.sampled_from([1, 2, 8]),
)
def test_decode_inverts_encode(mapping, seed, channels):
    from dataclasses import replace

    spec = replace(toy_spec(), mapping=mapping)
    rng = np.random.default_rng(seed)
    n = 64
    coords = {
        "channel": rng.integers(0, channels, n),
        "rank": rng.integers(0, spec.ranks, n),
        "bankgroup": rng.integers(0, spec.bankgroups, n),
        "bank": rng.integers(0, spec.banks_per_group, n),
        "row": rng.integers(0, spec.rows, n),
        "column": rng.integers(0, spec.columns, n),
    }
    addr = encode_address(spec, coords, channels=channels)
    back = decode_address(spec, addr, channels=channels)
    for k, v in coords.items():
        assert np.array_equal(back[k], v), k
    # the low log2(burst) bits are the offset inside the burst: they do not change the coordinates
    again = decode_address(spec, addr + np.uint64(spec.burst_bytes - 1), channels=channels)
    assert all(np.array_equal(again[k], back[k]) for k in back)


def test_ramulator_name_is_row_bank_bankgroup_rank_column_channel():
    assert normalise("RoBaRaCoCh") == ["ro", "ba", "bg", "ra", "co", "ch"]


def test_reference_set_addresses_decode_to_its_coordinates():
    """The reference npz files hold both the byte address and the coordinates it encodes."""
    from tests.dram.test_reference import CONFIG_FILES, REF

    if not REF.is_dir():
        pytest.skip(f"reference set not found at {REF}")
    for key, cfg in CONFIG_FILES.items():
        spec = load_dram_spec(REF / cfg)
        if key == "dramsim3/HBM2_1ch":
            # DRAMsim3 doubles HBM columns: 1 rank, 32-burst rows; the set's generator assumed 2 x 16
            assert (spec.ranks, spec.columns) == (1, 32)
            continue
        folder = REF / "patterns" / key.replace("/", "__")
        z = np.load(folder / "p3_rand_key256.npz")
        got = decode_address(spec, z["addr"])
        rank = z["rank"].astype(np.int64)
        if spec.pseudo_channels > 1:
            rank = (rank % spec.pseudo_channels) * spec.ranks + rank // spec.pseudo_channels
        assert np.array_equal(got["rank"], rank), key
        for f in ("bankgroup", "bank", "row", "column"):
            assert np.array_equal(got[f], z[f]), (key, f)


@pytest.mark.parametrize("bad", ["", "roro", "rochxx", "RoBaXx"])
def test_bad_mapping_is_a_clear_error(bad):
    with pytest.raises(CemsimError, match="address mapping"):
        normalise(bad)
