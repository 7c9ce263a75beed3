// LongSight's sparse region on the GPU, fused (issue 18): for every (user, KV head) of a batch in one launch
// per stage, with no host synchronisation and no reset launch (the whole layer is capturable in a CUDA graph):
//   ls_select    SCF filter on packed signs + survivor compaction + exact scores of the survivors (or the same
//                in two launches: ls_filter, then ls_score); ls_select2_r* the same with its latency chain
//                reordered, the survivors' rows in registers (r4), by cp.async (r0) or scored 16 a warp by bf16
//                tensor-core MMAs (r16)
//   ls_topk_*    exact top-k per query head over the survivors' scores by radix select (up to 4 passes of 8
//                bits), one block or a cluster of 4 per (row, head); the _d* forms then attend over their picks
//   ls_attn      attention over sinks + window (shared by the group), and over the picks when the top-k does
//                not, split FlashDecoding-style into chunks that each write (max, sum, partial output); the
//                block that completes a head's partials merges them into one softmax (merge_head)
// plus the standalone SCF bitmap filters (scf_bitmap_popc_w*, scf_bitmap_mma_w*) that measure the filter
// alone against copy bandwidth.
//
// Sign layout as cemsim/attention/signs.py: dimension d is bit d % 64 of uint64 word d / 64 (1 when >= 0);
// W = D / 64 words per key, W = 1 (D = 64) or 2 (D = 128). A key survives for a group of G queries when any
// query has D - popcount(q ^ k) >= threshold.
//
// Filter methods, bit-identical:
//   popc  one key per lane, 16-byte (W = 2) loads, G x W popcounts per key: POPC issue rate bounds it from
//         G ~ 4 (16 POPC per SM per clock on Hopper).
//   mma   the b1 tensor-core MMA (mma.sync m16n8k128 .and.popc): c = popc(q & k) for 16 keys x 8 queries
//         at once, then matches = D - popc(q) - popc(k) + 2 c. Cost per key is two popcounts (popc(k))
//         whatever G, plus one MMA per 16 keys per 8 queries. (mmax: the same with .xor.popc.)
//   frag  scf_frag.cuh on signs in frag layout (cemsim/gpu/sign_layout.py, rows padded to 32 keys): one
//         16-byte load a lane per 32 keys, popc(q ^ k) from .and.popc on [k | ~k] x [~q | q], no popc(k).


#define LS_MAX_G 16   // filter: queries per KV group
#define LS_MAX_GA 8   // scoring / attention: query heads per KV group held in registers
#ifndef LS_KPT
#define LS_KPT 8  // 32-key words per warp per iteration of the filter (a build variant may set it: ls_block_keys)
#endif
#ifndef LS_SELECT_MINB
// the select kernels' blocks an SM (their launch bound caps registers at 64). Written as a bound of 1, NVRTC built
// them with 76-79 registers, 3 blocks an SM, and at batch 1 and 128K (512 blocks) a second wave started ~14 us
// after the first (H200, 2026-12-02: 128K planted 53.9 against 49.6 us, 1M 171.6 against 156.2, batch 8 1M
// 1,121.5 against 986.3); with 4 they run as fast as the kernels did with no minimum given (no spills)
#define LS_SELECT_MINB 4
#endif
#ifndef LS_SIGN_BULK
// 1: ls_select2 (popc filter, D = 128, rows in registers or on the tensor cores) brings its block's signs into
// shared memory by one bulk copy (Hopper's copy engine, completed on an mbarrier) instead of LS_KPT 16-byte loads
// a thread. A build variant, off: on the H200 it took 2-5 % off batch 1 from 512K and batch 8 at 5-10 % survival,
// nothing at 128K, but its 43 KB a block moves the SM's shared-memory carveout past the band kernel's, so a band
// running beside the select (small rows, batch 8) kept select blocks off its SMs (+5-6 us at 4K-8K, batch 1); with
// both kernels' preferred carveout at the maximum that went (docs/gpu-kernels.md, seventeenth step). Not swept so.
#define LS_SIGN_BULK 0
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define LS_ARCH_BULK 1  // bulk copies and mbarrier transaction counts: sm_90 on (other targets load the signs)
#else
#define LS_ARCH_BULK 0
#endif
#define LS_WARPS 8    // warps per block of ls_select and of the bitmap filters
#define LS_MMA_ROWS 16  // ls_select2_r16: survivor rows a warp scores at once with bf16 MMAs
#define LS_ROWS 4     // survivor key rows each lane group of ls_select has in flight
#define LS_FRAG 3     // ls_select's filter method on frag-layout signs (scf_frag.cuh)

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short bf16_t;  // bf16 bit patterns: no header needed under NVRTC
#define LS_NEG_INF __int_as_float(0xff800000)

// Programmatic dependent launch (sm_90; Config.pdl): a kernel launched with the programmatic stream
// serialization attribute may be scheduled before the kernel ahead of it in the stream has finished, once every
// block of that one has called grid_dep_launch() (or exited); grid_dep_wait() then blocks until that kernel has
// completed and its writes are visible. Both do nothing in a launch without the attribute.
// Phase timestamps of ls_select2 and ls_topk_sample blocks (thread 0; of a spread form's cluster, block 0's),
// only when built with -DLS_TRACE
// (benchmarks/gpu/profile_layer.py --trace): SM clock cycles, and %globaltimer (ns) at each kernel's start and
// end to line the launches up against each other; the band's attention blocks' %globaltimer at their start and
// once their partials are counted, and SM clock cycles at their phase boundaries (columns 2-6: start, rows and
// query in, scores and softmax, values summed, partials written and counted); which way each top-k block's partial went (LS_SET, column 12: 1 merged at
// once, 2 counted and merged, 3 counted); column 13: %globaltimer when a sample or fan top-k block was resident,
// before it waits for the select's writes; column 14: %globaltimer when a fan pair's other block (rank 1) ends.
#ifdef LS_TRACE
__device__ long long ls_trace_select[4096][8];
__device__ long long ls_trace_topk[1024][15];
__device__ long long ls_trace_band[4096][7];
__device__ __forceinline__ long long ls_gtimer() {
    long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
#define LS_MARK(arr, row, i)                                            \
    do {                                                                \
        if (threadIdx.x == 0 && (row) < (int)(sizeof(arr) / sizeof(arr[0]))) arr[row][i] = clock64(); \
    } while (0)
#define LS_GMARK(arr, row, i)                                           \
    do {                                                                \
        if (threadIdx.x == 0 && (row) < (int)(sizeof(arr) / sizeof(arr[0]))) arr[row][i] = ls_gtimer(); \
    } while (0)
#define LS_SET(arr, row, i, v)                                          \
    do {                                                                \
        if (threadIdx.x == 0 && (row) < (int)(sizeof(arr) / sizeof(arr[0]))) arr[row][i] = (v); \
    } while (0)
// the same, only where cond holds (a cluster's block 0): cond is not even evaluated in untraced builds
#define LS_MARK_IF(cond, arr, row, i) \
    do {                              \
        if (cond) LS_MARK(arr, row, i); \
    } while (0)
#define LS_GMARK_IF(cond, arr, row, i) \
    do {                               \
        if (cond) LS_GMARK(arr, row, i); \
    } while (0)
#define LS_SET_IF(cond, arr, row, i, v) \
    do {                                \
        if (cond) LS_SET(arr, row, i, v); \
    } while (0)
#else
#define LS_MARK(arr, row, i) \
    do {                     \
    } while (0)
#define LS_SET(arr, row, i, v) \
    do {                       \
    } while (0)
#define LS_MARK_IF(cond, arr, row, i) \
    do {                              \
    } while (0)
#define LS_GMARK_IF(cond, arr, row, i) \
    do {                               \
    } while (0)
#define LS_SET_IF(cond, arr, row, i, v) \
    do {                                \
    } while (0)
#define LS_GMARK(arr, row, i) \
    do {                      \
    } while (0)
#endif

__device__ __forceinline__ void grid_dep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_dep_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

#include "cp_async.cuh"  // cp_async16 / cp_async_commit / cp_async_wait (the async select form)

// ------------------------------------------------------------------------------------------------ filter

#include "scf_frag.cuh"  // the b1-MMA filter on frag-layout signs (method frag of ls_select)

// 8 bf16 (one 16-byte load) to fp32: a bf16 is the top half of the fp32 with the same bits
__device__ __forceinline__ void bf16x8_to_float(const uint4& raw, float (&f)[8]) {
    const u32 w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        f[2 * e] = __uint_as_float(w[e] << 16);
        f[2 * e + 1] = __uint_as_float(w[e] & 0xffff0000u);
    }
}

// One query head's dot product with a bf16 row split over LPS lanes: this lane's 8 dimensions (qg: the head's 8
// floats at this lane's offset, 16-byte aligned, in shared memory), then the sum over the lane group, returned to
// every lane of it.
template <int LPS>
__device__ __forceinline__ float row_dot(const float* qg, const float (&kf)[8]) {
    const float4 a = reinterpret_cast<const float4*>(qg)[0], b = reinterpret_cast<const float4*>(qg)[1];
    float acc = a.x * kf[0];
    acc = fmaf(a.y, kf[1], acc);
    acc = fmaf(a.z, kf[2], acc);
    acc = fmaf(a.w, kf[3], acc);
    acc = fmaf(b.x, kf[4], acc);
    acc = fmaf(b.y, kf[5], acc);
    acc = fmaf(b.z, kf[6], acc);
    acc = fmaf(b.w, kf[7], acc);
#pragma unroll
    for (int m = LPS / 2; m >= 1; m >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, m);
    return acc;
}

// fp32 -> bf16 bits, rounded to nearest even (finite values)
__device__ __forceinline__ u32 bf16_rn(float x) {
    const u32 u = __float_as_uint(x);
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

// d (16 x 8 fp32) += A (16 x 16 bf16, row-major fragments a0-a3) B (16 x 8 bf16, column-major b0-b1)
__device__ __forceinline__ void mma_bf16(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

// The survivor word of 32 consecutive keys [base, base + 32): bit j set when key base + j survives (every lane
// gets the word). Keys at or past n never survive. qs: the group's query signs [G][W] in shared memory.
template <int W>
struct PopcFilter {
    const u64* qs;
    int G, D, threshold;
    __device__ __forceinline__ void load(const u64* __restrict__ k, long long base, long long n, int lane,
                                         u64 (&kw)[W]) const {
        const long long key = base + lane;
        if (key < n) {
            if (W == 2) {
                const ulonglong2 v = reinterpret_cast<const ulonglong2*>(k)[key];
                kw[0] = v.x;
                kw[W - 1] = v.y;
            } else {
                kw[0] = k[key];
            }
        } else {
#pragma unroll
            for (int w = 0; w < W; ++w) kw[w] = 0ull;
        }
    }
    __device__ __forceinline__ u32 word(const u64 (&kw)[W], long long base, long long n, int lane) const {
        const int limit = D - threshold;  // survive when popc(q ^ k) <= limit for some query
        bool any = false;
        for (int g = 0; g < G; ++g) {
            int pc = 0;
#pragma unroll
            for (int w = 0; w < W; ++w) pc += __popcll(qs[g * W + w] ^ kw[w]);
            any |= pc <= limit;
        }
        return __ballot_sync(0xffffffffu, any && base + lane < n);
    }
};

// b1 MMA: lane (grp = lane / 4, t = lane % 4) holds 32-bit word t of keys grp, grp + 8 (first 16-key tile)
// and grp + 16, grp + 24 (second tile); for D = 64 the words t = 2, 3 are zero (they add nothing to any
// popcount). B: word t of query 8 * nb + grp. C: popc(q & k) (XOR: popc(q ^ k), so no popc(k) per key;
// measured against .and) for rows grp, grp + 8, columns 2t, 2t + 1.
template <bool XOR>
__device__ __forceinline__ void mma_b1_popc(int (&c)[4], u32 a0, u32 a1, u32 b0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (XOR) {
        asm volatile(
            "mma.sync.aligned.m16n8k128.row.col.s32.b1.b1.s32.xor.popc "
            "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
            : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
            : "r"(a0), "r"(a1), "r"(b0));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k128.row.col.s32.b1.b1.s32.and.popc "
            "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
            : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
            : "r"(a0), "r"(a1), "r"(b0));
    }
#else
    // no b1 tensor cores before sm_80: the same popcounts one element at a time through shuffles
    const int lane = threadIdx.x & 31, grp = lane >> 2, t = lane & 3;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int row = grp + (j >> 1) * 8, col = 2 * t + (j & 1);
        int s = 0;
        for (int w = 0; w < 4; ++w) {
            const u32 aw = __shfl_sync(0xffffffffu, (j >> 1) ? a1 : a0, (row & 7) * 4 + w);
            const u32 bw = __shfl_sync(0xffffffffu, b0, col * 4 + w);
            s += __popc(XOR ? (aw ^ bw) : (aw & bw));
        }
        c[j] += s;
    }
#endif
}

template <int W, bool XOR>
struct MmaFilter {
    u32 b[LS_MAX_G / 8];    // B fragments: one per 8 queries
    int pq[LS_MAX_G / 8][2];  // popc(q) of this lane's two columns (huge when the column is past G)
    int nb, D, threshold;
    __device__ __forceinline__ void init(const u64* qs, int G, int D_, int threshold_) {
        D = D_;
        threshold = threshold_;
        nb = (G + 7) >> 3;
        const int lane = threadIdx.x & 31, grp = lane >> 2, t = lane & 3;
#pragma unroll
        for (int i = 0; i < LS_MAX_G / 8; ++i) {
            const int qi = 8 * i + grp;
            u32 w = 0;
            if (qi < G && t < 2 * W) {
                const u64 q = qs[qi * W + (t >> 1)];
                w = (t & 1) ? (u32)(q >> 32) : (u32)q;
            }
            b[i] = w;
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                const int col = 8 * i + 2 * t + j;
                int p = 1 << 20;  // an absent query never passes
                if (col < G) {
                    p = 0;
                    for (int w2 = 0; w2 < W; ++w2) p += __popcll(qs[col * W + w2]);
                }
                // XOR: the column's own limit on popc(q ^ k) (-1 for an absent query, whose B is zero)
                pq[i][j] = XOR ? (col < G ? D - threshold : -1) : p;
            }
        }
    }
    __device__ __forceinline__ void load(const u64* __restrict__ k, long long base, long long n, int lane,
                                         u32 (&a)[4]) const {
        const u32* k32 = reinterpret_cast<const u32*>(k);
        const int grp = lane >> 2, t = lane & 3;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const long long key = base + grp + 8 * j;
            a[j] = (t < 2 * W && key < n) ? __ldg(k32 + key * (2 * W) + t) : 0u;
        }
    }
    __device__ __forceinline__ u32 word(const u32 (&a)[4], long long base, long long n, int lane) const {
        bool s[4] = {false, false, false, false};
        if (XOR) {
#pragma unroll
            for (int i = 0; i < LS_MAX_G / 8; ++i) {
                if (i < nb) {
#pragma unroll
                    for (int tile = 0; tile < 2; ++tile) {
                        int c[4] = {0, 0, 0, 0};
                        mma_b1_popc<true>(c, a[2 * tile], a[2 * tile + 1], b[i]);
#pragma unroll
                        for (int r = 0; r < 2; ++r)
                            s[2 * tile + r] |= (c[2 * r] <= pq[i][0]) | (c[2 * r + 1] <= pq[i][1]);
                    }
                }
            }
        } else {
            // popc(k) of this group's 4 keys: sum of the 4 lanes' words
            int pk[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                int p = __popc(a[j]);
                p += __shfl_xor_sync(0xffffffffu, p, 1);
                p += __shfl_xor_sync(0xffffffffu, p, 2);
                pk[j] = p;
            }
            // survive when D - pq - pk + 2c >= threshold, i.e. 2c - pq >= threshold - D + pk
#pragma unroll
            for (int i = 0; i < LS_MAX_G / 8; ++i) {
                if (i < nb) {
#pragma unroll
                    for (int tile = 0; tile < 2; ++tile) {
                        int c[4] = {0, 0, 0, 0};
                        mma_b1_popc<false>(c, a[2 * tile], a[2 * tile + 1], b[i]);
#pragma unroll
                        for (int r = 0; r < 2; ++r) {  // rows grp (+0) and grp + 8 of this tile
                            const int need = threshold - D + pk[2 * tile + r];
                            s[2 * tile + r] |=
                                (2 * c[2 * r] - pq[i][0] >= need) | (2 * c[2 * r + 1] - pq[i][1] >= need);
                        }
                    }
                }
            }
        }
        u32 bits = 0;
#pragma unroll
        for (int j = 0; j < 4; ++j) bits |= (u32)s[j] << j;  // keys grp + 8j of the 32
        bits |= __shfl_xor_sync(0xffffffffu, bits, 1);
        bits |= __shfl_xor_sync(0xffffffffu, bits, 2);
        // lane L reports key L = grp + 8 j with grp = L % 8, j = L / 8; its bits live at lane 4 (L % 8)
        const u32 v = __shfl_sync(0xffffffffu, bits, 4 * (lane & 7));
        const bool mine = ((v >> (lane >> 3)) & 1u) && base + lane < n;
        return __ballot_sync(0xffffffffu, mine);
    }
};

__device__ __forceinline__ void load_query_signs(u64* qs, const u64* q, int G, int W) {
    for (int i = threadIdx.x; i < G * W; i += blockDim.x) qs[i] = q[i];
    __syncthreads();
}

