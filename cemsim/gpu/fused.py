"""The fused LongSight sparse-attention pipeline of one layer on a CUDA GPU (kernels/longsight_fused.cu).

Per layer, for all ``users x kv_heads`` rows at once, graph-capturable launches and no host sync:
``ls_select`` (SCF filter + compaction + exact scores of the survivors; or ``ls_filter`` then ``ls_score``),
an exact top-k per query head (radix select, ``ls_topk``, or ``ls_topk_cluster`` over 4 blocks per row; the
sample top-k ``ls_topk_sample``, or ``ls_topk_sample_spread`` / ``_spreadc`` over a cluster of 2, or
``ls_topk_fan2``, two blocks a head selecting the same picks from linear bins and attending over half each, or
``ls_topk_fan2s``, the same two in a cluster splitting the selection between them) whose
blocks also attend over the picks they chose (or ``ls_attn`` does, in a launch of its own), and ``ls_attn`` over
sinks + window, which needs nothing from the select and runs beside it in a graph. The block that completes a
query head's partial softmaxes merges them; the merge of a row's last head zeroes its survivor tally, so no
reset launch. Or the whole layer in one launch (``Config.layer``: ``ls_layer``, kernels/ls_layer.cuh, a cluster of
blocks per row; correct and, as measured, slower: docs/gpu-kernels.md).
:class:`Shape` (launch geometry and the bytes the step must read) works without a GPU; :class:`FusedLongSight`
needs CuPy and a CUDA device.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from cemsim.errors import CemsimError
from cemsim.gpu.sign_layout import padded_keys
from cemsim.kernels import KERNEL_DIR, _cupy

SOURCE = KERNEL_DIR / "longsight_fused.cu"
BLOCK_KEYS = 8 * 8 * 32  # LS_WARPS x LS_KPT x 32: keys per ls_select / ls_filter block (ls_block_keys)
SELECT_THREADS = 256
SCORE_THREADS = 256
SCORE_ROWS_PER_BLOCK = 128  # (SCORE_THREADS / (D / 8)) lane groups x SCORE_ROWS, at D = 128
TOPK_THREADS = 1024
ATTN_CHUNKS = (64, 128)  # keys per attention work item, one kernel each
ATTN_THREADS = 256
ATTN_MAX_ITEMS = 256
MAX_GROUP_ATTN = 8  # LS_MAX_GA: query heads per KV head in registers
MAX_GROUP_FILTER = 16
TOPK_SMEM_KEYS = 45056  # scores the top-k kernels cache in dynamic shared memory (176 KiB; 41 KiB static)
TOPK_CTAS = 4  # blocks of the cluster top-k kernels per (row, query head)
Method = Literal["popc", "mma", "mmax", "frag"]
# fused: ls_select (ls_select2 with Config.rows); split: ls_filter then ls_score; async: ls_select2 with each
# block's survivor rows brought into shared memory by cp.async, every row of two 16 KiB buffers in flight at once
SelectForm = Literal["fused", "split", "async"]
SELECT_FORMS: tuple[SelectForm, ...] = get_args(SelectForm)
# atomic / match: ls_topk with its histogram adds by shared atomics or __match_any_sync; cluster:
# ls_topk_cluster, each (row, head) over TOPK_CTAS blocks; sample: ls_topk_sample, one block whose radix passes
# run over the candidates a sampled threshold leaves (TOPK_CANDIDATES at most); spread: the sample top-k's
# selection in one block of a cluster of 2 per (row, head), the picks' attention (folded) spread over both;
# spreadc: spread, the candidate pass split over the cluster too (apart, each is the sample top-k); fan2: two
# blocks per (row, head), no cluster, each selecting the same picks from linear bins and attending over its half
# of them (rows past LINBIN_MAX_SURVIVORS, or whose linear bins cannot split: block 0 runs the sample top-k alone);
# fan2s: fan2's two blocks in a cluster, each histogramming half the row (the range, totals and picks exchanged
# through distributed shared memory) instead of both selecting from the whole of it
TopkVariant = Literal["atomic", "match", "cluster", "sample", "spread", "spreadc", "fan2", "fan2s"]
TOPK_VARIANTS: tuple[TopkVariant, ...] = get_args(TopkVariant)
SPREAD_CTAS = {"spread": 2, "spreadc": 2}  # blocks per (row, head) of the spread top-k kernels
FAN_CTAS = {"fan2": 2, "fan2s": 2}  # blocks per (row, head) of the fan top-k kernels
# the top-ks of several blocks a (row, head): folded only (apart, each is the sample top-k's launch)
MULTI_BLOCK_CTAS = SPREAD_CTAS | FAN_CTAS
# clusters of two 1,024-thread top-k blocks resident at once on the H200 (cuOccupancyMaxActiveClusters, gpuattn2
# run 8; 30 clusters of 4): choose_config takes spreadc only where every (row, head) fits in one wave
SPREAD_MAX_CLUSTERS = 66
LINBIN_MAX_SURVIVORS = 8 * 1024  # the linear-bin selection's reach: LS_TOPK_LINBIN_J x TOPK_THREADS scores
# choose_config's fan2 from this many picks a head: its second block halves the picks' value rows on one SM
FAN_MIN_K = 1024
TOPK_CANDIDATES = 4096  # ls_topk_sample's candidate buffer (8 bytes of dynamic shared memory each)
# ls_select2: survivor rows in flight per lane group (8 spilled and ran slower; 6 and 7 ran no faster: dropped);
# 16: tiles of 16 rows a warp, their scores by bf16 tensor-core MMAs (the query split into three bf16 parts)
SELECT_ROWS = (4, 16)
SELECT_ASYNC = 0  # ls_select2_r0_*: the async select form (kernels: ROWS = 0)
# ls_layer (kernels/ls_layer.cuh): the whole layer in one launch, a cluster of up to LAYER_MAX_CTAS blocks per row
LAYER_MAX_CTAS = 16  # clusters past 8 blocks are non-portable (Hopper allows 16)
LAYER_MAX_LIST = 65535  # a block's survivor list is indexed by 16-bit picks


@dataclass
class Config:
    """Which kernels run the layer (every combination computes the same answer; benchmarks/gpu/bench_fused.py
    times them per configuration)."""

    select: SelectForm = "fused"
    topk: TopkVariant = "atomic"
    chunk: int = 64
    fold: bool = True  # the top-k blocks attend over their own picks (else ls_attn's pick chunks do)
    # fused select only: ls_select2 (sign loads before the query's, the slot claim overlapped with the first
    # round of row loads) with this many survivor rows in flight per lane group, or 16: 16-row tiles a warp
    # scored by tensor-core MMAs; 0: ls_select (async: unused)
    rows: int = 0
    # the top-k (and the picks' attention when apart) launched with programmatic stream serialization
    # (cudaLaunchKernelEx through cuda-python): scheduled while the kernel ahead of it drains, waiting in
    # griddepcontrol.wait for its writes, so the launch gap between the two goes
    pdl: bool = False
    # the whole layer in one launch (ls_layer: filter, scores, top-k, attention and merge in a cluster of blocks
    # per row; popc filter, needs cuda-python); the fields above then play no part. Measured 1.8-2.6x slower than
    # the staged kernels at batch 1 (docs/gpu-kernels.md, fifth step), so choose_config never picks it
    layer: bool = False
    # ls_layer's blocks per row; 0: the most (up to LAYER_MAX_CTAS) with every row's cluster resident at once
    ctas: int = 0
    # in a captured graph, the band's attention branches off after the select, beside the top-k (which leaves
    # most SMs idle at batch 1), instead of at the start, where it shares the SMs and the memory with the select
    band_late: bool = False
    # the select (or the filter, split) launched with programmatic stream serialization too: in a graph of layers
    # (a decode step's), its blocks are scheduled while the previous layer's top-k runs and wait in
    # griddepcontrol.wait, before they read anything, for every kernel ahead of them to finish; needs cuda-python
    chain: bool = False


def config_key(c: Config) -> str:
    """select form (+ rows: 4 in registers, 16 MMA tiles) / top-k / chunk / fold or apart (/ pdl) (/ late: the
    band beside the top-k); ls_layer: layer (/ blocks per row). The benchmarks' names for configurations."""
    if c.layer:
        return "layer" + (f"/{c.ctas}" if c.ctas else "")
    where = "fold" if c.fold else "apart"
    flags = ("/pdl" if c.pdl else "") + ("/late" if c.band_late else "") + ("/chain" if c.chain else "")
    return f"{c.select}{c.rows or ''}/{c.topk}/{c.chunk}/{where}" + flags


