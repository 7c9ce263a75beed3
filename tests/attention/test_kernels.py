"""SCF kernels: every backend equals the float-level definition of matches, bit for bit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cemsim import kernels
from cemsim.attention.signs import matches_reference, pack_signs, unpack_signs
from cemsim.errors import CemsimError

CPU_BACKENDS = ("numpy", "numba")


def test_pack_layout_is_lsb_first_per_word():
    x = -np.ones(128)
    x[0] = 1.0  # dim 0 -> word 0 bit 0
    x[65] = 0.0  # zero counts as positive; dim 65 -> word 1 bit 1
    w = pack_signs(x)
    assert w.dtype == np.uint64
    assert w.tolist() == [1, 2]
    assert unpack_signs(w, 128).nonzero()[0].tolist() == [0, 65]


def test_pack_rejects_odd_head_dim():
    with pytest.raises(CemsimError, match="multiple of 64"):
        pack_signs(np.zeros((3, 48)))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    d=st.sampled_from([64, 128, 192]),
    g=st.integers(1, 16),
    r=st.integers(1, 3),
    n=st.integers(1, 300),
    t_frac=st.floats(0.0, 1.0),
)
def test_backends_bit_identical(seed, d, g, r, n, t_frac):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((r, g, d)).astype(np.float32)
    k = rng.standard_normal((n, d)).astype(np.float32)
    k[rng.random(k.shape) < 0.05] = 0.0  # exact zeros exercise the >= 0 rule
    t = round(t_frac * (d + 1))
    ref = matches_reference(q, k[None])  # [r, g, n]
    for b in CPU_BACKENDS + (("cupy",) if kernels.cupy_available() else ()):
        res = kernels.scf_filter_rows(pack_signs(q), pack_signs(k), d, t, backend=b)
        assert res.backend == b
        np.testing.assert_array_equal(res.matches, ref)
        np.testing.assert_array_equal(res.survivors, (ref >= t).any(axis=1))
        only = kernels.scf_filter_rows(pack_signs(q), pack_signs(k), d, t, backend=b, return_matches=False)
        assert only.matches is None
        np.testing.assert_array_equal(only.survivors, res.survivors)


def test_single_step_api_and_threshold_extremes():
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((8, 64)), rng.standard_normal((1000, 64))
    qs, ks = pack_signs(q), pack_signs(k)
    res = kernels.scf_filter(qs, ks, 64, 0)
    assert res.backend in kernels.BACKENDS
    assert res.matches.shape == (8, 1000) and res.survivors.shape == (1000,)
    assert res.survivors.all()  # T = 0 filters nothing
    assert not kernels.scf_filter(qs, ks, 64, 65).survivors.any()  # T = D + 1 filters everything
    # A key identical in sign to a query always matches D.
    assert kernels.scf_filter(qs[:1], qs[:1], 64, 64).survivors.all()


def test_bad_inputs_are_clear_errors():
    ks = pack_signs(np.ones((4, 64)))
    with pytest.raises(CemsimError, match="uint64"):
        kernels.scf_filter(np.ones((2, 1)), ks, 64, 3)
    with pytest.raises(CemsimError, match="KV group"):
        kernels.scf_filter(pack_signs(np.ones((17, 64))), ks, 64, 3)
    with pytest.raises(CemsimError, match="word counts"):
        kernels.scf_filter(pack_signs(np.ones((2, 128))), ks, 128, 3)
    with pytest.raises(CemsimError, match="unknown kernel backend"):
        kernels.scf_filter(pack_signs(np.ones((2, 64))), ks, 64, 3, backend="fpga")


def test_cupy_unavailable_is_reported_not_crashing():
    if kernels.cupy_available():
        pytest.skip("a GPU is present")
    assert kernels.resolve_backend("auto") == "numba"
    with pytest.raises(CemsimError, match="CuPy"):
        kernels.resolve_backend("cupy")


def test_every_cuda_kernel_compiles_to_ptx(tmp_path):
    nvcc = shutil.which("nvcc") or next(
        (p for p in ["/usr/local/bin/nvcc", "/usr/local/cuda/bin/nvcc"] if Path(p).exists()), None
    )
    if nvcc is None:
        pytest.skip("nvcc not installed")
    sources = kernels.kernel_sources()
    assert sources, f"no CUDA sources found in {kernels.KERNEL_DIR}"
    for src in sources:
        out = tmp_path / (src.stem + ".ptx")
        proc = subprocess.run(
            [nvcc, "-ptx", "-std=c++17", str(src), "-o", str(out)], capture_output=True, text=True
        )
        assert proc.returncode == 0, f"{src.name} failed to compile:\n{proc.stderr}"
        assert ".entry scf_filter" in out.read_text() or src.stem != "scf_filter"


@pytest.mark.gpu
def test_cupy_matches_numpy_large():
    if not kernels.cupy_available():
        pytest.skip("no CUDA device / CuPy")
    rng = np.random.default_rng(7)
    q = pack_signs(rng.standard_normal((2, 8, 128)))
    k = pack_signs(rng.standard_normal((200_003, 128)))
    a = kernels.scf_filter_rows(q, k, 128, 72, backend="cupy")
    b = kernels.scf_filter_rows(q, k, 128, 72, backend="numpy")
    np.testing.assert_array_equal(a.matches, b.matches)
    np.testing.assert_array_equal(a.survivors, b.survivors)