// Standalone filters: bitmap[N / 32] (bit n % 32 of word n / 32 set when key n survives), each warp LS_KPT
// words per iteration, loads of all LS_KPT words issued before the first test.
template <int W>
__device__ void bitmap_popc(const u64* q, const u64* __restrict__ k, long long N, int G, int D, int threshold,
                            u32* __restrict__ bitmap) {
    __shared__ u64 qs[LS_MAX_G * 2];
    load_query_signs(qs, q, G, W);
    PopcFilter<W> f{qs, G, D, threshold};
    const int lane = threadIdx.x & 31;
    const long long words = (N + 31) >> 5;
    const long long warp0 = ((long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * LS_KPT;
    const long long stride = (long long)gridDim.x * (blockDim.x >> 5) * LS_KPT;
    for (long long w0 = warp0; w0 < words; w0 += stride) {
        u64 kw[LS_KPT][W];
#pragma unroll
        for (int j = 0; j < LS_KPT; ++j) f.load(k, (w0 + j) * 32, N, lane, kw[j]);
#pragma unroll
        for (int j = 0; j < LS_KPT; ++j) {
            const u32 b = f.word(kw[j], (w0 + j) * 32, N, lane);
            if (lane == j && w0 + j < words) bitmap[w0 + j] = b;
        }
    }
}

template <int W, bool XOR>
__device__ void bitmap_mma(const u64* q, const u64* __restrict__ k, long long N, int G, int D, int threshold,
                           u32* __restrict__ bitmap) {
    __shared__ u64 qs[LS_MAX_G * 2];
    load_query_signs(qs, q, G, W);
    MmaFilter<W, XOR> f;
    f.init(qs, G, D, threshold);
    const int lane = threadIdx.x & 31;
    const long long words = (N + 31) >> 5;
    const long long warp0 = ((long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * LS_KPT;
    const long long stride = (long long)gridDim.x * (blockDim.x >> 5) * LS_KPT;
    for (long long w0 = warp0; w0 < words; w0 += stride) {
        u32 a[LS_KPT][4];
#pragma unroll
        for (int j = 0; j < LS_KPT; ++j) f.load(k, (w0 + j) * 32, N, lane, a[j]);
#pragma unroll
        for (int j = 0; j < LS_KPT; ++j) {
            const u32 b = f.word(a[j], (w0 + j) * 32, N, lane);
            if (lane == j && w0 + j < words) bitmap[w0 + j] = b;
        }
    }
}

extern "C" __global__ void scf_bitmap_popc_w1(const u64* q, const u64* k, long long N, int G, int D, int threshold,
                                              u32* bitmap) {
    bitmap_popc<1>(q, k, N, G, D, threshold, bitmap);
}
extern "C" __global__ void scf_bitmap_popc_w2(const u64* q, const u64* k, long long N, int G, int D, int threshold,
                                              u32* bitmap) {
    bitmap_popc<2>(q, k, N, G, D, threshold, bitmap);
}
extern "C" __global__ void scf_bitmap_mma_w1(const u64* q, const u64* k, long long N, int G, int D, int threshold,
                                             u32* bitmap) {
    bitmap_mma<1, false>(q, k, N, G, D, threshold, bitmap);
}
extern "C" __global__ void scf_bitmap_mma_w2(const u64* q, const u64* k, long long N, int G, int D, int threshold,
                                             u32* bitmap) {
    bitmap_mma<2, false>(q, k, N, G, D, threshold, bitmap);
}
extern "C" __global__ void scf_bitmap_mmax_w1(const u64* q, const u64* k, long long N, int G, int D, int threshold,
                                              u32* bitmap) {
    bitmap_mma<1, true>(q, k, N, G, D, threshold, bitmap);
}
extern "C" __global__ void scf_bitmap_mmax_w2(const u64* q, const u64* k, long long N, int G, int D, int threshold,
                                              u32* bitmap) {
    bitmap_mma<2, true>(q, k, N, G, D, threshold, bitmap);
}

// ------------------------------------------------------------------------------------------------ select

// Per (user, KV head) bh = blockIdx.y; the sparse region is positions [start, start + n) of that row's keys.
//   ksig   [BH, ctx, W] packed key signs         qsig  [BH, G, W]      thresholds [BH] (keep when >= T)
//   q      [BH, G, D] fp32, already scaled       keys  [BH, ctx, D] bf16
// Writes tally[bh] += survivors, idx[bh, slot] = key position, scores[bh, g, slot] = q_g . k for slot < cap;
// survivors past cap are counted but dropped (the caller checks the count against cap). tally is zero at rest:
// the merge of the row's last head (merge_head) moves it to count[bh] and zeroes it, so no reset launch.
// Two forms: ls_select_* does all of it in one launch; ls_filter_* (filter + compaction) then ls_score_d*
// (scores) lets the sign stream and the scattered key-row reads each run with nothing else in the way.
// Each filter block covers LS_WARPS x LS_KPT x 32 consecutive keys and makes one atomicAdd.
#define LS_BLOCK_KEYS (LS_WARPS * LS_KPT * 32)
extern "C" __device__ const int ls_block_keys = LS_BLOCK_KEYS;  // the host sizes the select's grid by it
extern "C" __device__ const int ls_sign_bulk = LS_SIGN_BULK;  // the host matches the kernels' carveouts to it

// Block-local compaction of KPT survivor words per warp (bit l of words[j]: key first + 32 j + l survives, first
// being this warp's first key position): warp w's count into warp_total[w], thread 0 turns the NW counts into
// exclusive prefixes and the block's total s_total (CLAIM: and claims that many slots on *tally into s_base, none
// when nothing survives), then each lane writes its survivors' positions into dst in key order, those at index room
// or past it dropped (BOUNDED). Every thread of the block calls it; s_total, s_base and dst are visible to all when
// it returns.
template <int NW, int KPT, bool CLAIM, bool BOUNDED>
__device__ __forceinline__ void compact_block(const u32 (&words)[KPT], long long first, int lane, int warp,
                                              unsigned int* warp_total, int* dst, unsigned int room,
                                              unsigned int* tally, unsigned int& s_total, unsigned int& s_base) {
    unsigned int mine = 0;
#pragma unroll
    for (int j = 0; j < KPT; ++j) mine += __popc(words[j]);
    if (lane == 0) warp_total[warp] = mine;
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned int total = 0;
        for (int w = 0; w < NW; ++w) {
            const unsigned int t = warp_total[w];
            warp_total[w] = total;  // exclusive prefix
            total += t;
        }
        s_total = total;
        if constexpr (CLAIM) s_base = total ? atomicAdd(tally, total) : 0u;
    }
    __syncthreads();
    unsigned int off = warp_total[warp];
#pragma unroll
    for (int j = 0; j < KPT; ++j) {
        const u32 b = words[j];
        if (b & (1u << lane)) {
            const unsigned int i = off + __popc(b & ((1u << lane) - 1u));
            if (!BOUNDED || i < room) dst[i] = (int)(first + 32 * j + lane);
        }
        off += __popc(b);
    }
    __syncthreads();
}

// SCF filter + compaction of this block's keys: spos[0, block_total) = survivor positions (absolute), their
// first slot in the row block_base. qs: the group's query signs in shared memory.
template <int W, int METHOD>
__device__ __forceinline__ void filter_compact(const u64* __restrict__ ksig, const u64* qs, int threshold,
                                               long long ctx, long long start, long long n, int G,
                                               unsigned int* __restrict__ tally, int* spos,
                                               unsigned int* warp_total, unsigned int& block_base,
                                               unsigned int& block_total) {
    constexpr int D = 64 * W;
    const long long bh = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    // keys are counted from a0: the region's start (natural layout), or for the frag layout the 32-key block
    // holding it (its rows are padded to whole blocks, and blocks are what a warp loads)
    const long long a0 = METHOD == LS_FRAG ? start & ~31ll : start;
    const u64* ks = ksig + (bh * (METHOD == LS_FRAG ? (ctx + 31) & ~31ll : ctx) + a0) * W;
    const long long wbase = (long long)blockIdx.x * LS_BLOCK_KEYS + (long long)warp * LS_KPT * 32;
    u32 words[LS_KPT];
    if (METHOD == LS_FRAG) {
        FragFilter<W, 1> f;
        f.init(qs, G, threshold);
        const long long lo = start - a0, hi = lo + n;  // the region, relative to a0
        frag_words<W, 1, LS_KPT>(f, frag_lane_ptr<W>(ks, wbase >> 5), ((hi + 31) >> 5) - (wbase >> 5),
                                        words);
#pragma unroll
        for (int j = 0; j < LS_KPT; ++j) words[j] &= frag_range_mask(wbase + 32 * j, lo, hi);
    } else if (METHOD > 0) {
        MmaFilter<W, METHOD == 2> f;
        f.init(qs, G, D, threshold);
        u32 a[LS_KPT][4];
#pragma unroll
        for (int j = 0; j < LS_KPT; ++j) f.load(ks, wbase + 32 * j, n, lane, a[j]);
#pragma unroll
        for (int j = 0; j < LS_KPT; ++j) words[j] = f.word(a[j], wbase + 32 * j, n, lane);
    } else {
        PopcFilter<W> f{qs, G, D, threshold};
        u64 kw[LS_KPT][W];
#pragma unroll
        for (int j = 0; j < LS_KPT; ++j) f.load(ks, wbase + 32 * j, n, lane, kw[j]);
#pragma unroll
        for (int j = 0; j < LS_KPT; ++j) words[j] = f.word(kw[j], wbase + 32 * j, n, lane);
    }
    compact_block<LS_WARPS, LS_KPT, true, false>(words, a0 + wbase, lane, warp, warp_total, spos, 0u, tally + bh,
                                                 block_total, block_base);
}

template <int W, int METHOD>
__device__ void select_body(const u64* __restrict__ ksig, const u64* __restrict__ qsig,
                            const int* __restrict__ thresholds, const float* __restrict__ q,
                            const bf16_t* __restrict__ keys, long long ctx, long long start, long long n,
                            int G, int cap, unsigned int* __restrict__ tally, int* __restrict__ idx,
                            float* __restrict__ scores) {
    constexpr int D = 64 * W;
    constexpr int LPS = D / 8;        // lanes per survivor row: 8 bf16 (16 bytes) each
    constexpr int SPW = 32 / LPS;     // survivor rows per warp at once
    __shared__ u64 qs[LS_MAX_G * 2];
    __shared__ float qf[LS_MAX_GA * D];
    __shared__ int spos[LS_BLOCK_KEYS];
    __shared__ unsigned int warp_total[LS_WARPS];
    __shared__ unsigned int block_base, block_total;
    grid_dep_wait();    // Config.chain: the kernels ahead of it (the previous layer's) done, their writes seen
    grid_dep_launch();  // the top-k may be scheduled once every block of this launch is running
    const long long bh = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) qf[i] = q[bh * G * D + i];
    load_query_signs(qs, qsig + bh * G * W, G, W);
    filter_compact<W, METHOD>(ksig, qs, thresholds[bh], ctx, start, n, G, tally, spos, warp_total, block_base,
                              block_total);
    const unsigned int total = block_total, base = block_base;
    // exact scores: LPS lanes per survivor row, LS_ROWS rows per lane group in flight
    const int sub = lane / LPS, part = lane % LPS;
    const bf16_t* krow = keys + bh * ctx * D;
    for (unsigned int i0 = warp * SPW * LS_ROWS; i0 < total; i0 += LS_WARPS * SPW * LS_ROWS) {
        uint4 raw[LS_ROWS];
        int pos[LS_ROWS];
#pragma unroll
        for (int u = 0; u < LS_ROWS; ++u) {
            const unsigned int i = i0 + u * SPW + sub;
            pos[u] = i < total ? spos[i] : -1;
            raw[u] = pos[u] >= 0 ? __ldg(reinterpret_cast<const uint4*>(krow + (long long)pos[u] * D) + part)
                                 : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < LS_ROWS; ++u) {
            const unsigned int i = i0 + u * SPW + sub;
            float kf[8];
            bf16x8_to_float(raw[u], kf);
            const unsigned int slot = base + i;
            for (int g = 0; g < G; ++g) {
                const float* qg = qf + g * D + part * 8;
                float acc = 0.f;
#pragma unroll
                for (int e = 0; e < 8; ++e) acc = fmaf(qg[e], kf[e], acc);
#pragma unroll
                for (int m = LPS / 2; m >= 1; m >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, m);
                if (part == 0 && i < total && slot < (unsigned int)cap) scores[(bh * G + g) * cap + slot] = acc;
            }
            if (part == 0 && i < total && slot < (unsigned int)cap) idx[bh * cap + slot] = pos[u];
        }
    }
}

template <int W, int METHOD>
__device__ void filter_body(const u64* __restrict__ ksig, const u64* __restrict__ qsig,
                            const int* __restrict__ thresholds, long long ctx, long long start, long long n,
                            int G, int cap, unsigned int* __restrict__ tally, int* __restrict__ idx) {
    __shared__ u64 qs[LS_MAX_G * 2];
    __shared__ int spos[LS_BLOCK_KEYS];
    __shared__ unsigned int warp_total[LS_WARPS];
    __shared__ unsigned int block_base, block_total;
    grid_dep_wait();  // Config.chain: the kernels ahead of it (the previous layer's) done, their writes seen
    const long long bh = blockIdx.y;
    load_query_signs(qs, qsig + bh * G * W, G, W);
    filter_compact<W, METHOD>(ksig, qs, thresholds[bh], ctx, start, n, G, tally, spos, warp_total, block_base,
                              block_total);
    const unsigned int total = block_total, base = block_base;
    for (unsigned int i = threadIdx.x; i < total; i += blockDim.x)
        if (base + i < (unsigned int)cap) idx[bh * cap + base + i] = spos[i];
}

#define LS_SELECT(W, METHOD, NAME)                                                                                   \
    extern "C" __global__ void __launch_bounds__(LS_WARPS * 32, LS_SELECT_MINB)                                  \
        ls_select_##NAME(const u64* ksig, const u64* qsig, const int* thresholds, const float* q,               \
                         const bf16_t* keys, long long ctx, long long start, long long n, int G, int cap,       \
                         unsigned int* tally, int* idx, float* scores) {                                        \
        select_body<W, METHOD>(ksig, qsig, thresholds, q, keys, ctx, start, n, G, cap, tally, idx, scores);        \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(LS_WARPS * 32, LS_SELECT_MINB)                                  \
        ls_filter_##NAME(const u64* ksig, const u64* qsig, const int* thresholds, long long ctx, long long start, \
                         long long n, int G, int cap, unsigned int* tally, int* idx) {                          \
        filter_body<W, METHOD>(ksig, qsig, thresholds, ctx, start, n, G, cap, tally, idx);                      \
    }
LS_SELECT(1, 0, popc_w1)
LS_SELECT(2, 0, popc_w2)
LS_SELECT(1, 1, mma_w1)
LS_SELECT(2, 1, mma_w2)
LS_SELECT(1, 2, mmax_w1)
LS_SELECT(2, 2, mmax_w2)
LS_SELECT(1, LS_FRAG, frag_w1)
LS_SELECT(2, LS_FRAG, frag_w2)

// ls_select2_r{ROWS}_*: the fused select with its latency chain shortened (the same answer as ls_select_*).
//   - each warp's sign loads go out first; the query and its signs reach shared memory while they are in flight
//     (ls_select loads those first and waits at a barrier before its first sign load);
//   - the block's slot claim (one atomicAdd on the row's tally) is issued after the compaction and waited for
//     only after the first round of survivor-row loads has gone out (ls_select waits for it before compacting);
//   - ROWS survivor rows per lane group in flight (8: a block's 128 rows at once, 102 on average at 5 %).
// Each block claims its slots with one atomic, so idx / scores hold the same survivors in the same per-block
// order as ls_select.
// ROWS survivor rows in flight per lane group, in registers; ROWS = 0: the block's survivor rows brought into two
// shared-memory buffers of SEL_ASYNC_BYTES by cp.async, up to two buffers' worth in flight at once with no
// registers held (the register form issues 64 rows a block, then waits for them before the next 64). Measured
// 2-13 us slower than ROWS = 4 at 128K-1M on the H200 (docs/gpu-kernels.md, sixth step): an option, not chosen
#define SEL_ASYNC_BYTES 16384

// LS_SIGN_BULK: thread 0 starts one bulk copy of `bytes` (a multiple of 16, both addresses 16-byte aligned) from
// global src into shared dst, completing on the mbarrier *bar (initialised here, single arrival); the block's
// next barrier publishes the initialisation, after which sign_bulk_wait returns once the bytes have landed.
__device__ __forceinline__ void sign_bulk_issue(void* dst, u64* bar, const void* src, long long bytes) {
#if LS_ARCH_BULK
    if (threadIdx.x == 0) {
        const u32 b = (u32)__cvta_generic_to_shared(bar), d = (u32)__cvta_generic_to_shared(dst);
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(b) : "memory");
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(b), "r"((u32)bytes) : "memory");
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(d),
                     "l"(src), "r"((u32)bytes), "r"(b)
                     : "memory");
    }