def parse_config_key(key: str) -> Config:
    """The Config a :func:`config_key` names."""
    parts = key.split("/")
    if parts[0] == "layer":
        return Config(layer=True, ctas=int(parts[1]) if len(parts) > 1 else 0)
    form = parts[0].rstrip("0123456789")
    rows = int(parts[0][len(form) :] or 0)
    return Config(
        form,  # type: ignore[arg-type]
        parts[1],  # type: ignore[arg-type]
        int(parts[2]),
        parts[3] == "fold",
        rows,
        "pdl" in parts[4:],
        band_late="late" in parts[4:],
        chain="chain" in parts[4:],
    )


# Survivor slots a row is given for an expected survival (benchmarks/gpu/bench_fused.py sizes rows so): that
# fraction of the region with SLOT_HEADROOM, plus SLOT_FLOOR, at most the region
SLOT_HEADROOM = 1.3
SLOT_FLOOR = 2048


def survivor_slots(region: int, survival: float) -> int:
    return max(1, min(region, int(region * survival * SLOT_HEADROOM) + SLOT_FLOOR))


def expected_survivors(cap: int) -> float:
    """The survivors a row's slots were sized for: :func:`survivor_slots` read backwards."""
    return (cap - SLOT_FLOOR) / SLOT_HEADROOM


