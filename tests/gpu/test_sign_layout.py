"""The frag sign layout (cemsim.gpu.sign_layout) against its definition, written out independently: 32-bit
word w of key n at index 8W (n // 4) + 4w + n % 4, zero padding to 32 keys, and the round trip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cemsim.errors import CemsimError
from cemsim.gpu.fused import FragFilterKernel
from cemsim.gpu.sign_layout import from_frag, padded_keys, to_frag


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1), lead=st.integers(0, 2), n=st.integers(1, 200), w=st.sampled_from([1, 2])
)
def test_frag_matches_its_definition_and_round_trips(seed: int, lead: int, n: int, w: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (2,) * lead + (n, w)
    k = rng.integers(0, 2**64, size=shape, dtype=np.uint64)
    f = to_frag(k)
    n_pad = padded_keys(n)
    assert f.shape == (2,) * lead + (n_pad, w) and f.dtype == np.uint64
    kw = k.reshape(-1, n, w)
    fw = f.reshape(-1, n_pad * w).view(np.uint32)  # flat 32-bit words of each row
    for r in range(kw.shape[0]):
        for key in range(n_pad):
            for word in range(2 * w):
                want = int(kw[r, key].view(np.uint32)[word]) if key < n else 0
                assert int(fw[r, 8 * w * (key // 4) + 4 * word + key % 4]) == want
    np.testing.assert_array_equal(from_frag(f, n), k)


def test_a_lane_reads_its_mma_fragment_in_one_16_byte_load() -> None:
    """D = 128: lane 4g + t's 16 bytes of a 32-key block are word t of keys 4g, 4g+1, 4g+2, 4g+3."""
    rng = np.random.default_rng(1)
    k = rng.integers(0, 2**64, size=(64, 2), dtype=np.uint64)
    lanes = to_frag(k).view(np.uint32).reshape(2, 32, 4)  # [block, lane, 4 words]
    for b in range(2):
        for lane in range(32):
            g, t = divmod(lane, 4)
            keys = 32 * b + 4 * g + np.arange(4)
            np.testing.assert_array_equal(lanes[b, lane], k[keys].view(np.uint32)[:, t])


def test_bad_signs_are_a_clear_error() -> None:
    with pytest.raises(CemsimError, match="uint64"):
        to_frag(np.zeros((4, 2), dtype=np.int64))
    with pytest.raises(CemsimError, match="W = 1 or 2"):
        to_frag(np.zeros((4, 3), dtype=np.uint64))
    with pytest.raises(CemsimError, match="32m"):
        from_frag(np.zeros((40, 2), dtype=np.uint64))


def test_frag_filter_rejects_what_it_cannot_run() -> None:
    with pytest.raises(CemsimError, match=r"G = 1\.\.16"):
        FragFilterKernel(2, 17)
    with pytest.raises(CemsimError, match="W = 1 or 2"):
        FragFilterKernel(3, 4)