#endif
}
__device__ __forceinline__ void sign_bulk_wait(u64* bar) {
#if LS_ARCH_BULK
    const u32 b = (u32)__cvta_generic_to_shared(bar);
    asm volatile("{\n .reg .pred p;\n W: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], 0;\n @!p bra W;\n}" ::"r"(b)
                 : "memory");
#endif
}
template <int W, int METHOD, int ROWS>
__device__ void select2_body(const u64* __restrict__ ksig, const u64* __restrict__ qsig,
                             const int* __restrict__ thresholds, const float* __restrict__ q,
                             const bf16_t* __restrict__ keys, long long ctx, long long start, long long n,
                             int G, int cap, unsigned int* __restrict__ tally, int* __restrict__ idx,
                             float* __restrict__ scores) {
    constexpr int D = 64 * W;
    constexpr int LPS = D / 8;     // lanes per survivor row: 8 bf16 (16 bytes) each
    constexpr int SPW = 32 / LPS;  // survivor rows per warp at once
    __shared__ u64 qs[LS_MAX_G * 2];
    __shared__ __align__(16) float qf[LS_MAX_GA * D];
    // BULK: the block's signs by one bulk copy into sbuf, which the compaction's positions then reuse (every
    // sign is in registers before compact_block's first barrier, and slist is written only after it); not with
    // ROWS = 0, whose row buffers would take the block past 48 KB of static shared memory
    constexpr bool BULK = LS_SIGN_BULK && LS_ARCH_BULK && METHOD == 0 && W == 2 && ROWS != 0;
    __shared__ __align__(128) u64 sbuf[BULK ? LS_BLOCK_KEYS * W : 1];
    __shared__ __align__(8) u64 sbar[1];
    __shared__ int spos[BULK ? 1 : LS_BLOCK_KEYS];
    int* const slist = BULK ? reinterpret_cast<int*>(sbuf) : spos;  // the block's survivor positions
    __shared__ unsigned int warp_total[LS_WARPS];
    __shared__ unsigned int block_base, block_total;
    constexpr int BUF_ROWS = SEL_ASYNC_BYTES / (2 * D);  // rows a buffer (ROWS = 0)
    __shared__ __align__(16) bf16_t rowbuf[ROWS ? 8 : 2 * BUF_ROWS * D];
    constexpr int KS = D / 16;  // ROWS = LS_MMA_ROWS: k-steps of the row x query MMA
    __shared__ uint2 qfrag[ROWS == LS_MMA_ROWS ? 3 * KS * 32 : 1];
    grid_dep_wait();  // Config.chain: the kernels ahead of it (the previous layer's) done, their writes seen
    grid_dep_launch();  // the top-k may be scheduled once every block of this launch is running
    const long long bh = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const long long a0 = METHOD == LS_FRAG ? start & ~31ll : start;
    const u64* ks = ksig + (bh * (METHOD == LS_FRAG ? (ctx + 31) & ~31ll : ctx) + a0) * W;
    const long long wbase = (long long)blockIdx.x * LS_BLOCK_KEYS + (long long)warp * LS_KPT * 32;
    // 1. this warp's sign loads (they need nothing from the query)
    u32 words[LS_KPT];
    uint4 fv[LS_KPT];           // frag: this lane's 16 bytes of each 32-key block
    u64 kw[LS_KPT][W];          // popc
    u32 ma[LS_KPT][4];          // mma / mmax
    const long long lo = start - a0, hi = lo + n;  // frag: the region, relative to a0
    const long long nblk = ((hi + 31) >> 5) - (wbase >> 5);
    [[maybe_unused]] const int trow = (int)(blockIdx.y * gridDim.x + blockIdx.x);
    LS_GMARK(ls_trace_select, trow, 0);
    LS_MARK(ls_trace_select, trow, 1);
    if (METHOD == LS_FRAG) {
        const uint4* p = frag_lane_ptr<W>(ks, wbase >> 5);
#pragma unroll
        for (int j = 0; j < LS_KPT; ++j) fv[j] = j < nblk ? frag_ld(p + j * 16 * W) : make_uint4(0, 0, 0, 0);
    } else if (METHOD > 0) {
        MmaFilter<W, METHOD == 2> f;
#pragma unroll
        for (int j = 0; j < LS_KPT; ++j) f.load(ks, wbase + 32 * j, n, lane, ma[j]);
    } else if constexpr (BULK) {
        sign_bulk_issue(sbuf, sbar, ks + (long long)blockIdx.x * LS_BLOCK_KEYS * W,
                        min((long long)LS_BLOCK_KEYS, n - (long long)blockIdx.x * LS_BLOCK_KEYS) * W * 8);
    } else {
        PopcFilter<W> f{nullptr, G, D, 0};
#pragma unroll
        for (int j = 0; j < LS_KPT; ++j) f.load(ks, wbase + 32 * j, n, lane, kw[j]);
    }
    // 2. the query (scores) and its signs (filter) into shared memory meanwhile
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) qf[i] = q[bh * G * D + i];
    for (int i = threadIdx.x; i < G * W; i += blockDim.x) qs[i] = qsig[bh * G * W + i];
    const int threshold = thresholds[bh];
    __syncthreads();  // BULK: also publishes the mbarrier's initialisation
    if constexpr (BULK) {
        sign_bulk_wait(sbar);
        const ulonglong2* sb = reinterpret_cast<const ulonglong2*>(sbuf);
#pragma unroll
        for (int j = 0; j < LS_KPT; ++j) {  // keys past the region are masked by the filter's word
            const ulonglong2 v = sb[warp * LS_KPT * 32 + 32 * j + lane];
            kw[j][0] = v.x;
            kw[j][W - 1] = v.y;
        }
    }
    // 3. the survivor words
    if (METHOD == LS_FRAG) {
        FragFilter<W, 1> f;
        f.init(qs, G, threshold);
#pragma unroll
        for (int j = 0; j < LS_KPT; ++j)
            words[j] = j < nblk ? f.word(fv[j]) & frag_range_mask(wbase + 32 * j, lo, hi) : 0u;
    } else if (METHOD > 0) {
        MmaFilter<W, METHOD == 2> f;
        f.init(qs, G, D, threshold);
#pragma unroll
        for (int j = 0; j < LS_KPT; ++j) words[j] = f.word(ma[j], wbase + 32 * j, n, lane);
    } else {
        PopcFilter<W> f{qs, G, D, threshold};
#pragma unroll
        for (int j = 0; j < LS_KPT; ++j) words[j] = f.word(kw[j], wbase + 32 * j, n, lane);
    }
    if constexpr (ROWS == LS_MMA_ROWS) {
        // the query heads as the MMA's B fragments (8 columns, heads past G zero), each fp32 query split into three
        // bf16 parts whose sum carries its 24 bits (bf16 x bf16 products are exact, summed in fp32), in the
        // dimension order the row loads below give A: k-step 2 j + h, lane (n, t) takes dimensions
        // 8 (4 j + t) + 4 h + {0, 1} and {2, 3} (a sum over dimensions can take them in any order)
        for (int e = threadIdx.x; e < 3 * KS * 32; e += blockDim.x) {
            const int p = e / (KS * 32), st = (e / 32) % KS, n = (e % 32) >> 2, t = e & 3;
            const int d0 = 8 * (4 * (st >> 1) + t) + 4 * (st & 1);
            u32 w[4] = {0u, 0u, 0u, 0u};
            if (n < G)
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    float x = qf[n * D + d0 + i];
                    for (int pp = 0; pp < p; ++pp) x -= __uint_as_float(bf16_rn(x) << 16);
                    w[i] = bf16_rn(x);
                }
            qfrag[e] = make_uint2(w[0] | (w[1] << 16), w[2] | (w[3] << 16));
        }
    }
    // 4. block-local compaction (no slot claimed yet; its barriers publish qfrag)
    LS_MARK(ls_trace_select, trow, 2);  // the query in shared memory (the signs need not have arrived)
    compact_block<LS_WARPS, LS_KPT, false, false>(words, a0 + wbase, lane, warp, warp_total, slist, 0u, nullptr,
                                                  block_total, block_base);
    const unsigned int total = block_total;
    LS_MARK(ls_trace_select, trow, 3);  // filtered and compacted
    if (total == 0) return;  // block-uniform
    // 5. claim the slots; the first round of row loads goes out before anyone waits for the claim
    unsigned int claim = 0;
    if (threadIdx.x == 0) claim = atomicAdd(tally + bh, total);
    const int sub = lane / LPS, part = lane % LPS;
    const bf16_t* krow = keys + bh * ctx * D;
    if constexpr (ROWS == 0) {
        // rows [c BUF_ROWS, (c + 1) BUF_ROWS) into buffer c % 2, LPS 16-byte pieces a row; every thread commits
        // one group a chunk (empty or not), so wait_group counts the same chunks in every thread
        const unsigned int chunks = (total + BUF_ROWS - 1) / BUF_ROWS;
        auto issue = [&](unsigned int c) {
            const unsigned int r0 = c * BUF_ROWS, nr = min(total - r0, (unsigned int)BUF_ROWS);
            bf16_t* buf = rowbuf + (c & 1) * BUF_ROWS * D;
            for (unsigned int p = threadIdx.x; p < nr * LPS; p += blockDim.x) {
                const unsigned int r = p / LPS, pc = p % LPS;
                cp_async16(buf + r * D + pc * 8, krow + (long long)slist[r0 + r] * D + pc * 8);
            }
            cp_async_commit();
        };
        issue(0);
        if (chunks > 1) issue(1);
        if (threadIdx.x == 0) block_base = claim;
        constexpr unsigned int LG = LS_WARPS * SPW;  // lane groups a block
        const unsigned int lg = warp * SPW + sub;
        for (unsigned int c = 0; c < chunks; ++c) {
            if (c + 1 < chunks)
                cp_async_wait<1>();
            else
                cp_async_wait<0>();
            __syncthreads();  // every thread's pieces of chunk c (and block_base) visible
            if (c == 0) LS_MARK(ls_trace_select, trow, 4);  // slots claimed, the first chunk in
            const unsigned int base = block_base, r0 = c * BUF_ROWS, nr = min(total - r0, (unsigned int)BUF_ROWS);
            const bf16_t* buf = rowbuf + (c & 1) * BUF_ROWS * D;
            for (unsigned int j = 0; j < nr; j += LG) {  // warp-uniform: row_dot shuffles over the whole warp
                const unsigned int r = j + lg;
                const uint4 raw = r < nr ? reinterpret_cast<const uint4*>(buf + r * D)[part] : make_uint4(0, 0, 0, 0);
                float kf[8];
                bf16x8_to_float(raw, kf);
                const unsigned int slot = base + r0 + r;
                const bool keep = r < nr && slot < (unsigned int)cap;
                for (int g = 0; g < G; ++g) {
                    const float acc = row_dot<LPS>(qf + g * D + part * 8, kf);
                    if (part == 0 && keep) scores[(bh * G + g) * cap + slot] = acc;
                }
                if (part == 0 && keep) idx[bh * cap + slot] = slist[r0 + r];
            }
            if (c + 2 < chunks) {
                __syncthreads();  // buffer c % 2 read by every lane group
                issue(c + 2);
            }
        }
    } else if constexpr (ROWS == LS_MMA_ROWS) {
        // tiles of 16 survivor rows a warp on the tensor cores: lane (r, t) = (lane / 4, lane % 4) loads 16-byte
        // chunks 4 j + t of the tile's rows r and r + 8 (64 contiguous bytes a row from each lane quad), which
        // are its A fragments for k-steps 2 j and 2 j + 1; scores of rows r, r + 8 for heads 2 t, 2 t + 1 come out
        constexpr int NCH = D / 32;
        const int r = lane >> 2, t = lane & 3;
        const unsigned int tiles = (total + 15) / 16;
        uint4 ra[NCH], rb[NCH];
        auto load = [&](unsigned int tl) {
            const unsigned int i = tl * 16 + r;
            const int pa = i < total ? slist[i] : -1, pb = i + 8 < total ? slist[i + 8] : -1;
            const uint4* rowa = reinterpret_cast<const uint4*>(krow + (long long)max(pa, 0) * D) + t;
            const uint4* rowb = reinterpret_cast<const uint4*>(krow + (long long)max(pb, 0) * D) + t;
#pragma unroll
            for (int j = 0; j < NCH; ++j) {
                ra[j] = pa >= 0 ? __ldg(rowa + 4 * j) : make_uint4(0, 0, 0, 0);
                rb[j] = pb >= 0 ? __ldg(rowb + 4 * j) : make_uint4(0, 0, 0, 0);
            }
        };
        unsigned int tile = warp;
        if (tile < tiles) load(tile);
        if (threadIdx.x == 0) block_base = claim;
        __syncthreads();
        LS_MARK(ls_trace_select, trow, 4);  // slots claimed
        const unsigned int base = block_base;
        while (tile < tiles) {  // warp-uniform
            float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int j = 0; j < NCH; ++j)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const u32 a0 = h ? ra[j].z : ra[j].x, a2 = h ? ra[j].w : ra[j].y;
                    const u32 a1 = h ? rb[j].z : rb[j].x, a3 = h ? rb[j].w : rb[j].y;
#pragma unroll 1  // unrolled, ptxas keeps every part's fragments live and spills (180 bytes, 64 registers)
                    for (int p = 0; p < 3; ++p) {
                        const uint2 b = qfrag[(p * KS + 2 * j + h) * 32 + lane];
                        mma_bf16(acc, a0, a1, a2, a3, b.x, b.y);
                    }
                }
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const unsigned int i = tile * 16 + r + (e >> 1) * 8, slot = base + i;
                const int n = 2 * t + (e & 1);
                if (i < total && slot < (unsigned int)cap) {
                    if (n < G) scores[(bh * G + n) * cap + slot] = acc[e];
                    if (e == 0 || e == 2)
                        if (t == 0) idx[bh * cap + slot] = slist[i];
                }
            }
            tile += LS_WARPS;
            if (tile < tiles) load(tile);
        }
    } else {
        constexpr unsigned int STEP = LS_WARPS * SPW * ROWS;
        uint4 raw[ROWS];
        int pos[ROWS];
        unsigned int i0 = warp * SPW * ROWS;
        auto load = [&](unsigned int first) {
#pragma unroll
            for (int u = 0; u < ROWS; ++u) {
                const unsigned int i = first + u * SPW + sub;
                pos[u] = i < total ? slist[i] : -1;
            }
#pragma unroll
            for (int u = 0; u < ROWS; ++u)
                raw[u] = pos[u] >= 0 ? __ldg(reinterpret_cast<const uint4*>(krow + (long long)pos[u] * D) + part)
                                     : make_uint4(0, 0, 0, 0);
        };
        load(i0);
        if (threadIdx.x == 0) block_base = claim;
        __syncthreads();
        LS_MARK(ls_trace_select, trow, 4);  // slots claimed
        const unsigned int base = block_base;
        while (true) {
#pragma unroll
            for (int u = 0; u < ROWS; ++u) {
                const unsigned int i = i0 + u * SPW + sub;
                float kf[8];
                bf16x8_to_float(raw[u], kf);
                const unsigned int slot = base + i;
                const bool keep = i < total && slot < (unsigned int)cap;
                for (int g = 0; g < G; ++g) {
                    const float acc = row_dot<LPS>(qf + g * D + part * 8, kf);
                    if (part == 0 && keep) scores[(bh * G + g) * cap + slot] = acc;
                }
                if (part == 0 && keep) idx[bh * cap + slot] = pos[u];
            }
            i0 += STEP;
            if (i0 >= total) break;  // warp-uniform
            load(i0);
        }
    }
    LS_MARK(ls_trace_select, trow, 5);  // thread 0's rows scored
    LS_GMARK(ls_trace_select, trow, 6);
}

#define LS_SELECT2(W, METHOD, NAME, ROWS)                                                                          \
    extern "C" __global__ void __launch_bounds__(LS_WARPS * 32, LS_SELECT_MINB)                                  \
        ls_select2_r##ROWS##_##NAME(const u64* ksig, const u64* qsig, const int* thresholds, const float* q,    \
                                    const bf16_t* keys, long long ctx, long long start, long long n, int G,     \
                                    int cap, unsigned int* tally, int* idx, float* scores) {                    \
        select2_body<W, METHOD, ROWS>(ksig, qsig, thresholds, q, keys, ctx, start, n, G, cap, tally, idx, scores); \
    }
#define LS_SELECT2_ALL(ROWS)                 \
    LS_SELECT2(1, 0, popc_w1, ROWS)          \
    LS_SELECT2(2, 0, popc_w2, ROWS)          \
    LS_SELECT2(1, 1, mma_w1, ROWS)           \
    LS_SELECT2(2, 1, mma_w2, ROWS)           \
    LS_SELECT2(1, 2, mmax_w1, ROWS)          \
    LS_SELECT2(2, 2, mmax_w2, ROWS)          \
    LS_SELECT2(1, LS_FRAG, frag_w1, ROWS)    \
    LS_SELECT2(2, LS_FRAG, frag_w2, ROWS)
LS_SELECT2_ALL(4)  // 8 rows in flight: 64 registers with spills, slower everywhere (measured, dropped)
LS_SELECT2_ALL(0)  // the rows by cp.async into shared memory
LS_SELECT2_ALL(LS_MMA_ROWS)  // the rows' scores on the tensor cores, 16 rows a warp

// Exact scores of every kept survivor of row bh = blockIdx.y (slots [0, min(tally, cap)) of idx), grid-strided
// over blockIdx.x: LPS lanes per bf16 key row, SCORE_ROWS rows per lane group with their loads issued together
// (the positions first, then every row), so a block has 128 scattered rows in flight.
#define SCORE_THREADS 256
#define SCORE_ROWS 8