@dataclass(frozen=True)
class Shape:
    """One layer's sparse attention: ``users`` x ``kv_heads`` rows, ``group`` query heads each, a context of
    ``ctx`` tokens of which ``sinks`` and ``window`` are the dense band and the rest the sparse region; ``k``
    picks per query head; ``cap`` survivor slots per row (survivors past it are counted, not kept)."""

    users: int
    kv_heads: int
    group: int
    head_dim: int
    ctx: int
    window: int
    sinks: int
    k: int
    cap: int

    def __post_init__(self) -> None:
        if self.head_dim not in (64, 128):
            raise CemsimError(f"the fused pipeline takes head dim 64 or 128, got {self.head_dim}")
        if not 1 <= self.group <= MAX_GROUP_ATTN:
            raise CemsimError(
                f"the fused pipeline takes 1..{MAX_GROUP_ATTN} query heads per KV head, got {self.group}"
            )
        if not 1 <= self.k <= 1024:
            raise CemsimError(f"k must be 1..1024, got {self.k}")
        if self.sinks < 0 or self.window < 0 or self.sinks + self.window < 1 or self.region < 0:
            raise CemsimError(
                f"sinks {self.sinks} + window {self.window} must be >= 1 and fit in the context {self.ctx}"
            )
        if self.items_for(min(ATTN_CHUNKS)) > ATTN_MAX_ITEMS:
            raise CemsimError(
                f"{self.items_for(min(ATTN_CHUNKS))} attention chunks per row (band {self.band}, {self.group} x "
                f"k {self.k}) exceed the kernel's {ATTN_MAX_ITEMS}: shorten the window"
            )
        if self.cap < 1 or min(self.users, self.kv_heads) < 1:
            raise CemsimError(f"bad users {self.users} / KV heads {self.kv_heads} / cap {self.cap}")

    @property
    def rows(self) -> int:
        return self.users * self.kv_heads

    @property
    def words(self) -> int:
        return self.head_dim // 64

    @property
    def start(self) -> int:
        return self.sinks

    @property
    def region(self) -> int:
        return self.ctx - self.window - self.sinks

    @property
    def band(self) -> int:
        return self.sinks + self.window

    def band_items(self, chunk: int) -> int:
        return -(-self.band // chunk)

    def items_for(self, chunk: int) -> int:
        """Attention work items per row at ``chunk`` keys each: band chunks, then ``group`` x pick chunks."""
        return self.band_items(chunk) + self.group * -(-self.k // chunk)

    def floor_bytes(self, survivors: float, picks: float) -> float:
        """Bytes the step must read: every region key's signs, each survivor's key row (its exact score),
        each pick's value row (its score is the survivor's), the band's keys and values, the queries.
        ``survivors`` and ``picks`` are totals over all rows (picks summed over query heads)."""
        row = self.head_dim * 2
        return (
            self.rows * self.region * self.words * 8
            + survivors * row
            + picks * row
            + 2 * self.rows * self.band * row
            + self.rows * self.group * self.head_dim * 4
        )


def build_options(*defines: str, lineinfo: bool = False) -> tuple[str, ...]:
    """NVRTC's options for :func:`build_module`; ``lineinfo`` adds line tables (no change to the code generated)
    so that Nsight Compute's source page puts its samples on lines of kernels/*.cu."""
    return (
        "-std=c++17",
        f"-I{KERNEL_DIR}",
        *(f"-D{d}" for d in defines),
        *(("-lineinfo",) if lineinfo else ()),
    )


def build_module(*defines: str, source: Path | None = None, lineinfo: bool = False) -> Any:
    """kernels/longsight_fused.cu (and what it includes) built by NVRTC, with ``-D`` options ``defines`` (such as
    ``LS_TRACE`` or ``LAYER_KPT=2``): the benchmarks' traced and variant builds, and the pipeline's own;
    ``source``: another copy of it (a benchmark timing an earlier version beside this one)."""
    cp = _cupy()
    if cp is None:
        raise CemsimError("the fused GPU pipeline needs CuPy and a CUDA device")
    return cp.RawModule(
        code=(source or SOURCE).read_text(), options=build_options(*defines, lineinfo=lineinfo)
    )


@functools.cache
def _module():
    return build_module()


def module_int(mod: Any, name: str, missing: int | None = None) -> int:
    """An ``extern "C" __device__ const int`` of the module (what a build variant's defines made of it);
    ``missing`` where the build has none (an earlier source), which is an error when ``missing`` is None."""
    cp = _cupy()
    try:
        ptr = mod.get_global(name)
    except Exception:
        if missing is None:
            raise
        return missing
    return int(cp.ndarray((1,), cp.int32, ptr).get()[0])


def match_carveout(functions: Iterable[Any], sign_bulk: int) -> None:
    """With the select's signs by bulk copy (LS_SIGN_BULK=1, a build variant) every select and band kernel prefers
    the largest shared-memory carveout: the select's 43 KB a block need a larger one than the band's kernels ask
    for, and an SM holding blocks of a kernel with another carveout takes no select block until they end (H200,
    4K, batch 1, band beside the select: 23.2 us, 18.2 with both at the maximum, 18.7 with the loads;
    docs/gpu-kernels.md, seventeenth step). The shipped build (loads) keeps the driver's choice."""
    if sign_bulk:
        for f in functions:
            f.preferred_shared_memory_carveout = 100


@functools.cache
def programmatic_launch_available() -> bool:
    """cuda-python's driver bindings, through which Config.pdl launches, are importable (without them a pdl
    launch is a plain one: the same answer, the launch gap kept)."""
    import importlib.util

    try:
        return importlib.util.find_spec("cuda.bindings") is not None
    except (ImportError, ValueError):
        return False


def _launch_config(grid: tuple, block: tuple, shared_mem: int, pdl: bool, cluster: int) -> Any:
    """A cuLaunchKernelEx configuration on the current CuPy stream: programmatic stream serialization (``pdl``)
    and / or a cluster of ``cluster`` blocks along x."""
    from cuda.bindings import driver as cu

    cp = _cupy()
    grid = tuple(grid) + (1,) * (3 - len(grid))
    block = tuple(block) + (1,) * (3 - len(block))
    cfg = cu.CUlaunchConfig()
    cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = grid
    cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = block
    cfg.sharedMemBytes = shared_mem
    cfg.hStream = cu.CUstream(cp.cuda.get_current_stream().ptr)
    attrs = []
    if pdl:
        attr = cu.CUlaunchAttribute()
        attr.id = cu.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
        attr.value.programmaticStreamSerializationAllowed = 1
        attrs.append(attr)
    if cluster:
        attr = cu.CUlaunchAttribute()
        attr.id = cu.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
        attr.value.clusterDim.x, attr.value.clusterDim.y, attr.value.clusterDim.z = cluster, 1, 1
        attrs.append(attr)
    cfg.attrs = attrs
    cfg.numAttrs = len(attrs)
    return cfg


def _function(f: Any) -> Any:
    """The driver handle of a CuPy RawKernel (its cupy.cuda.Function's CUfunction)."""
    from cuda.bindings import driver as cu

    return cu.CUfunction(getattr(f, "kernel", f).ptr)


def _check(err: Any, what: str) -> None:
    from cuda.bindings import driver as cu

    if err != cu.CUresult.CUDA_SUCCESS:
        raise CemsimError(f"{what} failed: {err}")


def max_active_clusters(f: Any, ctas: int, threads: int, shared_mem: int) -> int:
    """How many clusters of ``ctas`` blocks of kernel ``f`` the device runs at once (cuOccupancyMaxActiveClusters);
    sizes past 8 are allowed on the kernel first (non-portable)."""
    from cuda.bindings import driver as cu

    fn = _function(f)
    if ctas > 8:
        (err,) = cu.cuFuncSetAttribute(
            fn, cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1
        )
        _check(err, "allowing a non-portable cluster size")
    err, n = cu.cuOccupancyMaxActiveClusters(fn, _launch_config((ctas,), (threads,), shared_mem, False, ctas))
    return int(n) if err == cu.CUresult.CUDA_SUCCESS else 0


def _launch_ex(
    f: Any, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0, pdl: bool = False, cluster: int = 0
) -> None:
    """Launch CuPy kernel ``f`` on the current CuPy stream through cuLaunchKernelEx, with the programmatic stream
    serialization attribute (``pdl``) and / or a cluster size (``cluster``), capturable in a graph like a plain
    launch. ``args``: CuPy arrays and NumPy int32 / int64 scalars, as for a CuPy launch."""
    import ctypes

    from cuda.bindings import driver as cu

    values, types = [], []
    for a in args:
        if isinstance(a, np.int32):
            values.append(int(a))
            types.append(ctypes.c_int32)
        elif isinstance(a, np.int64):
            values.append(int(a))
            types.append(ctypes.c_int64)
        else:
            values.append(int(a.data.ptr))
            types.append(ctypes.c_void_p)
    cfg = _launch_config(grid, block, shared_mem, pdl, cluster)
    (err,) = cu.cuLaunchKernelEx(cfg, _function(f), (tuple(values), tuple(types)), 0)
    _check(err, "cuLaunchKernelEx")


def layer_smem_words(group: int, head_dim: int, bcap: int, k: int, scap: int, threads: int = 1024) -> int:
    """ls_layer's dynamic shared memory in 4-byte words (kernels/ls_layer.cuh LayerSmem) for blocks of ``threads``
    threads: the query, the band share's scores, the per-warp histograms (256 words a warp, later the attention's
    reduction), the cluster's exchange and totals, the picks' list indices, the survivor list (positions and
    scores)."""

    def a4(w: int) -> int:
        return (w + 3) & ~3

    kp = (k + 1) & ~1
    return (
        a4(group * head_dim)
        + a4(group * bcap)
        + threads // 32 * 256
        + 3 * group * 256
        + a4((group * kp + 1) // 2)
        + a4(scap)
        + group * scap
    )


@dataclass(frozen=True)
class LayerGeometry:
    """ls_layer's launch for a shape: ``ctas`` blocks per row (a cluster), each with a survivor list of ``scap``
    entries and ``bcap`` band keys, ``smem`` bytes of dynamic shared memory; ``resident``: clusters of that size
    the device runs at once."""

    ctas: int
    scap: int
    bcap: int
    smem: int
    resident: int


def choose_method(group: int) -> Method:
    """popc up to 4 query heads per KV head (POPC issue rate is not yet the bound; the frag method measured the
    same there), the frag b1-MMA filter above: ls_select at 1M keys and G = 8 took 182.5 us against popc's
    189.8 and the XOR MMA's 193.9 (benchmarks/gpu/results/h200-filter-run3-2026-12-02.json). The frag method
    reads frag-layout signs: see FusedLongSight."""
    return "popc" if group <= 4 else "frag"


# choose_config takes the MMA select (rows 16) where rows hold the survivor slots of this survival or more
MMA_SELECT_SURVIVAL = 0.03


def choose_config(shape: Shape) -> Config:
    """The kernels measured fastest for shapes like this one on the H200
    (cemsim/calibration/h200-sparse-layer-v8-2026-12-04.json: topk_variant_b2b_us, layer_variant_b2b_us; this rule
    is 2.7 % off each point's fastest combination on average, 13.4 % at worst, batch 1 at 8K planted 5 %, where
    fan2s with the band beside it was fastest at k = 256 (21.3 against 24.0 us); with fan2 where it takes fan2s
    (the seventh version's rule) 2.8 % / 13.4 %, without either 3.3 % / 13.4 %; on the seventh version's
    measurement, v7, which has no fan2s, the rule then (fan2) was 2.3 % / 14.7 %, on v6 1.7 % / 12.8 %, on v5 1.7 %
    / 10.9 %, on v4 2.3 % / 11.3 %). fan2s (two blocks a head in a cluster of two, splitting the linear-bin
    selection of the picks between them, each attending over half) at batch 1 where k >= FAN_MIN_K and the rows'
    expected survivors fit the linear bins (LINBIN_MAX_SURVIVORS): faster than fan2 at all five such points of v8
    (128K: 30.6 / 31.9 / 33.7 / 36.7 against 30.7 / 32.2 / 34.5 / 37.6 us at 1 %, 2 %, 5 % and planted 5 %; 512K at
    1 %: 58.0 against 58.6); fan2 was 38.3 against the sample top-k's 40.6 us at 128K planted 5 % (v6). Every
    layer's select launched programmatically after the kernels ahead of it (chain; a no-op for the first kernel of
    a graph): in a graph of 8 layers, the chosen kernels of v8 took up to 10.7 us less a layer at 56 of its 60 points
    (batch 1: ~1 us at 4K-8K, 2.5-3.4 at 32K from 5 % survival, 0.0-0.6 at 128K-1M; batch 8: 2.1-10.7 us) and
    0.2-0.8 us more at four. ls_select2 with its survivors' scores on the tensor cores (rows 16) from ~3 % survival
    (MMA_SELECT_SURVIVAL): fastest at every point from 3 % and at the planted 5 % ones (side by side, batch 1,
    planted 5 %: 41.9 against the previous rule's 47.6 us at 128K, 78.4 against 93.7 at 512K, 124.1 against 153.7 at
    1M; benchmarks/gpu/results/h200-select-mma-lead3-2026-12-03.json); below, ls_select (its blocks have 20-40
    survivors, which leave the MMA tiles' warps idle). The sample top-k once rows can hold 8K survivors (its
    selection alone: 13.6 against the cluster's 23.9 and the single block's 29.4 us at 512K, batch 1, planted 5 %,
    v3), its picks' attention folded in; the top-k launched programmatically from 4K slots (on short rows at batch 8
    it cost 1.5-2.5 us); chunk 64. From 32K slots, where every (row, query head) cluster of two fits on the GPU at
    once, spreadc (the sample top-k's candidate pass and picks' attention over a cluster of 2): 94.9 against 98.1 us
    at 512K and 153.8 against 158.0 at 1M, batch 1, planted 5 %
    (benchmarks/gpu/results/h200-layer-gpuattn2-run8-2026-12-02.json; measured at batch 1 only). The band's
    attention beside the top-k rather than the select (band_late) where the top-k leaves most SMs idle and is
    launched programmatically (4K slots): -2.0 us at 128K and -2.5 at 1M, batch 1, planted 5 %; +4 us at 4K and
    +10-14 us at batch 8 from 32K, where it is off (benchmarks/gpu/results/h200-band-late-lead2-2026-12-02.json);
    with the seventh version's band, at 32K batch 1 on the rule's other kernels -1.2 / -2.8 / -2.0 us at the 5 %,
    10 % and planted 5 % points (v7; v6: +1.4, -2.3, -1.8) and -2.1 at 128K and 2 % (v6: -2.6), so from 4K slots
    rather than 8K; side by side at 32K, planted 5 %, 25.7 against 27.6 us
    (benchmarks/gpu/results/h200-v7-refit-lead10-2026-12-03.json)."""
    long_rows = shape.cap >= 32768
    few_heads = shape.rows * shape.group <= SPREAD_MAX_CLUSTERS  # the top-k leaves most SMs idle (batch 1)
    spread = long_rows and few_heads
    # rows whose expected survivors the linear bins take
    fan = few_heads and shape.k >= FAN_MIN_K and expected_survivors(shape.cap) <= LINBIN_MAX_SURVIVORS
    mma = shape.cap >= survivor_slots(shape.region, MMA_SELECT_SURVIVAL)
    return Config(
        select="fused",
        topk="spreadc" if spread else "fan2s" if fan else "sample" if shape.cap >= 8192 else "atomic",
        chunk=64,
        fold=True,
        rows=16 if mma else 0,
        pdl=shape.cap >= 4096,
        band_late=few_heads and shape.cap >= 4096,
        chain=True,
    )


class FusedLongSight:
    """Buffers and launches for one :class:`Shape`. Inputs are CuPy arrays: ``ksig [BH, ctx, W]`` uint64
    (method ``frag``: in frag layout, ``[BH, ceil(ctx / 32) * 32, W]``, cemsim.gpu.sign_layout.to_frag),
    ``qsig [BH, G, W]`` uint64, ``thresholds [BH]`` int32, ``q [BH, G, D]`` float32 (scaled), ``keys`` and
    ``vals [BH, ctx, D]`` uint16 (bf16 bits). ``config`` may be changed between runs."""

    def __init__(self, shape: Shape, method: Method | None = None, config: Config | None = None) -> None:
        cp = _cupy()
        if cp is None:
            raise CemsimError("the fused GPU pipeline needs CuPy and a CUDA device")
        self.cp, self.shape = cp, shape
        self.method: Method = method or choose_method(shape.group)
        self.config = config or choose_config(shape)
        mod = _module()
        w, d = shape.words, shape.head_dim
        self.f_select = mod.get_function(f"ls_select_{self.method}_w{w}")
        # keys a select block filters: BLOCK_KEYS unless a build variant set LS_KPT (benchmarks' --defines)
        self.block_keys = module_int(mod, "ls_block_keys")
        self.f_select2 = {
            r: mod.get_function(f"ls_select2_r{r}_{self.method}_w{w}") for r in (*SELECT_ROWS, SELECT_ASYNC)
        }
        self.f_filter = mod.get_function(f"ls_filter_{self.method}_w{w}")
        self.f_score = mod.get_function(f"ls_score_d{d}")
        ga = 4 if shape.group <= 4 else 8
        self.f_attn = {c: mod.get_function(f"ls_attn_d{d}_g{ga}_c{c}") for c in ATTN_CHUNKS}
        # (cluster, fold): the fold kernels also attend over their picks; the others only select them
        self.f_topk = {
            (False, True): mod.get_function(f"ls_topk_d{d}"),
            (True, True): mod.get_function(f"ls_topk_cluster_d{d}"),
            (False, False): mod.get_function("ls_topk_select"),
            (True, False): mod.get_function("ls_topk_cluster_select"),
        }
        self.f_topk_sample = {
            True: mod.get_function(f"ls_topk_sample_d{d}"),
            False: mod.get_function("ls_topk_sample_select"),
        }
        # the top-ks of several blocks a (row, head), folded: the spread (sample) and fan kernels
        self.f_topk_multi = {v: mod.get_function(f"ls_topk_sample_{v}_d{d}") for v in SPREAD_CTAS}
        self.f_topk_multi |= {v: mod.get_function(f"ls_topk_{v}_d{d}") for v in FAN_CTAS}
        self.candidates = TOPK_CANDIDATES  # may be lowered (tests reach the sampling and fallback paths)
        self.f_layer = mod.get_function(f"ls_layer_d{d}")
        # its block size is its launch bound (LAYER_THREADS in kernels/ls_layer.cuh)
        self.layer_threads = int(self.f_layer.attributes["max_threads_per_block"])
        # caps ls_layer's per-block survivor list (tests reach its overflow)
        self.layer_list: int | None = None
        self._layer_geometry: dict[tuple[int, int | None], LayerGeometry] = {}
        self.smem_keys = min(shape.cap, TOPK_SMEM_KEYS)
        self.smem_keys_cluster = min(-(-shape.cap // TOPK_CTAS) + 1, TOPK_SMEM_KEYS)
        try:  # over 48 KiB of shared memory needs the kernel's opt-in
            for (cluster, _), f in self.f_topk.items():
                f.max_dynamic_shared_size_bytes = 4 * (self.smem_keys_cluster if cluster else self.smem_keys)
            for f in (
                *self.f_topk_sample.values(),
                *self.f_topk_multi.values(),
            ):  # 74 KiB with the static part
                f.max_dynamic_shared_size_bytes = 8 * TOPK_CANDIDATES
        except Exception:
            self.smem_keys = self.smem_keys_cluster = 0  # the top-k passes then read the scores from L2
        match_carveout(
            (*self.f_attn.values(), *self.f_select2.values(), self.f_select),
            module_int(mod, "ls_sign_bulk", missing=0),
        )
        self.sms = int(cp.cuda.Device().attributes["MultiProcessorCount"])
        s = shape
        chunk = min(ATTN_CHUNKS)
        items = s.band_items(chunk) + s.group * max(
            -(-s.k // chunk), TOPK_CTAS, *MULTI_BLOCK_CTAS.values()
        )  # the most any uses
        self.tally = cp.zeros(s.rows, dtype=cp.uint32)  # survivors so far; zero at rest (merge_head)
        self.count = cp.zeros(s.rows, dtype=cp.uint32)  # the last run's survivors per row
        self.idx = cp.empty((s.rows, s.cap), dtype=cp.int32)
        self.scores = cp.empty((s.rows, s.group, s.cap), dtype=cp.float32)
        self.pick_pos = cp.empty((s.rows, s.group, s.k), dtype=cp.int32)
        self.pick_score = cp.empty((s.rows, s.group, s.k), dtype=cp.float32)
        self.pick_count = cp.empty((s.rows, s.group), dtype=cp.int32)
        self.part_ml = cp.empty((s.rows, items, s.group, 2), dtype=cp.float32)
        self.part_o = cp.empty((s.rows, items, s.group, s.head_dim), dtype=cp.float32)
        self.done = cp.zeros((s.rows, s.group + 1), dtype=cp.uint32)  # merge counters (self-resetting)
        self.out = cp.empty((s.rows, s.group, s.head_dim), dtype=cp.float32)
        self.lse = cp.empty((s.rows, s.group), dtype=cp.float32)
        self.lost = cp.zeros(s.rows, dtype=cp.uint32)  # ls_layer: survivors no block's list had room for

    def layer_geometry(self) -> LayerGeometry:
        """ls_layer's launch for this shape and ``config.ctas`` (0: the most blocks per row, up to
        LAYER_MAX_CTAS, for which the device runs every row's cluster at once; 1 when none does): each block's
        survivor list takes the shared memory the rest leaves."""
        key = (self.config.ctas, self.layer_list)
        if key in self._layer_geometry:
            return self._layer_geometry[key]
        s, f = self.shape, self.f_layer
        threads = self.layer_threads
        if not 0 <= self.config.ctas <= LAYER_MAX_CTAS:
            raise CemsimError(f"Config.ctas must be 0..{LAYER_MAX_CTAS}, got {self.config.ctas}")
        optin = int(self.cp.cuda.Device().attributes.get("MaxSharedMemoryPerBlockOptin", 232448))
        budget = (optin - int(f.attributes["shared_size_bytes"])) // 4

        def geometry(ctas: int) -> LayerGeometry:
            bcap = max(1, -(-s.band // ctas))
            fixed = layer_smem_words(s.group, s.head_dim, bcap, s.k, 0, threads)
            scap = min(
                LAYER_MAX_LIST, (budget - fixed - 3) // (1 + s.group), self.layer_list or LAYER_MAX_LIST
            )
            if scap < 1:
                raise CemsimError(
                    f"ls_layer: {ctas} blocks per row leave no shared memory for survivors (band {s.band}, "
                    f"k {s.k}, G {s.group}): use more blocks per row or the staged kernels"
                )
            smem = 4 * layer_smem_words(s.group, s.head_dim, bcap, s.k, scap, threads)
            f.max_dynamic_shared_size_bytes = smem
            resident = max_active_clusters(f, ctas, threads, smem)
            return LayerGeometry(ctas, scap, bcap, smem, resident)

        if self.config.ctas:
            geo = geometry(self.config.ctas)
        else:
            geo = next(
                (g for c in range(LAYER_MAX_CTAS, 1, -1) if (g := geometry(c)).resident >= s.rows),
                geometry(1),
            )
        self._layer_geometry[key] = geo
        return geo

    def check_inputs(self, ksig: Any, qsig: Any, thresholds: Any, q: Any, keys: Any, vals: Any) -> None:
        s, cp = self.shape, self.cp
        # the frag method reads signs in frag layout, rows padded to whole 32-key blocks
        ctx_signs = padded_keys(s.ctx) if self.method == "frag" else s.ctx
        want = {
            "ksig": (ksig, (s.rows, ctx_signs, s.words), cp.uint64),
            "qsig": (qsig, (s.rows, s.group, s.words), cp.uint64),
            "thresholds": (thresholds, (s.rows,), cp.int32),
            "q": (q, (s.rows, s.group, s.head_dim), cp.float32),
            "keys": (keys, (s.rows, s.ctx, s.head_dim), cp.uint16),
            "vals": (vals, (s.rows, s.ctx, s.head_dim), cp.uint16),
        }
        for name, (a, shp, dt) in want.items():
            if tuple(a.shape) != shp or a.dtype != dt or not a.flags.c_contiguous:
                raise CemsimError(
                    f"{name}: expected contiguous {np.dtype(dt).name} {shp}, got {a.dtype} {a.shape}"
                )

    def stages(self, ksig: Any, qsig: Any, thresholds: Any, q: Any, keys: Any, vals: Any) -> dict[str, Any]:
        """The pipeline's launches as zero-argument callables on the current stream, in an order that runs it
        right: ``band`` (attention over sinks + window: independent of the rest until the merge), ``select``
        (one launch, or ``filter`` and ``score``), ``topk`` (with the picks' attention when ``config.fold``),
        ``picks`` (the picks' attention, when not folded)."""
        s, c = self.shape, self.config
        i32, i64 = np.int32, np.int64
        if c.layer:
            return {"layer": self._layer_stage(ksig, qsig, thresholds, q, keys, vals)}
        # frag: keys counted from the 32-key block holding the region's start
        lead = s.start % 32 if self.method == "frag" else 0
        grid_sel = (-(-(lead + s.region) // self.block_keys), s.rows)
        band_items = s.band_items(c.chunk)
        cluster = c.topk == "cluster"
        # blocks a (row, head) of a multi-block top-k (apart, the spread and fan kernels are sample's launches)
        multi = MULTI_BLOCK_CTAS.get(c.topk, 0) if c.fold else 0
        # pick partials per head: one per top-k block when folded, else one per chunk of picks
        pick_parts = (TOPK_CTAS if cluster else multi or 1) if c.fold else -(-s.k // c.chunk)
        items = band_items + s.group * pick_parts
        f_attn = self.f_attn[c.chunk]

        if c.select not in SELECT_FORMS:
            raise CemsimError(f"Config.select must be one of {SELECT_FORMS}, got {c.select!r}")
        if c.rows and c.rows not in SELECT_ROWS:
            raise CemsimError(f"Config.rows must be 0 or one of {SELECT_ROWS}, got {c.rows}")
        if c.select == "async":
            f_select = self.f_select2[SELECT_ASYNC]
        else:
            f_select = self.f_select2[c.rows] if c.rows else self.f_select

        def launch(
            f: Any, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0, pdl: bool = False
        ) -> None:
            """A launch on the current stream, with programmatic stream serialization when ``pdl`` (and cuda-python
            is there to launch it): the top-k and picks after the select under config.pdl, the layer's first kernel
            after the previous layer's under config.chain."""
            if pdl and programmatic_launch_available():
                _launch_ex(f, grid, block, args, shared_mem, pdl=True)
            else:
                f(grid, block, args, shared_mem=shared_mem)

        def select() -> None:
            launch(
                f_select,
                grid_sel,
                (SELECT_THREADS,),
                (ksig, qsig, thresholds, q, keys, i64(s.ctx), i64(s.start), i64(s.region), i32(s.group),
                 i32(s.cap), self.tally, self.idx, self.scores),
                pdl=c.chain,
            )  # fmt: skip

        def filt() -> None:
            launch(
                self.f_filter,
                grid_sel,
                (SELECT_THREADS,),
                (ksig, qsig, thresholds, i64(s.ctx), i64(s.start), i64(s.region), i32(s.group), i32(s.cap),
                 self.tally, self.idx),
                pdl=c.chain,
            )  # fmt: skip

        def score() -> None:
            # grid-strided over the survivor slots: enough blocks to fill the GPU, no more than the slots need
            blocks = max(1, min(-(-s.cap // SCORE_ROWS_PER_BLOCK), -(-4 * self.sms // s.rows)))
            self.f_score(
                (blocks, s.rows),
                (SCORE_THREADS,),
                (q, keys, i64(s.ctx), i32(s.group), i32(s.cap), self.tally, self.idx, self.scores),
            )

        def topk() -> None:
            if c.topk == "sample" or c.topk in MULTI_BLOCK_CTAS:
                if not 1 <= self.candidates <= TOPK_CANDIDATES:
                    raise CemsimError(f"candidates must be 1..{TOPK_CANDIDATES}, got {self.candidates}")
                launch(
                    self.f_topk_multi[c.topk] if multi else self.f_topk_sample[c.fold],
                    (s.rows * s.group * (multi or 1),),
                    (TOPK_THREADS,),
                    (self.tally, self.idx, self.scores, i32(s.group), i32(s.cap), i32(s.k), i32(self.candidates),
                     self.pick_pos, self.pick_score, self.pick_count, vals, i64(s.ctx), i32(items),
                     i32(band_items), i32(pick_parts), self.part_ml, self.part_o, self.done, self.count, self.out,
                     self.lse),
                    shared_mem=8 * self.candidates,
                    pdl=c.pdl,
                )  # fmt: skip
                return
            cached = self.smem_keys_cluster if cluster else self.smem_keys
            mode: tuple = () if cluster else (i32(1 if c.topk == "atomic" else 0),)  # histogram adds
            launch(
                self.f_topk[cluster, c.fold],
                (s.rows * s.group * (TOPK_CTAS if cluster else 1),),
                (TOPK_THREADS,),
                (*mode, self.tally, self.idx, self.scores, i32(s.group), i32(s.cap), i32(s.k), i32(cached),
                 self.pick_pos, self.pick_score, self.pick_count, vals, i64(s.ctx), i32(items),
                 i32(band_items), i32(pick_parts), self.part_ml, self.part_o, self.done, self.count, self.out,
                 self.lse),
                shared_mem=4 * cached,
                pdl=c.pdl,
            )  # fmt: skip

        def attn(first: int, n_items: int, dependent: bool = False) -> None:
            args = (q, keys, vals, i64(s.ctx), i32(s.sinks), i32(s.window), i32(s.group), i32(s.k), self.pick_pos,
                    self.pick_score, self.pick_count, i32(first), i32(items), i32(pick_parts), self.part_ml,
                    self.part_o, self.done, self.tally, self.count, self.out, self.lse)  # fmt: skip
            # the picks follow the top-k (programmatic under config.pdl); the band needs nothing ahead of it
            launch(f_attn, (n_items, s.rows), (ATTN_THREADS,), args, pdl=dependent and c.pdl)

        out: dict[str, Any] = {"band": lambda: attn(0, band_items)}
        if s.region > 0:
            if c.select != "split":
                out["select"] = select
            else:
                out["filter"], out["score"] = filt, score
        out["topk"] = topk
        if not c.fold:
            out["picks"] = lambda: attn(band_items, items - band_items, dependent=True)
        return out

    def run(self, ksig: Any, qsig: Any, thresholds: Any, q: Any, keys: Any, vals: Any) -> None:
        self.check_inputs(ksig, qsig, thresholds, q, keys, vals)
        for stage in self.stages(ksig, qsig, thresholds, q, keys, vals).values():
            stage()

    def _layer_stage(self, ksig: Any, qsig: Any, thresholds: Any, q: Any, keys: Any, vals: Any) -> Any:
        """The one launch of ls_layer (Config.layer) as a zero-argument callable on the current stream."""
        s = self.shape
        if self.method != "popc":
            raise CemsimError(
                f"Config.layer filters with popc on signs in the natural layout; this pipeline's method is "
                f"{self.method} (pass method='popc')"
            )
        if not programmatic_launch_available():
            raise CemsimError(
                "Config.layer launches clusters through cuda-python (cuda.bindings): not installed"
            )
        geo = self.layer_geometry()
        f, threads = self.f_layer, self.layer_threads
        f.max_dynamic_shared_size_bytes = geo.smem
        i32, i64 = np.int32, np.int64
        args = (ksig, qsig, thresholds, q, keys, vals, i64(s.ctx), i32(s.sinks), i32(s.window), i32(s.group),
                i32(s.k), i32(s.cap), i32(geo.scap), i32(geo.bcap), self.tally, self.count, self.lost, self.idx,
                self.scores, self.pick_pos, self.pick_score, self.pick_count, self.out, self.lse)  # fmt: skip

        def layer() -> None:
            _launch_ex(f, (s.rows * geo.ctas,), (threads,), args, shared_mem=geo.smem, cluster=geo.ctas)

        return layer

    def capture(
        self, ksig: Any, qsig: Any, thresholds: Any, q: Any, keys: Any, vals: Any, stream: Any
    ) -> Any:
        """The whole layer as one CUDA graph on ``stream`` (a non-default CuPy stream), the band's attention
        on a branch of its own beside the select and top-k, or with ``config.band_late`` beside the top-k only
        (ls_layer: its one launch)."""
        self.check_inputs(ksig, qsig, thresholds, q, keys, vals)
        stages, sync = self.stages(ksig, qsig, thresholds, q, keys, vals), self._branch_sync()
        with stream:
            stream.begin_capture()
            try:
                self._record(stages, stream, *sync)
            except Exception:
                stream.end_capture()  # leave the stream usable
                raise
            return stream.end_capture()

    def record(
        self, ksig: Any, qsig: Any, thresholds: Any, q: Any, keys: Any, vals: Any, stream: Any
    ) -> None:
        """The layer's launches on ``stream`` while it captures a graph, arranged as ``capture`` arranges them:
        layers recorded one after another make one graph (a decode step's layers, with no graph launch each)."""
        self.check_inputs(ksig, qsig, thresholds, q, keys, vals)
        self._record(self.stages(ksig, qsig, thresholds, q, keys, vals), stream, *self._branch_sync())

    def _branch_sync(self) -> tuple[Any, Any, Any]:
        """The band's side stream and the fork and join events around it."""
        cp = self.cp
        return (
            cp.cuda.Stream(non_blocking=True),
            cp.cuda.Event(disable_timing=True),
            cp.cuda.Event(disable_timing=True),
        )

    def _record(self, stages: dict[str, Any], stream: Any, side: Any, fork: Any, join: Any) -> None:
        with stream:
            if "layer" in stages:
                stages["layer"]()
                return

            def branch() -> None:  # the band on the side stream, after what the stream has so far
                fork.record(stream)
                side.wait_event(fork)
                with side:
                    stages["band"]()
                join.record(side)

            late = self.config.band_late and ("select" in stages or "score" in stages)  # a region to select
            if not late:
                branch()
            for name, stage in stages.items():
                if name == "topk" and late:
                    branch()
                if name not in ("band", "picks"):
                    stage()
            stream.wait_event(join)
            if "picks" in stages:
                stages["picks"]()

    def reset(self) -> None:
        """Zero the survivor tally and the merge counters: only needed after stages were launched without the
        rest of the layer (timing a stage alone)."""
        self.tally.fill(0)
        self.done.fill(0)

    def overflowed(self) -> bool:
        """Some row had more survivors than ``cap`` slots (or, after ls_layer, than its blocks' lists held): the
        counts are exact, the rest is not."""
        lost = self.config.layer and int(self.lost.max().get()) > 0
        return bool(int(self.count.max().get()) > self.shape.cap or lost)

    def results(self) -> dict[str, np.ndarray]:
        g = {
            name: self.cp.asnumpy(getattr(self, name))
            for name in ("count", "idx", "scores", "pick_pos", "pick_score", "pick_count", "out", "lse")
        }
        return g


def bitmap_filter(method: Method, words: int) -> Any:
    """The standalone filter kernel ``scf_bitmap_{method}_w{words}``: (q [G, W], k [N, W], N, G, D, T,
    bitmap [ceil(N / 32)] uint32)."""
    return _module().get_function(f"scf_bitmap_{method}_w{words}")


FRAG_SOURCE = KERNEL_DIR / "scf_frag.cu"
FRAG_THREADS = 256
FRAG_BLOCKS_PER_WARP = {1: 16, 2: 8}  # U in scf_frag.cu by W: 32-key blocks each warp loads up front


@functools.cache
def _frag_module():
    cp = _cupy()
    if cp is None:
        raise CemsimError("the frag SCF filter needs CuPy and a CUDA device")
    return cp.RawModule(code=FRAG_SOURCE.read_text(), options=("-std=c++17", f"-I{KERNEL_DIR}"))


class FragFilterKernel:
    """The b1-MMA SCF filter alone on frag-layout signs (cemsim.gpu.sign_layout) for up to 8 or 16 query
    heads: ``kernel(q [G, W], k_frag [ceil(N / 32) * 32, W], n, g, threshold, bitmap [ceil(N / 32)] uint32)``
    on the current stream."""

    def __init__(self, words: int, group: int) -> None:
        if not 1 <= group <= MAX_GROUP_FILTER or words not in FRAG_BLOCKS_PER_WARP:
            raise CemsimError(
                f"the frag filter takes G = 1..{MAX_GROUP_FILTER} and W = 1 or 2, got {group}, {words}"
            )
        self.blocks_per_warp = FRAG_BLOCKS_PER_WARP[words]
        self.name = f"scf_frag_w{words}_g{8 if group <= 8 else 16}"
        self.function = _frag_module().get_function(self.name)

    def grid(self, n: int) -> int:
        """Blocks of FRAG_THREADS threads: one warp per ``blocks_per_warp`` 32-key blocks."""
        blocks = -(-n // 32)
        warps = -(-blocks // self.blocks_per_warp)
        return -(-warps // (FRAG_THREADS // 32))

    def __call__(self, q: Any, k: Any, n: int, group: int, threshold: int, bitmap: Any) -> None:
        self.function(
            (self.grid(n),),
            (FRAG_THREADS,),
            (q, k, np.int64(n), np.int32(group), np.int32(threshold), bitmap),
        )
