"""The fused LongSight sparse-attention pipeline of one layer on a CUDA GPU (kernels/longsight_fused.cu).

Per layer, for all ``users x kv_heads`` rows at once, four graph-capturable launches and no host sync:
a memset of the survivor counters, ``ls_select`` (SCF filter + compaction + exact scores of the survivors),
``ls_topk`` / ``ls_topk_cluster`` (exact top-k per query head, radix select; the cluster form spreads a row
over 4 blocks) and ``ls_attn`` (one pass over sinks + window + picks,
split into chunks, whose last chunk per row merges them into one softmax per query head). :class:`Shape` (launch geometry and the bytes
the step must read) works without a GPU; :class:`FusedLongSight` needs CuPy and a CUDA device.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from cemsim.errors import CemsimError
from cemsim.gpu.sign_layout import padded_keys
from cemsim.kernels import KERNEL_DIR, _cupy

SOURCE = KERNEL_DIR / "longsight_fused.cu"
BLOCK_KEYS = 8 * 8 * 32  # LS_WARPS x LS_KPT x 32: keys per ls_select block
SELECT_THREADS = 256
TOPK_THREADS = 1024
ATTN_CHUNK = 128
ATTN_THREADS = 256
ATTN_MAX_ITEMS = 128
MAX_GROUP_ATTN = 8  # LS_MAX_GA: query heads per KV head in registers
MAX_GROUP_FILTER = 16
TOPK_SMEM_KEYS = 47104  # scores ls_topk caches in dynamic shared memory (184 KiB, with 33 KiB static)
TOPK_CTAS = 4  # blocks of ls_topk_cluster per (row, query head)
Method = Literal["popc", "mma", "mmax", "frag"]


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
        if self.items > ATTN_MAX_ITEMS:
            raise CemsimError(
                f"{self.items} attention chunks per row (band {self.band}, {self.group} x k {self.k}) exceed "
                f"the kernel's {ATTN_MAX_ITEMS}: shorten the window"
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

    @property
    def items(self) -> int:
        """Attention work items per row: band chunks, then ``group`` x pick chunks."""
        return -(-self.band // ATTN_CHUNK) + self.group * -(-self.k // ATTN_CHUNK)

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


@functools.cache
def _module():
    cp = _cupy()
    if cp is None:
        raise CemsimError("the fused GPU pipeline needs CuPy and a CUDA device")
    return cp.RawModule(code=SOURCE.read_text(), options=("-std=c++17", f"-I{KERNEL_DIR}"))


def choose_method(group: int) -> Method:
    """popc up to 4 query heads per KV head (POPC issue rate is not yet the bound; the frag method measured the
    same there), the frag b1-MMA filter above: ls_select at 1M keys and G = 8 took 182.5 us against popc's
    189.8 and the XOR MMA's 193.9 (benchmarks/gpu/results/h200-filter-run3-2026-12-02.json). The frag method
    reads frag-layout signs: see FusedLongSight."""
    return "popc" if group <= 4 else "frag"


class FusedLongSight:
    """Buffers and launches for one :class:`Shape`. Inputs are CuPy arrays: ``ksig [BH, ctx, W]`` uint64
    (method ``frag``: in frag layout, ``[BH, ceil(ctx / 32) * 32, W]``, cemsim.gpu.sign_layout.to_frag),
    ``qsig [BH, G, W]`` uint64, ``thresholds [BH]`` int32, ``q [BH, G, D]`` float32 (scaled), ``keys`` and
    ``vals [BH, ctx, D]`` uint16 (bf16 bits)."""

    def __init__(self, shape: Shape, method: Method | None = None) -> None:
        cp = _cupy()
        if cp is None:
            raise CemsimError("the fused GPU pipeline needs CuPy and a CUDA device")
        self.cp, self.shape = cp, shape
        self.method: Method = method or choose_method(shape.group)
        mod = _module()
        w = shape.words
        self.f_select = mod.get_function(f"ls_select_{self.method}_w{w}")
        self.f_topk = mod.get_function("ls_topk")
        self.f_attn = mod.get_function(f"ls_attn_d{shape.head_dim}_g{4 if shape.group <= 4 else 8}")
        self.f_topk_cluster = mod.get_function("ls_topk_cluster")
        self.topk_mode = 1  # ls_topk's histogram through shared atomics (0: __match_any_sync)
        # 1: ls_topk, one block per (row, head); TOPK_CTAS: ls_topk_cluster. Measured on the H200: the cluster
        # pays when few (row, head) pairs share 132 SMs and rows are long (3.3 % of 1M: 29 us against 44), and
        # costs up to 2x otherwise (benchmarks/gpu/results/h200-fused-run6-2026-12-02.json, topk_variant_b2b_us)
        self.topk_ctas = TOPK_CTAS if shape.rows * shape.group <= 64 and shape.cap >= 32768 else 1
        self.smem_keys = min(shape.cap, TOPK_SMEM_KEYS)
        self.smem_keys_cluster = min(-(-shape.cap // TOPK_CTAS) + 1, TOPK_SMEM_KEYS)
        try:  # over 48 KiB of shared memory needs the kernel's opt-in
            self.f_topk.max_dynamic_shared_size_bytes = 4 * self.smem_keys
            self.f_topk_cluster.max_dynamic_shared_size_bytes = 4 * self.smem_keys_cluster
        except Exception:
            self.smem_keys = self.smem_keys_cluster = 0  # the top-k passes then read the scores from L2
        s = shape
        self.count = cp.zeros(s.rows, dtype=cp.uint32)
        self.idx = cp.empty((s.rows, s.cap), dtype=cp.int32)
        self.scores = cp.empty((s.rows, s.group, s.cap), dtype=cp.float32)
        self.pick_pos = cp.empty((s.rows, s.group, s.k), dtype=cp.int32)
        self.pick_score = cp.empty((s.rows, s.group, s.k), dtype=cp.float32)
        self.pick_count = cp.empty((s.rows, s.group), dtype=cp.int32)
        self.part_ml = cp.empty((s.rows, s.items, s.group, 2), dtype=cp.float32)
        self.part_o = cp.empty((s.rows, s.items, s.group, s.head_dim), dtype=cp.float32)
        self.done = cp.zeros(s.rows, dtype=cp.uint32)  # ls_attn's per-row item counters (self-resetting)
        self.out = cp.empty((s.rows, s.group, s.head_dim), dtype=cp.float32)
        self.lse = cp.empty((s.rows, s.group), dtype=cp.float32)

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

    def stages(self, ksig: Any, qsig: Any, thresholds: Any, q: Any, keys: Any, vals: Any) -> list:
        """The pipeline as a list of zero-argument callables, one per launch, on the current stream."""
        s, cp = self.shape, self.cp
        i32, i64 = np.int32, np.int64
        # frag: keys counted from the 32-key block holding the region's start
        lead = s.start % 32 if self.method == "frag" else 0
        grid_sel = (-(-(lead + s.region) // BLOCK_KEYS), s.rows)

        def zero() -> None:
            cp.cuda.runtime.memsetAsync(
                self.count.data.ptr, 0, self.count.nbytes, cp.cuda.get_current_stream().ptr
            )

        def select() -> None:
            self.f_select(
                grid_sel,
                (SELECT_THREADS,),
                (ksig, qsig, thresholds, q, keys, i64(s.ctx), i64(s.start), i64(s.region), i32(s.group),
                 i32(s.cap), self.count, self.idx, self.scores),
            )  # fmt: skip

        def topk() -> None:
            if self.topk_ctas == TOPK_CTAS:
                self.f_topk_cluster(
                    (s.rows * s.group * TOPK_CTAS,),
                    (TOPK_THREADS,),
                    (self.count, self.idx, self.scores, i32(s.group), i32(s.cap), i32(s.k),
                     i32(self.smem_keys_cluster), self.pick_pos, self.pick_score, self.pick_count),
                    shared_mem=4 * self.smem_keys_cluster,
                )  # fmt: skip
                return
            self.f_topk(
                (s.rows * s.group,),
                (TOPK_THREADS,),
                (self.count, self.idx, self.scores, i32(s.group), i32(s.cap), i32(s.k), i32(self.smem_keys),
                 i32(self.topk_mode), self.pick_pos, self.pick_score, self.pick_count),
                shared_mem=4 * self.smem_keys,
            )  # fmt: skip

        def attn() -> None:
            self.f_attn(
                (s.items, s.rows),
                (ATTN_THREADS,),
                (q, keys, vals, i64(s.ctx), i32(s.sinks), i32(s.window), i32(s.group), i32(s.k), self.pick_pos,
                 self.pick_score, self.pick_count, i32(s.items), self.part_ml, self.part_o, self.done, self.out,
                 self.lse),
            )  # fmt: skip

        if s.region == 0:
            return [zero, topk, attn]
        return [zero, select, topk, attn]

    def run(self, ksig: Any, qsig: Any, thresholds: Any, q: Any, keys: Any, vals: Any) -> None:
        self.check_inputs(ksig, qsig, thresholds, q, keys, vals)
        for stage in self.stages(ksig, qsig, thresholds, q, keys, vals):
            stage()

    def capture(
        self, ksig: Any, qsig: Any, thresholds: Any, q: Any, keys: Any, vals: Any, stream: Any
    ) -> Any:
        """The whole layer as one CUDA graph on ``stream`` (a non-default CuPy stream)."""
        self.check_inputs(ksig, qsig, thresholds, q, keys, vals)
        stages = self.stages(ksig, qsig, thresholds, q, keys, vals)
        with stream:
            stream.begin_capture()
            for stage in stages:
                stage()
            return stream.end_capture()

    def overflowed(self) -> bool:
        return bool(int(self.count.max().get()) > self.shape.cap)

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