template <int D>
__device__ void score_body(const float* __restrict__ q, const bf16_t* __restrict__ keys, long long ctx, int G,
                           int cap, const unsigned int* __restrict__ tally, const int* __restrict__ idx,
                           float* __restrict__ scores) {
    constexpr int LPS = D / 8, NSUB = SCORE_THREADS / LPS, PER = NSUB * SCORE_ROWS;
    __shared__ __align__(16) float qf[LS_MAX_GA * D];
    grid_dep_launch();  // the top-k may be scheduled once every block of this launch is running
    const long long bh = blockIdx.y;
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) qf[i] = q[bh * G * D + i];
    __syncthreads();
    const int n = min((int)tally[bh], cap);
    const int sub = threadIdx.x / LPS, part = threadIdx.x % LPS;
    const bf16_t* kb = keys + bh * ctx * D;
    const int* ix = idx + bh * cap;
    for (int base = blockIdx.x * PER; base < n; base += gridDim.x * PER) {  // block-uniform bounds
        int pos[SCORE_ROWS];
        uint4 raw[SCORE_ROWS];
#pragma unroll
        for (int u = 0; u < SCORE_ROWS; ++u) {
            const int i = base + sub + NSUB * u;
            pos[u] = i < n ? __ldg(ix + i) : -1;
        }
#pragma unroll
        for (int u = 0; u < SCORE_ROWS; ++u)
            raw[u] = pos[u] >= 0 ? __ldg(reinterpret_cast<const uint4*>(kb + (long long)pos[u] * D) + part)
                                 : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < SCORE_ROWS; ++u) {
            const int i = base + sub + NSUB * u;
            float kf[8];
            bf16x8_to_float(raw[u], kf);
            for (int g = 0; g < G; ++g) {
                const float acc = row_dot<LPS>(qf + g * D + part * 8, kf);
                if (part == 0 && i < n) scores[(bh * G + g) * cap + i] = acc;
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(SCORE_THREADS)
    ls_score_d64(const float* q, const bf16_t* keys, long long ctx, int G, int cap, const unsigned int* tally,
                 const int* idx, float* scores) {
    score_body<64>(q, keys, ctx, G, cap, tally, idx, scores);
}
extern "C" __global__ void __launch_bounds__(SCORE_THREADS)
    ls_score_d128(const float* q, const bf16_t* keys, long long ctx, int G, int cap, const unsigned int* tally,
                  const int* idx, float* scores) {
    score_body<128>(q, keys, ctx, G, cap, tally, idx, scores);
}

// ------------------------------------------------------------------------------------------------ merge

// Partial softmaxes per (row bh, query head g): band_items band partials (items [0, band_items), every head),
// then pick_parts pick partials per head (items band_items + g pick_parts + [0, pick_parts)), each (max m,
// sum l, unnormalised o[D]) in part_ml [BH, items, G, 2] and part_o [BH, items, G, D]. Counters in
// done [BH, G + 1]: one per head (the block that completes a head's partials merges it) and one per row (the
// block that merges the row's last head moves the survivor tally to count[bh] and zeroes it: by then every
// top-k block of the row has read it). Every counter is reset by the block that completes it, so a layer needs
// no reset launch.

// The same counter read relaxed: it orders nothing, so the reading thread's later loads are not held behind it
// (ld.acquire kept thread 0's value-row loads, and with them the block's first barrier, waiting an L2 round trip).
// A thread that then acts on the count fences (__threadfence) before it or its block reads what was released.
__device__ __forceinline__ unsigned int ld_relaxed(const unsigned int* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
    unsigned int v;
    asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
#else
    return *(volatile const unsigned int*)p;
#endif
}

// Counts this block's partial of head g; true for the block that completed the head (it then merges).
__device__ __forceinline__ bool completes_head(unsigned int* done, long long bh, int g, int G, int nparts) {
    return atomicAdd(done + bh * (G + 1) + g, 1u) == (unsigned int)nparts - 1u;
}

// out[bh, g] = sum e^(m_i - M) o_i / sum e^(m_i - M) l_i, lse[bh, g] = M + log(sum e^(m_i - M) l_i) over the
// head's partials. Any block size that is a multiple of D; shared scratch: ml [2 nparts], red [blockDim.x],
// stat [2] floats. own >= 0: partial number own (0 .. nparts - 1, band first) is the caller's, never written out:
// (own_m, own_l) and own_o [D] (shared memory) instead. Each thread's first MERGE_PRE o values are loaded with
// the (m, l) pairs, so the partials cost one round trip to L2; the row's counter is added to at the start and its
// answer used at the end (the tally read with it: the select finished before any partial existed).
#define MERGE_PRE 4
template <int D>
__device__ void merge_head(long long bh, int g, int G, int items, int band_items, int pick_parts,
                           const float* __restrict__ part_ml, const float* __restrict__ part_o,
                           unsigned int* __restrict__ done, unsigned int* __restrict__ tally,
                           unsigned int* __restrict__ count, float* __restrict__ out, float* __restrict__ lse,
                           float* ml, float* red, float* stat, int own = -1, float own_m = 0.f, float own_l = 0.f,
                           const float* own_o = nullptr) {
    const int nparts = band_items + pick_parts;
    unsigned int row_merged = 0u, row_tally = 0u;
    if (threadIdx.x == 0) {
        done[bh * (G + 1) + g] = 0u;  // ready for the next launch
        row_merged = atomicAdd(done + bh * (G + 1) + G, 1u);
        row_tally = __ldcg(tally + bh);
    }
    const int H = blockDim.x / D;  // thread groups splitting the partials of each output element
    const int dd = threadIdx.x % D, h = threadIdx.x / D;
    auto at = [&](int j) {  // partial j's (row, item, head) index: band items first, then this head's picks'
        return (bh * items + (j < band_items ? j : band_items + g * pick_parts + (j - band_items))) * G + g;
    };
    auto o_of = [&](int j) { return j == own ? own_o[dd] : __ldcg(part_o + at(j) * D + dd); };
    float pre[MERGE_PRE];
#pragma unroll
    for (int u = 0; u < MERGE_PRE; ++u) {
        const int j = h + u * H;
        pre[u] = j < nparts ? o_of(j) : 0.f;
    }
    for (int j = threadIdx.x; j < nparts; j += blockDim.x) {
        const float2 v =
            j == own ? make_float2(own_m, own_l) : __ldcg(reinterpret_cast<const float2*>(part_ml) + at(j));
        ml[2 * j] = v.x;
        ml[2 * j + 1] = v.y;
    }
    __syncthreads();
    if (threadIdx.x < 32) {  // M = max m, z = sum e^(m - M) l; the weights e^(m - M) replace m in place
        const int l = threadIdx.x;
        float m = LS_NEG_INF;
        for (int j = l; j < nparts; j += 32) m = fmaxf(m, ml[2 * j]);
#pragma unroll
        for (int o = 16; o >= 1; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        float z = 0.f;
        for (int j = l; j < nparts; j += 32) {
            const float mi = ml[2 * j];
            const float w = mi == LS_NEG_INF ? 0.f : __expf(mi - m);
            ml[2 * j] = w;
            z += w * ml[2 * j + 1];
        }
#pragma unroll
        for (int o = 16; o >= 1; o >>= 1) z += __shfl_xor_sync(0xffffffffu, z, o);
        if (l == 0) {
            stat[0] = m;
            stat[1] = z;
        }
    }
    __syncthreads();
    float a = 0.f;
#pragma unroll
    for (int u = 0; u < MERGE_PRE; ++u) {
        const int j = h + u * H;
        if (j < nparts) a += ml[2 * j] * pre[u];
    }
#pragma unroll 4
    for (int j = h + MERGE_PRE * H; j < nparts; j += H) a += ml[2 * j] * o_of(j);
    red[h * D + dd] = a;
    __syncthreads();
    if (threadIdx.x < D) {
        float t = 0.f;
        for (int u = 0; u < H; ++u) t += red[u * D + threadIdx.x];
        out[(bh * G + g) * D + threadIdx.x] = t / stat[1];
        if (threadIdx.x == 0) lse[bh * G + g] = stat[0] + logf(stat[1]);
    }
    if (threadIdx.x == 0 && row_merged == (unsigned int)G - 1u) {  // the row's last head: every tally reader is done
        count[bh] = row_tally;
        tally[bh] = 0u;
        done[bh * (G + 1) + G] = 0u;
    }
    __syncthreads();  // the scratch is free again
}

// ------------------------------------------------------------------------------------------------ top-k

// Exact top-k per (user, KV head, query head) = blockIdx.x over its n = min(count, cap) survivors' scores:
// radix select on the scores' order-preserving uint32 images, 8 bits a pass from the top. The images are
// cached in dynamic shared memory when n <= smem_keys (the passes then never touch L2); per-warp histograms
// (scores cluster in few bins: one shared histogram would serialise the atomics), filled either through
// __match_any_sync (mode 0) or plain shared atomics (mode 1); one warp finds the bin by a
// shuffle scan; a pass stops early once the k-th element's bin is exactly what is still needed. Writes
// pick_pos[bhg, :kk], pick_score[bhg, :kk], pick_count[bhg] = kk = min(k, n); ties at the k-th score are
// taken in no particular order.
#define TOPK_THREADS 1024
#define TOPK_WARPS (TOPK_THREADS / 32)

// What a top-k block needs to attend over its own picks.
struct PickAttn {
    const bf16_t* vals;  // [BH, ctx, D] bf16
    long long ctx;
    int items, band_items, pick_parts;
    float* part_ml;
    float* part_o;
    unsigned int* done;
    unsigned int* tally;
    unsigned int* count;
    float* out;
    float* lse;
};

// Block-wide max (MAX) or sum of v, returned to every thread; wred: TOPK_WARPS floats of shared memory.
template <bool MAX>
__device__ __forceinline__ float block_reduce(float v, float* wred) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) {
        const float t = __shfl_xor_sync(0xffffffffu, v, o);
        v = MAX ? fmaxf(v, t) : v + t;
    }
    if (lane == 0) wred[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? wred[lane] : (MAX ? LS_NEG_INF : 0.f);
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) {
        const float t = __shfl_xor_sync(0xffffffffu, v, o);
        v = MAX ? fmaxf(v, t) : v + t;
    }
    __syncthreads();  // wred is free again
    return v;
}

// The picks' share of the attention, computed by the top-k block that chose them, so the picks' value rows are
// read while the block is still resident instead of by a further launch: P picks (positions pk_pos, scores
// pk_sc, shared memory) of head g of row bh give one partial (max m, sum l, unnormalised o[D]) at item
// band_items + g pick_parts + part; the block that completes the head's partials merges them (merge_head).
// pmax: the picks' largest score when the caller knows it (the selection's largest candidate; any value at or
// above the largest gives the same answer), else -inf. The first round of value-row loads goes out before the
// weights are computed (they need only the positions), and each lane group keeps U rows in flight throughout.
// The head's counter is read (relaxed) before the value rows: when every other partial was counted by then, this
// block is the last and merges at once with its own partial from shared memory (a fence, no write or atomic);
// otherwise it writes its partial and counts it. scratch: TOPK_WARPS x 256 floats of shared memory no longer in
// use.
template <int D>
__device__ void topk_attend(const PickAttn& a, int P, const int* pk_pos, float* pk_sc, float* scratch,
                            long long bh, int g, int G, int part, float pmax = LS_NEG_INF) {
    constexpr int LPS = D / 8, NSUB = TOPK_THREADS / LPS, U = 8, H = TOPK_THREADS / D;
    __shared__ float wred[TOPK_WARPS];
    __shared__ float stat[2];
    __shared__ unsigned int s_last;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nparts = a.band_items + a.pick_parts;
    unsigned int counted = 0u;  // thread 0: the head's partials counted before this block's value rows
    // relaxed, fenced below when acted on (an ld.acquire here measured the same: eleventh step)
    if (threadIdx.x == 0) counted = ld_relaxed(a.done + bh * (G + 1) + g);
    [[maybe_unused]] const int trow = (int)(bh * G + g);
    // LPS lanes per value row, U rows per lane group in flight; the first U go out now
    const int sub = threadIdx.x / LPS, pt = threadIdx.x % LPS;
    const bf16_t* vb = a.vals + bh * a.ctx * D;
    auto row = [&](int j) {
        return j < P ? __ldg(reinterpret_cast<const uint4*>(vb + (long long)pk_pos[j] * D) + pt)
                     : make_uint4(0, 0, 0, 0);
    };
    uint4 raw[U];
#pragma unroll
    for (int u = 0; u < U; ++u) raw[u] = row(sub + u * NSUB);
    float m = pmax;
    if (!(m > LS_NEG_INF)) {  // block-uniform
        for (int j = threadIdx.x; j < P; j += blockDim.x) m = fmaxf(m, pk_sc[j]);
        m = block_reduce<true>(m, wred);
    }
    float z = 0.f;
    for (int j = threadIdx.x; j < P; j += blockDim.x) {
        const float p = __expf(pk_sc[j] - m);
        pk_sc[j] = p;
        z += p;
    }
    const float l = block_reduce<false>(z, wred);  // its barriers also publish the weights
    LS_MARK_IF(part == 0, ls_trace_topk, trow, 10);  // the picks' weights
    float o[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int j0 = sub; j0 < P; j0 += NSUB * U) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int j = j0 + u * NSUB;
            if (j < P) {
                float vf[8];
                bf16x8_to_float(raw[u], vf);
                const float w = pk_sc[j];
#pragma unroll
                for (int e = 0; e < 8; ++e) o[e] = fmaf(w, vf[e], o[e]);
            }
            raw[u] = row(j + NSUB * U);  // the next round's row in this register
        }
    }
    LS_MARK_IF(part == 0, ls_trace_topk, trow, 11);  // thread 0's value rows in and summed
    // sum over the lane groups of a warp, then over the warps
#pragma unroll
    for (int off = LPS; off < 32; off <<= 1)
#pragma unroll
        for (int e = 0; e < 8; ++e) o[e] += __shfl_xor_sync(0xffffffffu, o[e], off);
    if (lane < LPS) {
        float4* dst = reinterpret_cast<float4*>(scratch + warp * D + pt * 8);
        dst[0] = make_float4(o[0], o[1], o[2], o[3]);
        dst[1] = make_float4(o[4], o[5], o[6], o[7]);
    }
    __syncthreads();
    const int dd = threadIdx.x % D, h = threadIdx.x / D;
    float t = 0.f;
    for (int w = h; w < TOPK_WARPS; w += H) t += scratch[w * D + dd];
    scratch[TOPK_WARPS * D + h * D + dd] = t;
    if (threadIdx.x == 0) {
        s_last = counted == (unsigned int)nparts - 1u ? 1u : 0u;
        if (s_last) __threadfence();  // with the relaxed read: acquire (the others' partials) for the block
    }
    __syncthreads();
    const int own = a.band_items + part;  // this partial's number among the head's
    const float mo = P > 0 ? m : LS_NEG_INF;
    float* own_o = scratch + TOPK_WARPS * D + H * D;  // past what merge_head's red uses
    float s2 = 0.f;
    if (threadIdx.x < D) {
#pragma unroll
        for (int u = 0; u < H; ++u) s2 += scratch[TOPK_WARPS * D + u * D + threadIdx.x];
    }
    if (s_last) {  // every other partial is in: merge now, this one from shared memory
        LS_SET_IF(part == 0, ls_trace_topk, trow, 12, 1);
        if (threadIdx.x < D) own_o[threadIdx.x] = s2;
        __syncthreads();
        merge_head<D>(bh, g, G, a.items, a.band_items, a.pick_parts, a.part_ml, a.part_o, a.done, a.tally, a.count,
                      a.out, a.lse, pk_sc, scratch, stat, own, mo, l, own_o);
        return;
    }
    const long long slot = (bh * a.items + a.band_items + g * a.pick_parts + part) * G + g;
    if (threadIdx.x < D) a.part_o[slot * D + threadIdx.x] = s2;
    if (threadIdx.x == 0) {
        a.part_ml[slot * 2] = mo;
        a.part_ml[slot * 2 + 1] = l;
    }
    // release (this block's partial) and acquire (the others', when it completes the head) by thread 0 alone,
    // ordered for the whole block by the barriers around it (a fence in all 1,024 threads cost more)
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        const bool last = completes_head(a.done, bh, g, G, nparts);
        if (last) __threadfence();
        s_last = last ? 1u : 0u;
        LS_SET_IF(part == 0, ls_trace_topk, trow, 12, last ? 2 : 3);
    }
    __syncthreads();
    if (!s_last) return;
    merge_head<D>(bh, g, G, a.items, a.band_items, a.pick_parts, a.part_ml, a.part_o, a.done, a.tally, a.count,
                  a.out, a.lse, pk_sc, scratch, stat);
}


// Warp 0's step of the radix select: lane L holds the counts h[] of bins 255 - 8L down to 248 - 8L (mine: their
// sum). A scan from the top finds the bin holding the need-th largest key and narrows the shared selection
// to it; done when every key of that bin is needed, so no later pass can split it.
__device__ __forceinline__ void narrow_to_bin(const unsigned int (&h)[8], unsigned int mine, int lane, int shift,
                                              u32 prefix, u32 mask, u32& s_prefix, u32& s_mask, u32& s_need,
                                              u32& s_done) {
    unsigned int incl = mine;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned int v = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += v;
    }
    const u32 need = s_need;
    const unsigned int excl = incl - mine;
    const unsigned int cross = __ballot_sync(0xffffffffu, excl < need && need <= incl);
    if (lane == __ffs(cross) - 1) {
        unsigned int above = excl, hsel = h[7];
        int d = 248 - 8 * lane;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            if (above + h[j] >= need) {
                d = 255 - 8 * lane - j;
                hsel = h[j];
                break;
            }
            above += h[j];
        }
        s_prefix = prefix | ((u32)d << shift);
        s_mask = mask | (0xffu << shift);
        s_need = need - above;
        s_done = (hsel == need - above) ? 1u : 0u;
    }
}

// One radix pass's reduction, after the block has filled its per-warp histograms: the first NW of them summed
// into total[], then warp 0 (lane L owning bins 255 - 8L down to 248 - 8L) narrows the selection to the bin
// of the need-th largest key. Every thread of the block calls it; s_* are visible to all when it returns.
template <int NW>
__device__ __forceinline__ void radix_step(const unsigned int (&hist)[TOPK_WARPS][256], unsigned int* total,
                                           int warp, int lane, int shift, u32 prefix, u32 mask, u32& s_prefix,
                                           u32& s_mask, u32& s_need, u32& s_done) {
    if (threadIdx.x < 256) {
        unsigned int t = 0;
#pragma unroll 8
        for (int w = 0; w < NW; ++w) t += hist[w][threadIdx.x];
        total[threadIdx.x] = t;
    }
    __syncthreads();
    if (warp == 0) {
        unsigned int h[8], mine = 0;
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            h[e] = total[255 - 8 * lane - e];
            mine += h[e];
        }
        narrow_to_bin(h, mine, lane, shift, prefix, mask, s_prefix, s_mask, s_need, s_done);
    }
    __syncthreads();
}

