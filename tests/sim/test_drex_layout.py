"""The DReX key layout: where keys, sign-bit Key Blocks and survivors sit, and the DRAM coordinates they map to."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cemsim.errors import CemsimError
from cemsim.sim.drex_layout import (
    DrexLayout,
    block_salt,
    parse_mapping,
    random_offsets,
    survivor_positions,
)
from cemsim.sim.work import RowGeometry, expected_rows


def layout(**kw) -> DrexLayout:
    base = dict(
        channels=8,
        ranks=4,
        bankgroups=4,
        banks_per_group=8,
        keys_per_block=128,
        interleave="channel_then_bank",
        key_mapping="RoBaRaCoCh",
        burst=32,
        row_buffer=2048,
        key_bytes=256,
        head_dim=128,
        passes=1,
    )
    base.update(kw)
    return DrexLayout(**base)


def test_mapping_parse_and_errors():
    assert parse_mapping("RoBaRaCoCh") == ["Ro", "Ba", "Ra", "Co", "Ch"]
    for bad in ("RoBaRaCo", "RoBaXxCoCh", "RoBaBaCoCh", "RoBaRaCoC"):
        with pytest.raises(CemsimError, match="mapping"):
            parse_mapping(bad)


def test_robaracoch_puts_one_burst_of_a_key_in_every_channel():
    lay = layout()
    assert lay.replicated and lay.bursts_per_key == 8 and lay.columns == 64 and lay.banks == 128
    p = np.array([0, 1, 63, 64, 255, 256, 32767, 32768])
    c = lay.data_coordinates(p)
    # one burst per key on channel 0 (the other 7 channels get the same stream)
    assert (c["channel"] == 0).all() and list(c["key"]) == list(range(len(p)))
    # 64 keys fill a row's 64 columns; then the next rank; then the next bank group, then bank (4 x 8 per
    # rank; Ramulator's level order puts the bank-group bits below the bank bits); then the row
    assert list(c["column"]) == [0, 1, 63, 0, 63, 0, 63, 0]
    assert list(c["rank"]) == [0, 0, 0, 1, 3, 0, 3, 0]
    assert list(c["bankgroup"]) == [0, 0, 0, 0, 0, 1, 3, 0]
    flat_bank = c["bank"] * 4 + c["bankgroup"]
    assert list(flat_bank) == [0, 0, 0, 0, 0, 1, 31, 0]
    assert list(c["row"]) == [0, 0, 0, 0, 0, 0, 3, 4]  # 64 x 4 x 32 = 8,192 keys per row index


def test_a_mapping_with_column_lowest_keeps_a_key_in_one_channel():
    lay = layout(key_mapping="RoBaRaChCo")
    assert not lay.replicated
    c = lay.data_coordinates(np.array([0, 7, 8]))
    assert len(c["channel"]) == 24  # every burst of every key
    assert list(c["channel"][:8]) == [0] * 8 and list(c["column"][:8]) == list(range(8))
    assert c["channel"][8] == 0 and c["column"][8] == 56  # key 7 ends the first row of channel 0
    assert c["channel"][16] == 1 and c["column"][16] == 0  # key 8 starts the next channel
    assert list(c["key"]) == [0] * 8 + [1] * 8 + [2] * 8


def test_sign_blocks_are_dealt_over_channels_by_the_interleave():
    a = layout(interleave="channel_then_bank")
    b = layout(interleave="bank_then_channel")
    assert a.blocks_per_epoch == 1024
    assert list(a.epoch_blocks_per_channel(1024)) == [128] * 8
    assert list(a.epoch_blocks_per_channel(20)) == [3, 3, 3, 3, 2, 2, 2, 2]
    assert list(b.epoch_blocks_per_channel(200)) == [128, 72, 0, 0, 0, 0, 0, 0]
    # Key Block sign bits: D = 128 fills one 2 KiB row; D = 256 takes two rows per block
    assert a.sign_rows_per_block == 1 and layout(head_dim=256, key_bytes=512).sign_rows_per_block == 2


def test_bank_coordinates_alternate_bank_groups_then_ranks():
    rank, bg, bank = layout().bank_coordinates(128)
    assert list(bg[:5]) == [0, 1, 2, 3, 0] and list(rank[:5]) == [0, 0, 0, 0, 1]
    flat = (rank * 4 + bg) * 8 + bank
    assert sorted(flat.tolist()) == list(range(128))  # every bank exactly once


def test_layout_checks_bursts():
    with pytest.raises(CemsimError, match="bursts"):
        layout(key_bytes=200).check()


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 128), min_size=1, max_size=40),
    short=st.integers(1, 128),
    request=st.integers(0, 10_000),
)
def test_random_offsets_are_a_sorted_subset_of_each_block(counts, short, request):
    counts = np.array(counts)
    widths = np.full(len(counts), 128)
    widths[-1] = short
    block, off = random_offsets(counts, widths, 128, block_salt(request, len(counts)))
    kept = np.minimum(counts, widths)
    assert np.array_equal(np.bincount(block, minlength=len(counts)), kept)
    assert ((off >= 0) & (off < widths[block])).all()
    key = block * 128 + off
    assert (np.diff(key) > 0).all()  # distinct keys, in address order
    # fewer keys in the same block get a subset of the offsets: the top-k values sit on survivors
    fewer = kept // 2
    b2, o2 = random_offsets(fewer, widths, 128, block_salt(request, len(counts)))
    assert set((b2 * 128 + o2).tolist()) <= set(key.tolist())
    # deterministic
    b3, o3 = random_offsets(counts, widths, 128, block_salt(request, len(counts)))
    assert np.array_equal(b3, block)
    assert np.array_equal(o3, off)


def test_positions_spread_like_a_uniform_draw():
    # one survivor per block: its offset should be uniform over the block (mean 63.5)
    pos = survivor_positions(np.ones(4000, np.int64), 128, 4000 * 128, salt=3)
    off = pos % 128
    assert abs(off.mean() - 63.5) < 8 and len(np.unique(off)) > 80  # 251 subset tables: ~110 first offsets


@pytest.mark.parametrize("density", [0.01, 0.05, 0.3])
def test_expected_rows_match_the_placements_the_engine_sees(density):
    # work.expected_rows (hypergeometric) against the distinct rows of real placements, averaged over heads
    rng = np.random.default_rng(1)
    n_blocks, considered = 1024, 1024 * 128 - 50
    counts = rng.binomial(128, density, size=(64, n_blocks))
    counts[:, -1] = np.minimum(counts[:, -1], 78)
    rows = RowGeometry(slice_keys=1024 * 128, keys_per_row=64.0, keys_per_block=128)
    want = expected_rows(counts, considered, rows, 1)[:, 0]
    got = []
    for h in range(64):
        pos = survivor_positions(counts[h], 128, considered, salt=h)
        got.append(len(np.unique(pos // 64)))
    assert np.mean(got) == pytest.approx(want.mean(), rel=0.01)
