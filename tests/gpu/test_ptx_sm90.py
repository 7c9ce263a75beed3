"""Every CUDA source builds for Hopper (sm_90 and sm_90a), where the b1 tensor-core MMA and the rest of
kernels/longsight_fused.cu run; the default-target build is tests/attention/test_kernels.py's. Needs nvcc,
not a GPU."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cemsim import kernels


def _nvcc() -> str | None:
    return shutil.which("nvcc") or next(
        (p for p in ["/usr/local/bin/nvcc", "/usr/local/cuda/bin/nvcc"] if Path(p).exists()), None
    )


@pytest.mark.parametrize("target", ["-arch=sm_90", "-gencode=arch=compute_90a,code=compute_90a"])
def test_every_kernel_compiles_for_hopper(tmp_path: Path, target: str) -> None:
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not installed")
    for src in kernels.kernel_sources():
        out = tmp_path / f"{src.stem}.ptx"
        proc = subprocess.run(
            [nvcc, "-ptx", "-std=c++17", target, str(src), "-o", str(out)], capture_output=True, text=True
        )
        assert proc.returncode == 0, f"{src.name} failed to compile for {target}:\n{proc.stderr}"
    ptx = (tmp_path / "longsight_fused.ptx").read_text()
    for entry in (
        "ls_select_popc_w2",
        "ls_select_mma_w2",
        "ls_filter_popc_w2",
        "ls_score_d128",
        "ls_topk_d128",
        "ls_topk_cluster_d128",
        "ls_topk_select",
        "ls_topk_cluster_select",
        "ls_attn_d128_g4_c64",
        "ls_attn_d128_g8_c128",
        "ls_select_mmax_w2",
        "scf_bitmap_mma_w2",
        "ls_select_frag_w1",
        "ls_select_frag_w2",
        "ls_select2_r4_popc_w2",
        "ls_select2_r4_frag_w2",
        "ls_topk_sample_d64",
        "ls_topk_sample_d128",
        "ls_topk_sample_select",
        "ls_topk_sample_spread_d64",
        "ls_topk_sample_spread_d128",
        "ls_topk_sample_spreadc_d64",
        "ls_topk_sample_spreadc_d128",
        "ls_topk_fan2_d64",
        "ls_topk_fan2_d128",
        "ls_topk_fan2s_d64",
        "ls_topk_fan2s_d128",
        "ls_layer_d64",
        "ls_layer_d128",
    ):
        assert f".entry {entry}" in ptx
    for op in ("and", "xor"):  # the tensor-core paths are real
        assert f"mma.sync.aligned.m16n8k128.row.col.s32.b1.b1.s32.{op}.popc" in ptx
    frag = (tmp_path / "scf_frag.ptx").read_text()
    for w in (1, 2):
        for g in (8, 16):
            assert f".entry scf_frag_w{w}_g{g}" in frag
    # the frag filter is on the tensor core, in the AND form only (sm_90 emulates .xor.popc)
    assert "mma.sync.aligned.m16n8k128.row.col.s32.b1.b1.s32.and.popc" in frag
    assert ".xor.popc" not in frag
    # every ls_select2 form the host asks for (cemsim.gpu.fused) is built, for every filter method and width
    from cemsim.gpu.fused import SELECT_ASYNC, SELECT_ROWS

    for rows in (*SELECT_ROWS, SELECT_ASYNC):
        for method in ("popc", "mma", "mmax", "frag"):
            for w in (1, 2):
                assert f".entry ls_select2_r{rows}_{method}_w{w}(" in ptx, (rows, method, w)
    # the async select and the gather probe bring rows into shared memory by cp.async on Hopper
    assert "cp.async.cg.shared.global" in ptx
    probe = (tmp_path / "gather_probe.ptx").read_text()
    assert "cp.async.cg.shared.global" in probe and ".entry gather_ldg_r16" in probe


def test_traced_build_compiles_and_its_arrays_are_the_profilers(tmp_path: Path) -> None:
    """-DLS_TRACE (benchmarks/gpu/profile_layer.py --trace) builds, and each trace array is the shape the profiler
    reads it as: a column added on one side only would be read as another block's row."""
    import ast
    import re

    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not installed")
    src = kernels.KERNEL_DIR / "longsight_fused.cu"
    out = tmp_path / "traced.ptx"
    proc = subprocess.run(
        [nvcc, "-ptx", "-std=c++17", "-arch=sm_90", "-DLS_TRACE", str(src), "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    built = {
        m[0]: int(m[1])
        for m in re.findall(r"\.global \.align 8 \.b8 (ls_trace_\w+)\[(\d+)\];", out.read_text())
    }
    profiler = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "profile_layer.py"
    tree = ast.parse(profiler.read_text())
    shapes = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "TRACE_SHAPES"
    )
    assert shapes, "profile_layer.py reads no trace arrays"
    for name, (rows, cols) in shapes.items():
        assert built.get(name) == rows * cols * 8, (name, built.get(name), rows, cols)


def test_bulk_sign_build_variant_builds_where_it_applies(tmp_path: Path) -> None:
    """-DLS_SIGN_BULK=1 (ls_select2's signs by one bulk copy a block; off by default, docs/gpu-kernels.md,
    seventeenth step) assembles for sm_90, its static shared memory within the 48 KB a block may declare (ptxas
    checks it: the async select form with its row buffers did not fit, NVRTC's error on the H200), and puts the
    bulk copy in ls_select2's popc forms for D = 128 with rows in registers or on the tensor cores, and nowhere in
    the default build, whose select is the one the shipped calibration measured."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not installed")
    src = kernels.KERNEL_DIR / "longsight_fused.cu"

    def build(kind: str, *flags: str) -> Path:
        out = tmp_path / f"bulk{len(flags)}.{kind}"
        proc = subprocess.run(
            [nvcc, f"-{kind}", "-std=c++17", "-arch=sm_90", *flags, str(src), "-o", str(out)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        return out

    build("cubin", "-DLS_SIGN_BULK=1")
    entries = {
        chunk.split("(", 1)[0].strip(): chunk
        for chunk in build("ptx", "-DLS_SIGN_BULK=1").read_text().split(".entry ")[1:]
    }
    bulk = {name for name, body in entries.items() if "cp.async.bulk.shared::cluster.global" in body}
    assert bulk == {"ls_select2_r4_popc_w2", "ls_select2_r16_popc_w2"}
    assert "cp.async.bulk.shared::cluster.global" not in build("ptx").read_text()