__device__ __forceinline__ u32 order_key(float f) {
    const u32 u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The order-preserving images of n scores into shared memory, 8 loads in flight per thread.
__device__ __forceinline__ void cache_images(u32* __restrict__ dst, const float* __restrict__ sc, int n) {
    for (int i0 = 0; i0 < n; i0 += 8 * TOPK_THREADS) {
        u32 v[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
            const int i = i0 + u * TOPK_THREADS + threadIdx.x;
            v[u] = i < n ? order_key(__ldg(sc + i)) : 0u;
        }
#pragma unroll
        for (int u = 0; u < 8; ++u) {
            const int i = i0 + u * TOPK_THREADS + threadIdx.x;
            if (i < n) dst[i] = v[u];
        }
    }
}

// Pick number `slot` is the survivor at i: written out, and kept in shared memory when the block attends.
template <bool ATTEND>
__device__ __forceinline__ void put_pick(int slot, int i, const int* __restrict__ ix, const float* __restrict__ sc,
                                         int* __restrict__ out_pos, float* __restrict__ out_score, int* pk_pos,
                                         float* pk_sc) {
    const int pos = ix[i];
    const float v = sc[i];
    out_pos[slot] = pos;
    out_score[slot] = v;
    if constexpr (ATTEND) {
        pk_pos[slot] = pos;
        pk_sc[slot] = v;
    }
}

// ATTEND: the block also attends over its picks (topk_attend); else it only selects them.
template <int D, bool ATTEND>
__device__ void topk_body(const unsigned int* __restrict__ tally, const int* __restrict__ idx,
                          const float* __restrict__ scores, int G, int cap, int k, int smem_keys, int mode,
                          int* __restrict__ pick_pos, float* __restrict__ pick_score, int* __restrict__ pick_count,
                          const PickAttn& attn) {
    extern __shared__ u32 images[];  // smem_keys entries: the score images
    __shared__ unsigned int hist[TOPK_WARPS][256];
    __shared__ unsigned int total[256];
    __shared__ u32 s_prefix, s_mask, s_need, s_done;
    __shared__ unsigned int s_above, s_ties;
    __shared__ int pk_pos[1024];  // the picks again, for topk_attend
    __shared__ float pk_sc[1024];
    grid_dep_wait();  // the select's survivors (programmatic launch)
    grid_dep_launch();
    const int bhg = blockIdx.x, bh = bhg / G, g = bhg % G;
    const int n = min((int)tally[bh], cap);
    const int kk = min(k, n);
    const float* sc = scores + (long long)bhg * cap;
    const int* ix = idx + (long long)bh * cap;
    int* out_pos = pick_pos + (long long)bhg * k;
    float* out_score = pick_score + (long long)bhg * k;
    if (threadIdx.x == 0) pick_count[bhg] = kk;
    if (n <= k) {
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            put_pick<ATTEND>(i, i, ix, sc, out_pos, out_score, pk_pos, pk_sc);
        if constexpr (ATTEND) {
            __syncthreads();
            topk_attend<D>(attn, n, pk_pos, pk_sc, reinterpret_cast<float*>(&hist[0][0]), bh, g, G, 0);
        }
        return;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const bool cached = n <= smem_keys;
    if (cached) cache_images(images, sc, n);
    if (threadIdx.x == 0) {
        s_prefix = 0;
        s_mask = 0;
        s_need = (u32)k;
        s_done = 0;
    }
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < TOPK_WARPS * 256; i += blockDim.x) (&hist[0][0])[i] = 0;
        __syncthreads();
        const u32 prefix = s_prefix, mask = s_mask;
        for (int i0 = 0; i0 < n; i0 += blockDim.x) {
            const int i = i0 + threadIdx.x;
            bool in = false;
            u32 digit = 0;
            if (i < n) {
                const u32 key = cached ? images[i] : order_key(__ldg(sc + i));
                in = (key & mask) == prefix;
                digit = (key >> shift) & 0xffu;
            }
            if (mode == 0) {  // warp-aggregated: one add per distinct digit in the warp
                const unsigned int act = __ballot_sync(0xffffffffu, in);
                if (in) {
                    const unsigned int peers = __match_any_sync(act, digit);
                    if (lane == __ffs(peers) - 1) hist[warp][digit] += __popc(peers);
                }
            } else if (in) {  // native shared integer atomics, conflicts replayed by the hardware
                atomicAdd(&hist[warp][digit], 1u);
            }
        }
        __syncthreads();
        radix_step<TOPK_WARPS>(hist, total, warp, lane, shift, prefix, mask, s_prefix, s_mask, s_need, s_done);
        if (s_done) break;
    }
    // collect: keys whose masked image beats the prefix are in; equal ones fill what is still needed
    const u32 prefix = s_prefix, mask = s_mask, need = s_need;
    if (threadIdx.x == 0) {
        s_above = 0;
        s_ties = 0;
    }
    __syncthreads();
    const u32 n_above = (u32)k - need;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const u32 m = (cached ? images[i] : order_key(__ldg(sc + i))) & mask;
        int slot = -1;
        if (m > prefix) {
            slot = (int)atomicAdd(&s_above, 1u);
        } else if (m == prefix) {
            const u32 t = atomicAdd(&s_ties, 1u);
            if (t < need) slot = (int)(n_above + t);
        }
        if (slot >= 0) put_pick<ATTEND>(slot, i, ix, sc, out_pos, out_score, pk_pos, pk_sc);
    }
    if constexpr (ATTEND) {
        __syncthreads();
        topk_attend<D>(attn, kk, pk_pos, pk_sc, reinterpret_cast<float*>(&hist[0][0]), bh, g, G, 0);
    }
}

#define LS_TOPK_ARGS                                                                                             \
    const unsigned int *tally, const int *idx, const float *scores, int G, int cap, int k, int smem_keys,          \
        int *pick_pos, float *pick_score, int *pick_count, const bf16_t *vals, long long ctx, int items,            \
        int band_items, int pick_parts, float *part_ml, float *part_o, unsigned int *done, unsigned int *count,       \
        float *out, float *lse
#define LS_PICK_ATTN {vals, ctx, items, band_items, pick_parts, part_ml, part_o, done, \
                      const_cast<unsigned int*>(tally), count, out, lse}

// mode: the histogram adds through __match_any_sync (0) or shared atomics (1). ls_topk_d*: selection and the
// picks' attention; ls_topk_select: selection alone (the attention arguments unused), without the attention's
// registers and shared memory
#define LS_TOPK(NAME, DIM, ATTEND)                                                                                 \
    extern "C" __global__ void __launch_bounds__(TOPK_THREADS) NAME(int mode, LS_TOPK_ARGS) {                      \
        const PickAttn attn LS_PICK_ATTN;                                                                          \
        topk_body<DIM, ATTEND>(tally, idx, scores, G, cap, k, smem_keys, mode, pick_pos, pick_score, pick_count,  \
                               attn);                                                                              \
    }
LS_TOPK(ls_topk_d64, 64, true)
LS_TOPK(ls_topk_d128, 128, true)
LS_TOPK(ls_topk_select, 128, false)

// Cluster primitives (sm_90); a plain block is a cluster of one below that, so the templates that use them
// under ``if constexpr`` still build for every target.
__device__ __forceinline__ unsigned int cluster_rank() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    unsigned int r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
#else
    return 0u;
#endif
}

__device__ __forceinline__ void cluster_sync_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#else
    __syncthreads();
#endif
}

// a 32-bit word of block ``rank``'s shared memory at the address ``p`` has in this block
__device__ __forceinline__ unsigned int ld_cluster(const unsigned int* p, unsigned int rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    unsigned int local, remote, v;
    asm volatile("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(local) : "l"(p));
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
    asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(v) : "r"(remote) : "memory");
    return v;
#else
    return *p;
#endif
}

// stores v into the 32-bit word of block ``rank``'s shared memory at the address ``p`` has in this block
__device__ __forceinline__ void st_cluster(void* p, unsigned int v, unsigned int rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    unsigned int local, remote;
    asm volatile("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(local) : "l"(p));
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
    asm volatile("st.shared::cluster.u32 [%0], %1;" ::"r"(remote), "r"(v) : "memory");
#else
    *static_cast<unsigned int*>(p) = v;
#endif
}

__device__ __forceinline__ void cluster_arrive() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void cluster_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#else
    __syncthreads();
#endif
}

// ls_topk_sample_*: the same exact top-k per (row, head) in one block, its radix passes over a few thousand
// candidates instead of every survivor (the single-block kernel's first pass puts most survivors through
// contended shared atomics: N(0, 1)-like scores share a handful of top-8-bit digits).
//   1. threshold t: when the row has more survivors than the candidate buffer holds (cand, dynamic shared
//      memory), a sample of TOPK_THREADS scores spread evenly over the list gives the largest t that r of them
//      reach, r = e + 4 sqrt(e) + 4 for e = TOPK_THREADS k / n sample items expected at or above the k-th
//      largest: bit by bit from the top, one counting barrier a bit;
//   2. one pass over the list puts the survivors whose image reaches t into the buffer (one shared atomic per
//      warp and iteration);
//   3. when k <= candidates <= cand (always, unless the sample misled: then the whole list, from L2, as the
//      single-block kernel does uncached), radix select starting just below the bits every candidate shares
//      (those of t and of the largest candidate), so the first pass already discriminates; early exit as
//      narrow_to_bin; warp-aggregated collect. The answer is exact whatever t was: t only bounds the search.
#define TOPK_SAMPLE_LOW_BIT 16  // the sample's threshold to 16 bits of the image: finer buys nothing

__device__ __forceinline__ float image_value(u32 key) {  // order_key inverted
    return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// warp-wide max / min of a u32 (redux.sync from sm_80, shuffles below)
template <bool MAX>
__device__ __forceinline__ u32 warp_extreme(u32 v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    return MAX ? __reduce_max_sync(0xffffffffu, v) : __reduce_min_sync(0xffffffffu, v);
#else
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) {
        const u32 t = __shfl_xor_sync(0xffffffffu, v, o);
        v = MAX ? max(v, t) : min(v, t);
    }
    return v;
#endif
}

// Radix select of the `need` largest of m images key(i) (0 <= i < m), starting from prefix / mask (bits every
// image shares) with digits of 8 bits from `shift` down; then each pick's slot and list entry go to emit(slot, i).
// done0: no pass needed (every image equal). Block-uniform arguments; hist / total / s_* in shared memory.
// HC: histogram copies (warp w adds to copy w % HC): 32, one a warp, where many keys share a digit (the first
// pass over every survivor); fewer are cheaper to clear and sum where the digits are spread (the candidates).
// trow: the (row, head) whose trace row the passes stamp (LS_TRACE builds only).
template <int HC, class Key, class Emit>
__device__ __forceinline__ void radix_pick(const Key& key, const Emit& emit, int m, u32 need0, u32 prefix0,
                                           u32 mask0, int shift0, bool done0,
                                           unsigned int (&hist)[TOPK_WARPS][256], unsigned int* total,
                                           u32& s_prefix, u32& s_mask, u32& s_need, u32& s_done,
                                           unsigned int& s_above, unsigned int& s_ties,
                                           [[maybe_unused]] int trow) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (threadIdx.x == 0) {
        s_prefix = prefix0;
        s_mask = mask0;
        s_need = need0;
        s_done = done0 ? 1u : 0u;
        s_above = 0;
        s_ties = 0;
    }
    __syncthreads();
    if (!s_done) {
        for (int shift = shift0;; shift = shift > 8 ? shift - 8 : 0) {
            for (int i = threadIdx.x; i < HC * 256; i += blockDim.x) (&hist[0][0])[i] = 0;
            __syncthreads();
            const u32 prefix = s_prefix, mask = s_mask;
            for (int i = threadIdx.x; i < m; i += blockDim.x) {
                const u32 k = key(i);
                if ((k & mask) == prefix) atomicAdd(&hist[warp % HC][(k >> shift) & 0xffu], 1u);
            }
            __syncthreads();
            radix_step<HC>(hist, total, warp, lane, shift, prefix, mask, s_prefix, s_mask, s_need, s_done);
            if (s_done || shift == 0) break;
        }
    }
    LS_MARK(ls_trace_topk, trow, 6);  // radix passes done
    // collect: images above the prefix are in; equal ones fill what is still needed. One shared atomic per warp
    // and kind a round (the slots of a warp's keys from its ballot).
    const u32 prefix = s_prefix, mask = s_mask, need = s_need;
    const u32 n_above = need0 - need;
    const unsigned int lt = (1u << lane) - 1u;
    for (int i0 = 0; i0 < m; i0 += blockDim.x) {
        const int i = i0 + threadIdx.x;
        const u32 k = i < m ? key(i) & mask : 0u;
        const bool above = i < m && k > prefix, tie = i < m && k == prefix;
        const unsigned int ba = __ballot_sync(0xffffffffu, above), bt = __ballot_sync(0xffffffffu, tie);
        unsigned int a0 = 0, t0 = 0;
        if (lane == 0) {
            if (ba) a0 = atomicAdd(&s_above, (unsigned int)__popc(ba));
            if (bt) t0 = atomicAdd(&s_ties, (unsigned int)__popc(bt));
        }
        a0 = __shfl_sync(0xffffffffu, a0, 0);
        t0 = __shfl_sync(0xffffffffu, t0, 0);
        if (above) {
            emit((int)(a0 + __popc(ba & lt)), i);
        } else if (tie) {
            const u32 t = t0 + __popc(bt & lt);
            if (t < need) emit((int)(n_above + t), i);
        }
    }
}

// The sample's threshold: the largest t (to TOPK_SAMPLE_LOW_BIT bits) that at least r of the block's sample
// values (mine, one a thread) reach, bit by bit from the top, one counting barrier a bit. (4 bits a round, the 15
// thresholds of a digit counted by warp ballots and summed by every warp, one plain barrier a round, took 2.7x as
// long on the H200: 12.7k against 4.7k cycles at 128K; the barrier counts in hardware.)
__device__ __forceinline__ u32 sample_threshold(u32 mine, int r) {
    u32 t = 0u;
    for (int b = 31; b >= TOPK_SAMPLE_LOW_BIT; --b) {
        const u32 c = t | (1u << b);
        if (__syncthreads_count(mine >= c) >= r) t = c;
    }
    return t;
}

// LS_TOPK_LINBIN (a build variant, for an A/B): the sample top-k's selection for rows of at most
// LS_TOPK_LINBIN_J x 1,024 survivors with no sample, no candidate pass and no radix passes. Each thread holds its J
// scores in registers; one block-wide max / min gives the row's range, one 256-bin histogram of the scores'
// positions in that range (linear bins, monotone in the score, so the bins keep the scores' order) gives the bin
// B holding the k-th largest; every score in a bin above B is a pick, and the picks still needed from B are its
// largest, found by rank (each of B's scores counted against the others, ties broken by position) with no further
// pass. Exact whatever the scores: false (nothing written, the caller's path then runs) when every score is equal,
// the range is not finite, or B holds more than LS_TOPK_LINBIN_BIN scores or the candidate buffer.
#ifndef LS_TOPK_LINBIN
#define LS_TOPK_LINBIN 0
#endif
#ifndef LS_TOPK_LINBIN_J
#define LS_TOPK_LINBIN_J 8
#endif
#ifndef LS_TOPK_LINBIN_BIN
#define LS_TOPK_LINBIN_BIN 512
#endif
#define LB_HC 8  // histogram copies (warp w adds to copy w % LB_HC)
// Thread t's J scores (list items j x 1,024 + t, up to lim; PAIR: items (2 j + r) x 1,024 + t in block r of a
// cluster of two, every other chunk of 1,024, so the two hold about as many whatever the count) as order-preserving
// images, and their list positions: loaded before the survivor count is known (items past n read stale slots of
// the lists, below cap, and are masked once n is in), so the count, the scores and the positions cost one round
// trip.
template <bool PAIR = false>
__device__ __forceinline__ int linbin_item(int j, unsigned int rank) {
    return (PAIR ? 2 * j + (int)rank : j) * TOPK_THREADS + (int)threadIdx.x;
}

template <int J, bool PAIR = false>
__device__ __forceinline__ void linbin_load(const float* __restrict__ sc, const int* __restrict__ ix, int lim,
                                            u32 (&img)[J], int (&pos)[J]) {
    const unsigned int rank = PAIR ? cluster_rank() : 0u;
#pragma unroll
    for (int j = 0; j < J; ++j) {
        const int i = linbin_item<PAIR>(j, rank);
        img[j] = i < lim ? order_key(__ldg(sc + i)) : 0u;
        pos[j] = i < lim ? __ldg(ix + i) : 0;
    }
}

// PAIR: the same selection split over a cluster of two (fan2s), each block holding half the row (linbin_load's
// PAIR items); block r ends with the picks of slots [r k / 2, (r + 1) k / 2) at the front of its pk_pos / pk_sc,
// its share of the attention (the other block's stored there through distributed shared memory). The caller
// arrived at a cluster barrier at its start and waited on it before the call (the peer is running, so its shared
// memory can be written). Three cluster barriers, each block pushing its part into the other's shared memory
// before it: 1. the warps' ranges; 2. each block's histogram totals (both then find the same bin B, and block 1
// its slots' offsets: block 0's picks above B and scores in B); 3. the picks above B (to the block whose share
// each is) and B's scores (to both, so both rank B's alike; each keeps and writes out the picks of its own share).
// Every decision to return false is taken on the exchanged values, the same in both blocks, and no block writes
// the other's shared memory after the third barrier.
template <bool ATTEND, int J = LS_TOPK_LINBIN_J, bool PAIR = false>
__device__ __forceinline__ bool linbin_pick(const u32 (&img)[J], const int (&pos)[J], int n, int k,
                                            int cand, int* __restrict__ out_pos, float* __restrict__ out_score,
                                            int* pk_pos, float* pk_sc, unsigned int (&hist)[TOPK_WARPS][256],
                                            unsigned int* total, u32& s_prefix, u32& s_mask, u32& s_need,
                                            u32& s_done, unsigned int& s_above, unsigned int& s_ties, u32* wmax,
                                            u32* wmin, float& pmax, [[maybe_unused]] int trow) {
    static_assert(ATTEND || !PAIR, "the pair's blocks attend over the picks they exchange");
    extern __shared__ u32 cbuf[];  // B's images, then their positions
    // PAIR: block r's warps' maxima at [64 r, 64 r + 32) and minima after them; block r's histogram totals at
    // [256 r, 256 r + 256); block 0's picks above B
    __shared__ u32 xr[PAIR ? 4 * TOPK_WARPS : 1];
    __shared__ unsigned int xh[PAIR ? 2 * 256 : 1];
    __shared__ unsigned int s_a0;
    const unsigned int rank = PAIR ? cluster_rank() : 0u, peer = rank ^ 1u;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    auto live = [&](int j) { return linbin_item<PAIR>(j, rank) < n; };
    for (int i = threadIdx.x; i < LB_HC * 256; i += blockDim.x) (&hist[0][0])[i] = 0u;
    if (threadIdx.x == 0) {
        s_above = 0;
        s_ties = 0;
        s_need = (u32)k;  // radix_step's input: the rank sought
        s_done = 0u;
    }
    // 1. the range (images order as the scores do)
    u32 mx = 0u, mn = 0xffffffffu;
#pragma unroll
    for (int j = 0; j < J; ++j)
        if (live(j)) {
            mx = max(mx, img[j]);
            mn = min(mn, img[j]);
        }
    mx = warp_extreme<true>(mx);
    mn = warp_extreme<false>(mn);
    if constexpr (PAIR) {
        if (lane == 0) {
            u32* w = xr + 2 * TOPK_WARPS * rank + warp;
            w[0] = mx;
            w[TOPK_WARPS] = mn;
            st_cluster(w, mx, peer);
            st_cluster(w + TOPK_WARPS, mn, peer);
        }
        cluster_sync_all();  // both blocks' ranges in both (and the histograms zeroed, s_* set)
        mx = warp_extreme<true>(max(xr[lane], xr[2 * TOPK_WARPS + lane]));
        mn = warp_extreme<false>(min(xr[TOPK_WARPS + lane], xr[3 * TOPK_WARPS + lane]));
    } else {
        if (lane == 0) {
            wmax[warp] = mx;
            wmin[warp] = mn;
        }
        __syncthreads();  // also: the histograms zeroed, s_above / s_ties set
        mx = warp_extreme<true>(wmax[lane]);
        mn = warp_extreme<false>(wmin[lane]);
    }
    const float hi = image_value(mx), lo = image_value(mn);
    const float scale = 256.f / (hi - lo);
    if (!(mx > mn) || !(scale > 0.f) || !isfinite(scale)) return false;  // block-uniform
    LS_MARK(ls_trace_topk, trow, 3);  // the range
    // 2. the histogram of linear bins; warp 0 finds the bin of the k-th largest
    auto bin = [&](u32 key) { return min(255, (int)((image_value(key) - lo) * scale)); };
#pragma unroll
    for (int j = 0; j < J; ++j)
        if (live(j)) atomicAdd(&hist[warp % LB_HC][bin(img[j])], 1u);
    __syncthreads();
    if constexpr (PAIR) {
        if (threadIdx.x < 256) {
            unsigned int t = 0;
#pragma unroll
            for (int w = 0; w < LB_HC; ++w) t += hist[w][threadIdx.x];
            xh[256 * rank + threadIdx.x] = t;
            st_cluster(xh + 256 * rank + threadIdx.x, t, peer);
        }
        cluster_sync_all();  // both blocks' totals in both
        if (warp == 0) {
            unsigned int h[8], mine = 0;
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                h[e] = xh[255 - 8 * lane - e] + xh[256 + 255 - 8 * lane - e];
                mine += h[e];
            }
            narrow_to_bin(h, mine, lane, 0, 0u, 0u, s_prefix, s_mask, s_need, s_done);
            __syncwarp();
            const int b0 = (int)s_prefix;
            const bool w0 = s_done != 0u;
            unsigned int a0 = 0;  // block 0's picks above B (and in B, when every one of B's is a pick)
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                const int b = 255 - 8 * lane - e;
                a0 += (b > b0 || (w0 && b == b0)) ? xh[b] : 0u;
            }
#pragma unroll
            for (int o = 16; o >= 1; o >>= 1) a0 += __shfl_xor_sync(0xffffffffu, a0, o);
            if (lane == 0) s_a0 = a0;
        }
        __syncthreads();
    } else {
        radix_step<LB_HC>(hist, total, warp, lane, 0, 0u, 0u, s_prefix, s_mask, s_need, s_done);
    }
    const int B = (int)s_prefix;
    const u32 need = s_need;
    const bool whole = s_done != 0u;
    const unsigned int m = PAIR ? xh[B] + xh[256 + B] : total[B];
    if (!whole && (m > (unsigned int)LS_TOPK_LINBIN_BIN || m > (unsigned int)cand)) return false;  // block-uniform
    LS_MARK(ls_trace_topk, trow, 4);  // the k-th largest's bin
    // 3. the bins above B are picks (and B too when every one of its scores is needed); B's scores into cbuf
    const u32 n_above = (u32)k - need;
    u32* bimg = cbuf;
    int* bpos = reinterpret_cast<int*>(cbuf + cand);
    unsigned int above_m = 0u, tie_m = 0u;  // bit j: item j is a pick / in B
#pragma unroll
    for (int j = 0; j < J; ++j) {
        const int bj = live(j) ? bin(img[j]) : -1;  // recomputed: held, the J bins spill
        above_m |= (bj > B || (whole && bj == B)) ? 1u << j : 0u;
        tie_m |= (!whole && bj == B) ? 1u << j : 0u;
    }
    // each thread's slots from one block-wide scan of its counts (picks in the low half-word, B's in the high: a
    // shared atomic a warp and item kind serialised 32 warps on two addresses, 7.4k cycles at 128K)
    const unsigned int cnt = (unsigned int)__popc(above_m) | ((unsigned int)__popc(tie_m) << 16);
    unsigned int incl = cnt;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned int y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
    }
    if (lane == 31) wmax[warp] = incl;  // the range's maxima were read before the histogram's barriers
    __syncthreads();
    const unsigned int wt = wmax[lane];
    unsigned int wincl = wt;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned int y = __shfl_up_sync(0xffffffffu, wincl, o);
        if (lane >= o) wincl += y;
    }
    const unsigned int excl = __shfl_sync(0xffffffffu, wincl - wt, warp) + incl - cnt;
    unsigned int aslot = excl & 0xffffu, tslot = excl >> 16;
    if (PAIR && rank == 1u) {  // after block 0's
        aslot += s_a0;
        tslot += xh[B];
    }
    // PAIR: slots from `half` on are block 1's share, stored from the front of its pk_pos / pk_sc
    const int half = PAIR ? k / 2 : k;
    auto keep = [&](int slot, int p, float v) {
        if constexpr (PAIR) {
            const unsigned int owner = slot >= half ? 1u : 0u;
            const int at = slot - (owner ? half : 0);
            if (owner == rank) {
                pk_pos[at] = p;
                pk_sc[at] = v;
            } else {
                st_cluster(pk_pos + at, (u32)p, peer);
                st_cluster(pk_sc + at, __float_as_uint(v), peer);
            }
        } else {
            pk_pos[slot] = p;
            pk_sc[slot] = v;
        }
    };
#pragma unroll
    for (int j = 0; j < J; ++j) {
        if ((above_m >> j) & 1u) {
            const float v = image_value(img[j]);
            out_pos[aslot] = pos[j];
            out_score[aslot] = v;
            if constexpr (ATTEND) keep((int)aslot, pos[j], v);
            ++aslot;
        }
        if ((tie_m >> j) & 1u) {
            bimg[tslot] = img[j];
            bpos[tslot] = pos[j];
            if constexpr (PAIR) {
                st_cluster(bimg + tslot, img[j], peer);
                st_cluster(bpos + tslot, (u32)pos[j], peer);
            }
            ++tslot;
        }
    }
    pmax = hi;  // the largest score is always a pick
    if constexpr (PAIR) cluster_sync_all();  // the picks above B in their shares, B's scores in both
    if (!whole) {
        if constexpr (!PAIR) __syncthreads();  // B's scores in shared memory
        LS_MARK(ls_trace_topk, trow, 5);  // the picks above B out
        // 4. B's largest `need`: a score's rank among B's (larger ones, then equal ones listed before it), a warp a
        // score, each lane counting a 32nd of B (PAIR: both blocks rank alike, each keeps its share's picks)
        for (unsigned int t0 = warp; t0 < m; t0 += TOPK_WARPS) {
            const u32 mine = bimg[t0];
            unsigned int c = 0;
            for (unsigned int t = lane; t < m; t += 32) {
                const u32 o = bimg[t];
                c += (o > mine || (o == mine && t < t0)) ? 1u : 0u;
            }
#pragma unroll
            for (int o = 16; o >= 1; o >>= 1) c += __shfl_xor_sync(0xffffffffu, c, o);
            const int slot = (int)(n_above + c);
            if (lane == 0 && c < need && (!PAIR || (slot >= half) == (rank == 1u))) {
                const float v = image_value(mine);
                out_pos[slot] = bpos[t0];
                out_score[slot] = v;
                if constexpr (ATTEND) keep(slot, bpos[t0], v);
            }
        }
    }
    LS_MARK(ls_trace_topk, trow, 6);  // every pick out
    return true;
}
#undef LB_HC

// The selection of topk_sample_body for (row, head) bhg: writes the picks out (and, KEEP, into pk_pos / pk_sc
// in shared memory) and returns their number; pmax: the largest pick's score where the candidates give it
// (their largest image), else -inf. hist / total: the radix passes' shared memory, free afterwards.
// CL > 1: called by every block of a cluster of CL; each samples the same threshold and puts the candidates of
// its CL-th of the score row into its own buffer, block 0 pulls the others' through distributed shared memory
// and alone picks (the others return once their candidates are pulled: they wait at the caller's next cluster
// barrier, which block 0 reaches after the pull).
template <bool KEEP, int CL = 1>
__device__ __forceinline__ int topk_sample_pick(const unsigned int* __restrict__ tally,
                                                const int* __restrict__ idx, const float* __restrict__ scores,
                                                int G, int cap, int k, int cand, int* __restrict__ pick_pos,
                                                float* __restrict__ pick_score, int* __restrict__ pick_count,
                                                int bhg, int* pk_pos, float* pk_sc,
                                                unsigned int (&hist)[TOPK_WARPS][256], unsigned int* total,
                                                float& pmax) {
    constexpr bool ATTEND = KEEP;
    extern __shared__ u32 cbuf[];  // cand images, then cand list indices
    u32* cimg = cbuf;
    int* cidx = reinterpret_cast<int*>(cbuf + cand);
    __shared__ u32 s_prefix, s_mask, s_need, s_done;
    __shared__ unsigned int s_above, s_ties;
    __shared__ u32 wmax[TOPK_WARPS], wmin[TOPK_WARPS];
    __shared__ unsigned int wscan[TOPK_WARPS];
    __shared__ unsigned int s_nc;  // CL > 1: this block's candidates
    const unsigned int rank = CL > 1 ? cluster_rank() : 0u;
    const int bh = bhg / G;
    const int n = min((int)tally[bh], cap);
    const int kk = min(k, n);
    const float* sc = scores + (long long)bhg * cap;
    const int* ix = idx + (long long)bh * cap;
    int* out_pos = pick_pos + (long long)bhg * k;
    float* out_score = pick_score + (long long)bhg * k;
    pmax = LS_NEG_INF;
    if (threadIdx.x == 0 && rank == 0) pick_count[bhg] = kk;
    // a cluster's block 0 alone stamps the (row, head)'s trace row
    LS_GMARK_IF(rank == 0, ls_trace_topk, bhg, 0);
    LS_MARK_IF(rank == 0, ls_trace_topk, bhg, 1);
    if (n <= k) {
        if (rank == 0)
            for (int i = threadIdx.x; i < n; i += blockDim.x)
                put_pick<ATTEND>(i, i, ix, sc, out_pos, out_score, pk_pos, pk_sc);
        return kk;
    }
    LS_MARK_IF(rank == 0, ls_trace_topk, bhg, 2);  // the survivor count read
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#if LS_TOPK_LINBIN
    if (CL == 1 && n <= LS_TOPK_LINBIN_J * TOPK_THREADS) {  // block-uniform
        u32 img[LS_TOPK_LINBIN_J];
        int pos[LS_TOPK_LINBIN_J];
        linbin_load(sc, ix, n, img, pos);
        if (linbin_pick<ATTEND>(img, pos, n, k, cand, out_pos, out_score, pk_pos, pk_sc, hist, total, s_prefix,
                                s_mask, s_need, s_done, s_above, s_ties, wmax, wmin, pmax, bhg))
            return kk;
    }
#endif
    // 1. the candidates' threshold (0: every survivor), from a sample when the list is longer than the buffer
    u32 t = 0;
    bool try_cand = n <= cand, sampled = false;
    int r = 0;
    if (!try_cand) {
        const float e = (float)TOPK_THREADS * (float)k / (float)n;
        r = (int)ceilf(e + 4.f * sqrtf(e) + 4.f);
        // expected candidates r n / TOPK_THREADS must fit the buffer (block-uniform)
        try_cand = sampled = r < TOPK_THREADS && (long long)r * n <= (long long)cand * TOPK_THREADS;
    }
    // the candidate pass's geometry: chunks of 16 scores a thread (four 16-byte loads); the row's few unaligned
    // scores at either end go to single threads of the first chunk. That chunk's loads go out with the sample's.
    const int head = min(n, (int)(((16u - (u32)(reinterpret_cast<size_t>(sc) & 15u)) & 15u) >> 2));
    const int nv = (n - head) >> 2;                      // 16-byte vectors after the head
    const int tail0 = head + 4 * nv, ntail = n - tail0;  // < 4 scalars at the end
    const float4* sv = reinterpret_cast<const float4*>(sc + head);
    // this block's vectors [jlo, jhi) (CL > 1: a CL-th of them each)
    const int jlo = (int)(((long long)rank * nv) / CL), jhi = (int)((((long long)rank + 1) * nv) / CL);
    float4 f[4];
    int xi = -1;  // this thread's extra scalar (block 0's first chunk only): head item, or tail item
    u32 xv = 0u;
    if (try_cand) {
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int j = jlo + u * TOPK_THREADS + threadIdx.x;
            f[u] = j < jhi ? __ldg(sv + j) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        if (rank == 0) {
            if (threadIdx.x < head) xi = threadIdx.x;
            else if (threadIdx.x - head < ntail) xi = tail0 + (threadIdx.x - head);
        }
        xv = xi >= 0 ? order_key(__ldg(sc + xi)) : 0u;
    }
    if (sampled) {
        const u32 mine = order_key(__ldg(sc + (int)(((long long)threadIdx.x * n) / TOPK_THREADS)));
        t = sample_threshold(mine, r);
    }
    LS_MARK_IF(rank == 0, ls_trace_topk, bhg, 3);  // threshold sampled
    // 2. the candidates: images >= t. A block-wide scan of the threads' counts gives each its slots (no atomics).
    unsigned int nc = 0;
    if (try_cand) {
        unsigned int base = 0;
        for (int v0 = jlo, first = 1; v0 < jhi || first; v0 += 4 * TOPK_THREADS, first = 0) {
            if (!first) {
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    const int j = v0 + u * TOPK_THREADS + threadIdx.x;
                    f[u] = j < jhi ? __ldg(sv + j) : make_float4(0.f, 0.f, 0.f, 0.f);
                }
                xi = -1;
            }
            u32 img[17];
            unsigned int cnt = 0;
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                const int j = v0 + u * TOPK_THREADS + threadIdx.x;
                const float e4[4] = {f[u].x, f[u].y, f[u].z, f[u].w};
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    img[4 * u + e] = order_key(e4[e]);
                    cnt += (j < jhi && img[4 * u + e] >= t) ? 1u : 0u;
                }
            }
            img[16] = xv;
            cnt += (xi >= 0 && xv >= t) ? 1u : 0u;
            // exclusive scan of cnt over the block
            unsigned int incl = cnt;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const unsigned int y = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o) incl += y;
            }
            if (lane == 31) wscan[warp] = incl;
            __syncthreads();
            const unsigned int wt = wscan[lane];  // every warp's total
            unsigned int wincl = wt;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const unsigned int y = __shfl_up_sync(0xffffffffu, wincl, o);
                if (lane >= o) wincl += y;
            }
            const unsigned int chunk_total = __shfl_sync(0xffffffffu, wincl, 31);
            unsigned int slot = base + __shfl_sync(0xffffffffu, wincl - wt, warp) + incl - cnt;
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                const int j = v0 + u * TOPK_THREADS + threadIdx.x;
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    if (j < jhi && img[4 * u + e] >= t) {
                        if (slot < (unsigned int)cand) {
                            cimg[slot] = img[4 * u + e];
                            cidx[slot] = head + 4 * j + e;
                        }
                        ++slot;
                    }
                }
            }
            if (xi >= 0 && xv >= t && slot < (unsigned int)cand) {
                cimg[slot] = xv;
                cidx[slot] = xi;
            }
            base += chunk_total;
            __syncthreads();  // wscan is rewritten by the next chunk
        }
        nc = base;
        if constexpr (CL > 1) {
            if (threadIdx.x == 0) s_nc = base;
            cluster_sync_all();  // every block's candidates and count visible to the cluster
            if (rank != 0) return kk;
            // block 0 appends the others' candidates that fit (nc past cand: the fallback below, as in one block)
            for (unsigned int r = 1; r < (unsigned int)CL; ++r) {
                const unsigned int ncr = ld_cluster(&s_nc, r);
                const int take = nc < (unsigned int)cand ? (int)min(ncr, (unsigned int)cand - nc) : 0;
                for (int i = threadIdx.x; i < take; i += blockDim.x) {
                    cimg[nc + i] = ld_cluster(cimg + i, r);
                    cidx[nc + i] = (int)ld_cluster(reinterpret_cast<const unsigned int*>(cidx + i), r);
                }
                nc += ncr;
            }
            __syncthreads();
        }
    }
    if (CL > 1 && rank != 0) return kk;  // no candidates tried (block 0 takes the whole list)
    LS_MARK_IF(rank == 0, ls_trace_topk, bhg, 4);  // candidates in shared memory
    auto emit_list = [&](int slot, int i) { put_pick<ATTEND>(slot, i, ix, sc, out_pos, out_score, pk_pos, pk_sc); };
    if (try_cand && nc >= (unsigned int)k && nc <= (unsigned int)cand) {
        // 3. exact top-k of the candidates, from the first bit where they can differ
        u32 mx = 0u, mn = 0xffffffffu;
        for (int i = threadIdx.x; i < (int)nc; i += blockDim.x) {
            mx = max(mx, cimg[i]);
            mn = min(mn, cimg[i]);
        }
        mx = warp_extreme<true>(mx);
        mn = warp_extreme<false>(mn);
        if (lane == 0) {
            wmax[warp] = mx;
            wmin[warp] = mn;
        }
        __syncthreads();
        mx = warp_extreme<true>(wmax[lane]);
        mn = warp_extreme<false>(wmin[lane]);
        pmax = image_value(mx);  // the largest candidate is always picked
        LS_MARK_IF(rank == 0, ls_trace_topk, bhg, 5);  // their range
        const int L = __clz(mx ^ mn);  // leading bits every candidate shares (32: all equal)
        const u32 mask0 = L >= 32 ? 0xffffffffu : (L == 0 ? 0u : ~0u << (32 - L));
        const int shift0 = max(24 - L, 0);
        auto key = [&](int i) { return cimg[i]; };
        auto emit = [&](int slot, int i) {
            const int pos = ix[cidx[i]];
            const float v = image_value(cimg[i]);
            out_pos[slot] = pos;
            out_score[slot] = v;
            if constexpr (ATTEND) {
                pk_pos[slot] = pos;
                pk_sc[slot] = v;
            }
        };
        radix_pick<8>(key, emit, (int)nc, (u32)k, mx & mask0, mask0, shift0, L >= 32, hist, total, s_prefix,
                      s_mask, s_need, s_done, s_above, s_ties, bhg);
    } else {
        // the sample misled (or the buffer is too small): every survivor, from L2
        auto key = [&](int i) { return order_key(__ldg(sc + i)); };
        radix_pick<TOPK_WARPS>(key, emit_list, n, (u32)k, 0u, 0u, 24, false, hist, total, s_prefix, s_mask, s_need,
                               s_done, s_above, s_ties, bhg);
    }
    return kk;
}

template <int D, bool ATTEND>
__device__ void topk_sample_body(const unsigned int* __restrict__ tally, const int* __restrict__ idx,
                                 const float* __restrict__ scores, int G, int cap, int k, int cand,
                                 int* __restrict__ pick_pos, float* __restrict__ pick_score,
                                 int* __restrict__ pick_count, const PickAttn& attn) {
    __shared__ unsigned int hist[TOPK_WARPS][256];
    __shared__ unsigned int total[256];
    __shared__ int pk_pos[1024];  // the picks again, for topk_attend
    __shared__ float pk_sc[1024];
    LS_GMARK(ls_trace_topk, (int)blockIdx.x, 13);  // resident, before the select's writes are awaited
    grid_dep_wait();  // the select's survivors (programmatic launch)
    grid_dep_launch();
    const int bhg = blockIdx.x;
    float pmax;
    const int kk = topk_sample_pick<ATTEND>(tally, idx, scores, G, cap, k, cand, pick_pos, pick_score, pick_count,
                                            bhg, pk_pos, pk_sc, hist, total, pmax);
    __syncthreads();
    LS_MARK(ls_trace_topk, bhg, 7);  // picks written
    if constexpr (ATTEND)
        topk_attend<D>(attn, kk, pk_pos, pk_sc, reinterpret_cast<float*>(&hist[0][0]), bhg / G, bhg % G, G, 0,
                       pmax);
    LS_MARK(ls_trace_topk, bhg, 8);  // attended (and merged, for the block that completed a head)
    LS_GMARK(ls_trace_topk, bhg, 9);
}

// the LS_TOPK_ARGS smem_keys argument is the candidate buffer's size here (8 bytes of dynamic shared memory each)
#define LS_TOPK_SAMPLE(NAME, DIM, ATTEND)                                                                         \
    extern "C" __global__ void __launch_bounds__(TOPK_THREADS) NAME(LS_TOPK_ARGS) {                                \
        const PickAttn attn LS_PICK_ATTN;                                                                          \
        topk_sample_body<DIM, ATTEND>(tally, idx, scores, G, cap, k, smem_keys, pick_pos, pick_score, pick_count,  \
                                      attn);                                                                       \
    }
LS_TOPK_SAMPLE(ls_topk_sample_d64, 64, true)
LS_TOPK_SAMPLE(ls_topk_sample_d128, 128, true)
LS_TOPK_SAMPLE(ls_topk_sample_select, 128, false)

// ls_topk_fan<C>_d*: C blocks per (row, head), no cluster. Each block runs the same selection (linbin_pick: its
// picks and their order depend on the scores alone, so every block holds the same list), then attends over its
// C-th of the picks and writes its own partial (pick_parts = C; merge_head combines them): the picks' value rows
// come in on C SMs in one round instead of one SM's two, with no block waiting on another (the spread forms'
// cluster barrier, and their clusters' residency: 30 of 4 fit on the H200, 32 are needed at batch 1). Each block
// re-reads the head's scores from L2 (26 KB at 128K) and writes the same picks to the same slots. Rows the linear
// bins cannot take (longer than LS_TOPK_LINBIN_J x 1,024 survivors, every score equal, the k-th largest's bin too
// full; the decision is the same in every block) go to block 0, which runs the sample top-k and attends over every
// pick, while the others count empty partials.
// PAIR (ls_topk_fan2s_d*, C = 2 in a cluster): the selection split over the two blocks instead of repeated in both
// (linbin_pick's PAIR form: each histograms half the row, the range, totals and picks exchanged through
// distributed shared memory); the attention as fan2's.
template <int D, int C, bool PAIR = false>
__device__ void topk_fan_body(const unsigned int* __restrict__ tally, const int* __restrict__ idx,
                              const float* __restrict__ scores, int G, int cap, int k, int cand,
                              int* __restrict__ pick_pos, float* __restrict__ pick_score,
                              int* __restrict__ pick_count, const PickAttn& attn) {
    __shared__ unsigned int hist[TOPK_WARPS][256];
    __shared__ unsigned int total[256];
    __shared__ int pk_pos[1024];
    __shared__ float pk_sc[1024];
    __shared__ u32 s_prefix, s_mask, s_need, s_done;
    __shared__ unsigned int s_above, s_ties;
    __shared__ u32 wmax[TOPK_WARPS], wmin[TOPK_WARPS];
    static_assert(!PAIR || C == 2, "the pair is a cluster of two");
    LS_GMARK_IF(blockIdx.x % C == 0, ls_trace_topk, (int)(blockIdx.x / C), 13);  // resident
    if constexpr (PAIR) cluster_arrive();  // waited on once the select is done: the peer is running by then
    grid_dep_wait();  // the select's survivors (programmatic launch)
    grid_dep_launch();
    const int rank = (int)(blockIdx.x % C);  // PAIR: the block's rank in its cluster (clusters along x)
    const int bhg = (int)(blockIdx.x / C), bh = bhg / G, g = bhg % G;
    const float* sc = scores + (long long)bhg * cap;
    const int* ix = idx + (long long)bh * cap;
    // the scores and positions go out with the count (linbin_load), so the three cost one round trip
    constexpr int J = PAIR ? LS_TOPK_LINBIN_J / 2 : LS_TOPK_LINBIN_J;
    u32 img[J];
    int posv[J];
    linbin_load<J, PAIR>(sc, ix, min(cap, LS_TOPK_LINBIN_J * TOPK_THREADS), img, posv);
    if constexpr (PAIR) cluster_wait();
    // the tally is zeroed only by the merge of the row's last head, which needs this block's partial first
    const int n = min((int)tally[bh], cap);
    const int kk = min(k, n);
    int* out_pos = pick_pos + (long long)bhg * k;
    float* out_score = pick_score + (long long)bhg * k;
    if (threadIdx.x == 0 && rank == 0) pick_count[bhg] = kk;
    LS_GMARK_IF(rank == 0, ls_trace_topk, bhg, 0);
    LS_MARK_IF(rank == 0, ls_trace_topk, bhg, 1);
    float pmax = LS_NEG_INF;
    bool fanned = true;  // block-uniform
    if (n <= k) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) put_pick<true>(i, i, ix, sc, out_pos, out_score, pk_pos, pk_sc);
    } else {
        LS_MARK_IF(rank == 0, ls_trace_topk, bhg, 2);  // the survivor count read
        fanned = n <= LS_TOPK_LINBIN_J * TOPK_THREADS &&
                 linbin_pick<true, J, PAIR>(img, posv, n, k, cand, out_pos, out_score, pk_pos, pk_sc, hist, total,
                                            s_prefix, s_mask, s_need, s_done, s_above, s_ties, wmax, wmin, pmax, bhg);
    }
    int P;
    if (fanned) {
        // this block's C-th of the picks to the front of pk_pos / pk_sc (through registers: the two ranges
        // may overlap; PAIR: linbin_pick put them there, or every one when n <= k); kk <= 1,024 = the block's
        // threads
        const int lo = (int)(((long long)rank * kk) / C);
        P = (int)((((long long)rank + 1) * kk) / C) - lo;
        if (!PAIR || n <= k) {
            __syncthreads();  // every pick in shared memory
            const int j = threadIdx.x;
            const int pp = j < P ? pk_pos[lo + j] : 0;
            const float ps = j < P ? pk_sc[lo + j] : 0.f;
            __syncthreads();
            if (j < P) {
                pk_pos[j] = pp;
                pk_sc[j] = ps;
            }
        }
    } else if (rank == 0) {
        float pm;
        P = topk_sample_pick<true>(tally, idx, scores, G, cap, k, cand, pick_pos, pick_score, pick_count, bhg,
                                   pk_pos, pk_sc, hist, total, pm);
        pmax = pm;
    } else {
        P = 0;  // an empty partial (max -inf, sum 0), counted like any other
    }
    __syncthreads();
    LS_MARK_IF(rank == 0, ls_trace_topk, bhg, 7);  // picks written and this block's slice in front
    topk_attend<D>(attn, P, pk_pos, pk_sc, reinterpret_cast<float*>(&hist[0][0]), bh, g, G, rank, pmax);
    LS_MARK_IF(rank == 0, ls_trace_topk, bhg, 8);  // attended (and merged, for the block that completed a head)
    LS_GMARK_IF(rank == 0, ls_trace_topk, bhg, 9);
    LS_GMARK_IF(rank != 0, ls_trace_topk, bhg, 14);  // the pair's other block done (it merges most heads)
}

#define LS_TOPK_FAN(NAME, DIM, C)                                                                                  \
    extern "C" __global__ void __launch_bounds__(TOPK_THREADS) NAME(LS_TOPK_ARGS) {                                \
        const PickAttn attn LS_PICK_ATTN;                                                                          \
        topk_fan_body<DIM, C>(tally, idx, scores, G, cap, k, smem_keys, pick_pos, pick_score, pick_count, attn);   \
    }
LS_TOPK_FAN(ls_topk_fan2_d64, 64, 2)
LS_TOPK_FAN(ls_topk_fan2_d128, 128, 2)
// C = 3 and 4 were built and measured too (lead session 7): 1,024-thread blocks on 96 / 128 SMs at batch 1 left the
// band nowhere to run or took the select's SMs, slower everywhere (docs/gpu-kernels.md, eleventh step)

// The same selection spread over a cluster of TOPK_CTAS thread blocks (sm_90): block r of the cluster holds
// scores [r n / C, (r + 1) n / C) of the row in its shared memory, histograms them, and every block reads the
// others' histograms through distributed shared memory, so all take the same bin each pass; the collect
// offsets come the same way. TOPK_CTAS times the SMs and the shared memory per row: at batch 1 a layer has
// only 32 rows (8 KV heads x 4 query heads) for 132 SMs.
#define TOPK_CTAS 4

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
template <int D, bool ATTEND>
__device__ void topk_cluster_body(const unsigned int* __restrict__ tally, const int* __restrict__ idx,
                                  const float* __restrict__ scores, int G, int cap, int k, int smem_keys,
                                  int* __restrict__ pick_pos, float* __restrict__ pick_score,
                                  int* __restrict__ pick_count, const PickAttn& attn) {
    extern __shared__ u32 slice[];  // smem_keys entries: this block's slice of the score images
    __shared__ unsigned int hist[TOPK_WARPS][256];
    __shared__ unsigned int total[256];
    __shared__ unsigned int counts[2];  // this block's (above, ties) for the collect offsets
    __shared__ u32 s_prefix, s_mask, s_need, s_done;
    __shared__ unsigned int s_above, s_ties, s_local;
    __shared__ int pk_pos[1024];  // this block's picks again, for topk_attend
    __shared__ float pk_sc[1024];
    const unsigned int rank = cluster_rank();
    grid_dep_wait();  // the select's survivors (programmatic launch)
    grid_dep_launch();
    const int bhg = blockIdx.x / TOPK_CTAS, bh = bhg / G, g = bhg % G;
    const int n = min((int)tally[bh], cap);
    const int kk = min(k, n);
    const float* sc = scores + (long long)bhg * cap;
    const int* ix = idx + (long long)bh * cap;
    int* out_pos = pick_pos + (long long)bhg * k;
    float* out_score = pick_score + (long long)bhg * k;
    if (rank == 0 && threadIdx.x == 0) pick_count[bhg] = kk;
    const int lo = (int)(((long long)n * rank) / TOPK_CTAS), hi = (int)(((long long)n * (rank + 1)) / TOPK_CTAS);
    const int m = hi - lo;
    if (n <= k) {  // the same for every block of the cluster: each copies (and attends over) its slice
        for (int i = threadIdx.x; i < m; i += blockDim.x) {
            const int pos = ix[lo + i];
            const float v = sc[lo + i];
            out_pos[lo + i] = pos;
            out_score[lo + i] = v;
            if constexpr (ATTEND) {
                pk_pos[i] = pos;
                pk_sc[i] = v;
            }
        }
        if constexpr (ATTEND) {
            __syncthreads();
            topk_attend<D>(attn, m, pk_pos, pk_sc, reinterpret_cast<float*>(&hist[0][0]), bh, g, G, (int)rank);
        }
        return;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const bool cached = m <= smem_keys;
    if (cached) cache_images(slice, sc + lo, m);
    if (threadIdx.x == 0) {
        s_prefix = 0;
        s_mask = 0;
        s_need = (u32)k;
        s_done = 0;
    }
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < TOPK_WARPS * 256; i += blockDim.x) (&hist[0][0])[i] = 0;
        __syncthreads();
        const u32 prefix = s_prefix, mask = s_mask;
        for (int i = threadIdx.x; i < m; i += blockDim.x) {
            const u32 key = cached ? slice[i] : order_key(__ldg(sc + lo + i));
            if ((key & mask) == prefix) atomicAdd(&hist[warp][(key >> shift) & 0xffu], 1u);
        }
        __syncthreads();
        if (threadIdx.x < 256) {
            unsigned int t = 0;
#pragma unroll 8
            for (int w = 0; w < TOPK_WARPS; ++w) t += hist[w][threadIdx.x];
            total[threadIdx.x] = t;
        }
        cluster_sync_all();  // every block's total[] is ready
        if (warp == 0) {
            unsigned int h[8], mine = 0;
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                const int bin = 255 - 8 * lane - e;
                unsigned int t = 0;
#pragma unroll
                for (unsigned int r = 0; r < TOPK_CTAS; ++r) t += ld_cluster(&total[bin], r);
                h[e] = t;
                mine += t;
            }
            narrow_to_bin(h, mine, lane, shift, prefix, mask, s_prefix, s_mask, s_need, s_done);
        }
        cluster_sync_all();  // no block rewrites total[] while another still reads it; s_* visible
        if (s_done) break;
    }
    const u32 prefix = s_prefix, mask = s_mask, need = s_need;
    if (threadIdx.x == 0) {
        s_above = 0;
        s_ties = 0;
    }
    __syncthreads();
    // this block's counts of keys above the prefix and tied with it, then offsets from the blocks before it
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        const u32 key = (cached ? slice[i] : order_key(__ldg(sc + lo + i))) & mask;
        if (key > prefix) atomicAdd(&s_above, 1u);
        else if (key == prefix) atomicAdd(&s_ties, 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        counts[0] = s_above;
        counts[1] = s_ties;
    }
    cluster_sync_all();
    unsigned int above_off = 0, ties_off = 0;
    for (unsigned int r = 0; r < rank; ++r) {
        above_off += ld_cluster(&counts[0], r);
        ties_off += ld_cluster(&counts[1], r);
    }
    const u32 n_above = (u32)k - need;
    if (threadIdx.x == 0) {
        s_above = 0;
        s_ties = 0;
        s_local = 0;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        const u32 key = (cached ? slice[i] : order_key(__ldg(sc + lo + i))) & mask;
        int slot = -1;
        if (key > prefix) {
            slot = (int)(above_off + atomicAdd(&s_above, 1u));
        } else if (key == prefix) {
            const u32 t = ties_off + atomicAdd(&s_ties, 1u);
            if (t < need) slot = (int)(n_above + t);
        }
        if (slot >= 0) {
            const int pos = ix[lo + i];
            const float v = sc[lo + i];
            out_pos[slot] = pos;
            out_score[slot] = v;
            if constexpr (ATTEND) {
                const unsigned int local = atomicAdd(&s_local, 1u);  // this block's picks, for topk_attend
                pk_pos[local] = pos;
                pk_sc[local] = v;
            }
        }
    }
    cluster_sync_all();  // no block leaves while another may still read its shared memory; s_local visible
    if constexpr (ATTEND)
        topk_attend<D>(attn, (int)s_local, pk_pos, pk_sc, reinterpret_cast<float*>(&hist[0][0]), bh, g, G, (int)rank);
}

#define LS_TOPK_CLUSTER(NAME, DIM, ATTEND)                                                                         \
    extern "C" __global__ void __cluster_dims__(TOPK_CTAS, 1, 1) __launch_bounds__(TOPK_THREADS)                  \
        NAME(LS_TOPK_ARGS) {                                                                                       \
        const PickAttn attn LS_PICK_ATTN;                                                                          \
        topk_cluster_body<DIM, ATTEND>(tally, idx, scores, G, cap, k, smem_keys, pick_pos, pick_score, pick_count, \
                                       attn);                                                                      \
    }
LS_TOPK_CLUSTER(ls_topk_cluster_d64, 64, true)
LS_TOPK_CLUSTER(ls_topk_cluster_d128, 128, true)
LS_TOPK_CLUSTER(ls_topk_cluster_select, 128, false)

// ls_topk_sample_spread*_*: the sample top-k over a cluster of C blocks per (row, head). Block 0 selects (spreadc:
// every block puts the candidates of a C-th of the score row into its buffer and block 0 pulls them through
// distributed shared memory, topk_sample_pick<KEEP, C>); then every block of the cluster attends over a C-th of
// the picks, read from block 0's shared memory, and writes its own partial (pick_parts = C; merge_head combines
// them). The picks' value rows are then loaded by C SMs instead of one: at batch 1 a layer has 32 (row, head)
// blocks for 132 SMs, and one block's dependent rounds of value-row loads were ~9 us of the top-k's ~27 at 512K.
// Clusters of 2: at batch 1 all 32 fit at once (66 do on the H200); 32 clusters of 4 did not (30 do), and the
// second wave made C = 4 11-20 us slower than one block (gpuattn2 run 8, docs/gpu-kernels.md).
template <int D, int C, bool SPLIT>
__device__ void topk_sample_spread_body(const unsigned int* __restrict__ tally, const int* __restrict__ idx,
                                        const float* __restrict__ scores, int G, int cap, int k, int cand,
                                        int* __restrict__ pick_pos, float* __restrict__ pick_score,
                                        int* __restrict__ pick_count, const PickAttn& attn) {
    __shared__ unsigned int hist[TOPK_WARPS][256];
    __shared__ unsigned int total[256];
    __shared__ int pk_pos[1024];  // block 0: every pick; the others: their slice, copied from block 0
    __shared__ float pk_sc[1024];
    grid_dep_wait();  // the select's survivors (programmatic launch)
    grid_dep_launch();
    const unsigned int rank = cluster_rank();
    const int bhg = blockIdx.x / C, bh = bhg / G, g = bhg % G;
    // the tally is zeroed only by the merge of the row's last head, which needs this block's partial first
    __shared__ float s_pmax;  // block 0: its picks' largest score (-inf: not known), set by every thread alike
    int kk;
    if constexpr (SPLIT)
        kk = topk_sample_pick<true, C>(tally, idx, scores, G, cap, k, cand, pick_pos, pick_score, pick_count, bhg,
                                       pk_pos, pk_sc, hist, total, s_pmax);
    else
        kk = rank == 0 ? topk_sample_pick<true>(tally, idx, scores, G, cap, k, cand, pick_pos, pick_score,
                                                pick_count, bhg, pk_pos, pk_sc, hist, total, s_pmax)
                       : min(k, min((int)tally[bh], cap));
    cluster_sync_all();  // block 0's picks visible to the cluster
    float pmax = s_pmax;
    const int lo = (int)(((long long)rank * kk) / C);
    const int P = (int)((((long long)rank + 1) * kk) / C) - lo;
    if (rank != 0) {
        // every block weighs its slice against the same maximum (when known): its partial needs no rescaling
        pmax = __uint_as_float(ld_cluster(reinterpret_cast<const unsigned int*>(&s_pmax), 0u));
        for (int j = threadIdx.x; j < P; j += blockDim.x) {
            pk_pos[j] = (int)ld_cluster(reinterpret_cast<const unsigned int*>(pk_pos + lo + j), 0u);
            pk_sc[j] = __uint_as_float(ld_cluster(reinterpret_cast<const unsigned int*>(pk_sc + lo + j), 0u));
        }
    }
    cluster_arrive();  // done reading block 0's shared memory (block 0 waits for this before it leaves)
    __syncthreads();   // the slice visible to the whole block
    // block 0 rewrites pk_sc[0, P) only (slice 0), and merges (pk_sc as scratch) only once every block has
    // counted its partial, so after every copy
    LS_MARK_IF(rank == 0, ls_trace_topk, bhg, 7);  // picks written and the slices copied
    topk_attend<D>(attn, P, pk_pos, pk_sc, reinterpret_cast<float*>(&hist[0][0]), bh, g, G, (int)rank, pmax);
    LS_MARK_IF(rank == 0, ls_trace_topk, bhg, 8);  // block 0 attended (and merged, when it completed the head)
    LS_GMARK_IF(rank == 0, ls_trace_topk, bhg, 9);
    cluster_wait();
}

#define LS_TOPK_SAMPLE_SPREAD(NAME, DIM, C, SPLIT)                                                                 \
    extern "C" __global__ void __cluster_dims__(C, 1, 1) __launch_bounds__(TOPK_THREADS) NAME(LS_TOPK_ARGS) {     \
        const PickAttn attn LS_PICK_ATTN;                                                                          \
        topk_sample_spread_body<DIM, C, SPLIT>(tally, idx, scores, G, cap, k, smem_keys, pick_pos, pick_score,     \
                                               pick_count, attn);                                                  \
    }
LS_TOPK_SAMPLE_SPREAD(ls_topk_sample_spread_d64, 64, 2, false)
LS_TOPK_SAMPLE_SPREAD(ls_topk_sample_spread_d128, 128, 2, false)
LS_TOPK_SAMPLE_SPREAD(ls_topk_sample_spreadc_d64, 64, 2, true)
LS_TOPK_SAMPLE_SPREAD(ls_topk_sample_spreadc_d128, 128, 2, true)

#define LS_TOPK_FAN_PAIR(NAME, DIM)                                                                               \
    extern "C" __global__ void __cluster_dims__(2, 1, 1) __launch_bounds__(TOPK_THREADS) NAME(LS_TOPK_ARGS) {     \
        const PickAttn attn LS_PICK_ATTN;                                                                          \
        topk_fan_body<DIM, 2, true>(tally, idx, scores, G, cap, k, smem_keys, pick_pos, pick_score, pick_count,    \
                                    attn);                                                                         \
    }
LS_TOPK_FAN_PAIR(ls_topk_fan2s_d64, 64)
LS_TOPK_FAN_PAIR(ls_topk_fan2s_d128, 128)

#endif

// ------------------------------------------------------------------------------------------------ attention

// One softmax per query head over the band (sinks [0, sinks) and window [ctx - window, ctx), shared by the
// group's G heads) and that head's picks (their scores from the top-k). Work items per bh = blockIdx.y: band
// chunks of CHUNK keys (all G heads), then G x pick_parts pick chunks of CHUNK picks (one head each). The band
// chunks need nothing from the select or the top-k, so they are launched apart (items [0, band_items)) and run
// beside them; the pick chunks (items [band_items, items)) follow the top-k, or the top-k blocks attend over
// their own picks (topk_attend, pick_parts = blocks per head) and this kernel runs the band alone. Each lane
// group issues every row load of its item (keys and values) before the first use. Each item writes its own
// heads' partials and counts them; the merge is merge_head's. An item with nothing for its head writes
// m = -inf, l = 0.
//   vals [BH, ctx, D] bf16; q [BH, G, D] fp32 scaled
#define ATTN_THREADS 256
#define ATTN_MAX_ITEMS 256  // work items per row (band chunks + G x pick chunks)

template <int D, int GA, int CHUNK>
__device__ void attn_body(const float* __restrict__ q, const bf16_t* __restrict__ keys,
                          const bf16_t* __restrict__ vals, long long ctx, int sinks, int window, int G, int k,
                          const int* __restrict__ pick_pos, const float* __restrict__ pick_score,
                          const int* __restrict__ pick_count, int item0, int items, int pick_parts,
                          float* __restrict__ part_ml,
                          float* __restrict__ part_o, unsigned int* __restrict__ done,
                          unsigned int* __restrict__ tally, unsigned int* __restrict__ count,
                          float* __restrict__ out, float* __restrict__ lse) {
    constexpr int LPS = D / 8, NSUB = ATTN_THREADS / LPS, ROWS = CHUNK / NSUB, NW = ATTN_THREADS / 32;
    grid_dep_wait();  // the picks (programmatic launch after the top-k; nothing to wait for on the band)
    [[maybe_unused]] const int trace_item = (int)(blockIdx.y * gridDim.x + blockIdx.x);
    LS_GMARK_IF(item0 == 0, ls_trace_band, trace_item, 0);
    LS_MARK_IF(item0 == 0, ls_trace_band, trace_item, 2);
    __shared__ __align__(16) float qf[LS_MAX_GA * D];  // read as float4 by the band's scores
    __shared__ float s[LS_MAX_GA][CHUNK];
    __shared__ float acc[LS_MAX_GA * D];
    __shared__ float mx[LS_MAX_GA], sm[LS_MAX_GA];
    __shared__ unsigned int s_last;
    __shared__ float ml_s[2 * ATTN_MAX_ITEMS];
    // each warp's sums of the values, every head at once (also merge_head's scratch: >= ATTN_THREADS floats)
    __shared__ __align__(16) float red[GA * NW * D];
    const long long bh = blockIdx.y;
    const int item = item0 + blockIdx.x;
    const int band = sinks + window;
    const int band_items = (band + CHUNK - 1) / CHUNK;
    const int sub = threadIdx.x / LPS, part = threadIdx.x % LPS;
    const bf16_t* kb = keys + bh * ctx * D;
    const bf16_t* vb = vals + bh * ctx * D;
    const bool is_band = item < band_items;
    int g_lo, g_hi, nkeys, first;
    long long pick_base = 0;
    if (is_band) {
        g_lo = 0;
        g_hi = G;
        first = item * CHUNK;
        nkeys = min(CHUNK, band - first);
    } else {
        const int r = item - band_items;
        const int g = r / pick_parts;
        first = (r % pick_parts) * CHUNK;
        g_lo = g;
        g_hi = g + 1;
        pick_base = (bh * G + g) * k + first;
        nkeys = max(0, min(CHUNK, pick_count[bh * G + g] - first));
    }
    // every row this lane group needs, loads issued first
    uint4 kraw[ROWS], vraw[ROWS];
#pragma unroll
    for (int u = 0; u < ROWS; ++u) {
        const int j = sub + NSUB * u;
        kraw[u] = make_uint4(0, 0, 0, 0);
        vraw[u] = make_uint4(0, 0, 0, 0);
        if (j < nkeys) {
            long long pos;
            if (is_band) {
                const int b = first + j;
                pos = b < sinks ? b : ctx - window + (b - sinks);
                kraw[u] = __ldg(reinterpret_cast<const uint4*>(kb + pos * D) + part);
            } else {
                pos = __ldg(pick_pos + pick_base + j);
            }
            vraw[u] = __ldg(reinterpret_cast<const uint4*>(vb + pos * D) + part);
        }
    }
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        qf[i] = q[bh * G * D + i];
        acc[i] = 0.f;
    }
    if (!is_band)
        for (int j = threadIdx.x; j < nkeys; j += blockDim.x) s[g_lo][j] = __ldg(pick_score + pick_base + j);
    __syncthreads();
    LS_MARK_IF(item0 == 0, ls_trace_band, trace_item, 3);  // the query in shared memory (the rows: at first use)
    if (is_band) {
        // every head of a row at once (GA independent chains: one after another, the row's shuffles were a
        // warp's whole latency, 7.8k of the band block's 17.8k cycles at 128K); heads past G are computed on
        // whatever qf holds there and never stored
#pragma unroll
        for (int u = 0; u < ROWS; ++u) {
            const int j = sub + NSUB * u;
            float kf[8];
            bf16x8_to_float(kraw[u], kf);
            float a[GA];
#pragma unroll
            for (int g = 0; g < GA; ++g) {
                const float4* qv = reinterpret_cast<const float4*>(qf + g * D + part * 8);
                const float4 q0 = qv[0], q1 = qv[1];
                a[g] = q0.x * kf[0];
                a[g] = fmaf(q0.y, kf[1], a[g]);
                a[g] = fmaf(q0.z, kf[2], a[g]);
                a[g] = fmaf(q0.w, kf[3], a[g]);
                a[g] = fmaf(q1.x, kf[4], a[g]);
                a[g] = fmaf(q1.y, kf[5], a[g]);
                a[g] = fmaf(q1.z, kf[6], a[g]);
                a[g] = fmaf(q1.w, kf[7], a[g]);
            }
#pragma unroll
            for (int m = LPS / 2; m >= 1; m >>= 1)
#pragma unroll
                for (int g = 0; g < GA; ++g) a[g] += __shfl_xor_sync(0xffffffffu, a[g], m);
            if (part == 0 && j < nkeys)
#pragma unroll
                for (int g = 0; g < GA; ++g)
                    if (g < G) s[g][j] = a[g];
        }
        __syncthreads();
    }
    // softmax statistics of the chunk, per head (warp g)
    if ((threadIdx.x >> 5) < G) {
        const int g = threadIdx.x >> 5, l = threadIdx.x & 31;
        const bool here = g >= g_lo && g < g_hi;
        float m = LS_NEG_INF;
        if (here)
            for (int j = l; j < nkeys; j += 32) m = fmaxf(m, s[g][j]);
#pragma unroll
        for (int o = 16; o >= 1; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        float z = 0.f;
        if (here)
            for (int j = l; j < nkeys; j += 32) {
                const float p = __expf(s[g][j] - m);
                s[g][j] = p;
                z += p;
            }
#pragma unroll
        for (int o = 16; o >= 1; o >>= 1) z += __shfl_xor_sync(0xffffffffu, z, o);
        if (l == 0) {
            mx[g] = m;
            sm[g] = z;
        }
    }
    __syncthreads();
    LS_MARK_IF(item0 == 0, ls_trace_band, trace_item, 4);  // the keys' scores and their softmax
    {
        float o[GA][8];
#pragma unroll
        for (int g = 0; g < GA; ++g)
#pragma unroll
            for (int e = 0; e < 8; ++e) o[g][e] = 0.f;
#pragma unroll
        for (int u = 0; u < ROWS; ++u) {
            const int j = sub + NSUB * u;
            if (j < nkeys) {
                float vf[8];
                bf16x8_to_float(vraw[u], vf);
#pragma unroll
                for (int g = 0; g < GA; ++g) {
                    if (g >= g_lo && g < g_hi) {
                        const float p = s[g][j];
#pragma unroll
                        for (int e = 0; e < 8; ++e) o[g][e] = fmaf(p, vf[e], o[g][e]);
                    }
                }
            }
        }
        // sum over the lane groups: a warp's by shuffles, then the warps' through red[GA][NW][D], every head
        // at once (a head at a time took two barriers each; shared float atomics would spin on compare-and-swap:
        // measured 31-47 us for this kernel at batch 1 with them)
#pragma unroll
        for (int m = 16; m >= LPS; m >>= 1)
#pragma unroll
            for (int g = 0; g < GA; ++g)
#pragma unroll
                for (int e = 0; e < 8; ++e) o[g][e] += __shfl_xor_sync(0xffffffffu, o[g][e], m);
        if ((threadIdx.x & 31) < LPS) {
            const int w = threadIdx.x >> 5;
#pragma unroll
            for (int g = 0; g < GA; ++g) {
                if (g >= g_lo && g < g_hi) {  // block-uniform
                    float4* dst = reinterpret_cast<float4*>(red + (g * NW + w) * D + part * 8);
                    dst[0] = make_float4(o[g][0], o[g][1], o[g][2], o[g][3]);
                    dst[1] = make_float4(o[g][4], o[g][5], o[g][6], o[g][7]);
                }
            }
        }
        __syncthreads();
        for (int i = threadIdx.x; i < (g_hi - g_lo) * D; i += blockDim.x) {
            const int g = g_lo + i / D, dd = i % D;
            float t = 0.f;
#pragma unroll
            for (int w = 0; w < NW; ++w) t += red[(g * NW + w) * D + dd];
            acc[g * D + dd] = t;
        }
        __syncthreads();
    }
    LS_MARK_IF(item0 == 0, ls_trace_band, trace_item, 5);  // the values summed
    // this item's partials, for its own heads only
    for (int i = threadIdx.x; i < (g_hi - g_lo) * D; i += blockDim.x) {
        const int g = g_lo + i / D, dd = i % D;
        const bool any = nkeys > 0;
        const long long slot = (bh * items + item) * G + g;
        part_o[slot * D + dd] = any ? acc[g * D + dd] : 0.f;
        if (dd == 0) {
            part_ml[slot * 2] = any ? mx[g] : LS_NEG_INF;
            part_ml[slot * 2 + 1] = any ? sm[g] : 0.f;
        }
    }
    // the item that completes a head's partials merges that head; release and acquire by warp 0's lane g for
    // head g (the heads' counts in parallel, not one round trip after another), ordered for the block by the
    // barriers around it
    __syncthreads();
    if (threadIdx.x < 32) {
        const int g = g_lo + (int)threadIdx.x;
        bool mine = false;
        if (g < g_hi) {
            __threadfence();
            mine = completes_head(done, bh, g, G, band_items + pick_parts);
            if (mine) __threadfence();
        }
        const unsigned int last = __ballot_sync(0xffffffffu, mine) << g_lo;
        if (threadIdx.x == 0) s_last = last;
    }
    __syncthreads();
    LS_GMARK_IF(item0 == 0, ls_trace_band, trace_item, 1);
    LS_MARK_IF(item0 == 0, ls_trace_band, trace_item, 6);  // partials written, fenced and counted
    const unsigned int last = s_last;
    if (!last) return;
    for (int g = g_lo; g < g_hi; ++g)
        if ((last >> g) & 1u)  // block-uniform
            merge_head<D>(bh, g, G, items, band_items, pick_parts, part_ml, part_o, done, tally, count, out, lse,
                          ml_s, red, mx);
}

// GA: query heads per KV head the registers hold (G <= GA); CHUNK: keys per work item; MINB: blocks kept
// resident per SM (3 for GA = 4 at CHUNK 128: 112 registers a thread gave 2, and the pass is latency-bound)
#define LS_ATTN(DIM, GA, CHUNK, MINB)                                                                                \
    extern "C" __global__ void __launch_bounds__(ATTN_THREADS, MINB) ls_attn_d##DIM##_g##GA##_c##CHUNK(            \
        const float* q, const bf16_t* keys, const bf16_t* vals, long long ctx, int sinks, int window, int G, int k, \
        const int* pick_pos, const float* pick_score, const int* pick_count, int item0, int items, int pick_parts,  \
        float* part_ml, float* part_o, unsigned int* done, unsigned int* tally, unsigned int* count, float* out,     \
        float* lse) {                                                                                             \
        attn_body<DIM, GA, CHUNK>(q, keys, vals, ctx, sinks, window, G, k, pick_pos, pick_score, pick_count, item0, \
                                  items, pick_parts, part_ml, part_o, done, tally, count, out, lse);                 \
    }
LS_ATTN(64, 4, 128, 3)
LS_ATTN(64, 8, 128, 2)
LS_ATTN(128, 4, 128, 3)
LS_ATTN(128, 8, 128, 2)
LS_ATTN(64, 4, 64, 4)
LS_ATTN(64, 8, 64, 2)
LS_ATTN(128, 4, 64, 4)
LS_ATTN(128, 8, 64, 2)

// An empty kernel (benchmarks/gpu/bench_fused.py times the layer's graph topology with it: the launch overhead
// every layer pays whatever its kernels do). It takes part in programmatic launch like the real ones.
extern "C" __global__ void ls_nop(int* sink) {
    grid_dep_wait();
    grid_dep_launch();
    if (sink != nullptr && threadIdx.x == 0 && blockIdx.x == 0) sink[0] = 0;
}

// ------------------------------------------------------------------------------------------------ one launch

#include "ls_layer.cuh"  // ls_layer_d*: the whole layer in one launch, a cluster of blocks per row
