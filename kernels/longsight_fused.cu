// LongSight's sparse region on the GPU, fused (issue 18): for every (user, KV head) of a batch in one launch
// per stage, with no host synchronisation (the whole layer is capturable in a CUDA graph):
//   ls_select    SCF filter on packed signs + survivor compaction + exact scores of the survivors
//   ls_topk      exact top-k per query head over the survivors' scores by radix select (4 passes of 8 bits)
//   ls_attn      one attention pass over sinks + window (shared by the group) and each head's picks, split
//                FlashDecoding-style into chunks that each write (max, sum, partial output)
//   ls_combine   merges the chunks into one softmax per query head
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
#define LS_KPT 8      // 32-key words per warp per iteration of the filter
#define LS_WARPS 8    // warps per block of ls_select and of the bitmap filters
#define LS_ROWS 4     // survivor key rows each lane group of ls_select has in flight
#define LS_FRAG 3     // ls_select's filter method on frag-layout signs (scf_frag.cuh)

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short bf16_t;  // bf16 bit patterns: no header needed under NVRTC
#define LS_NEG_INF __int_as_float(0xff800000)

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
// popcount). B: word t of query 8 * nb + grp. C: popc(q & k) for rows grp, grp + 8, columns 2t, 2t + 1.
__device__ __forceinline__ void mma_b1_and_popc(int (&c)[4], u32 a0, u32 a1, u32 b0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k128.row.col.s32.b1.b1.s32.and.popc "
        "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(b0));
#else
    // no b1 tensor cores before sm_80: the same AND-popcounts one element at a time through shuffles
    const int lane = threadIdx.x & 31, grp = lane >> 2, t = lane & 3;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int row = grp + (j >> 1) * 8, col = 2 * t + (j & 1);
        int s = 0;
        for (int w = 0; w < 4; ++w) {
            const u32 aw = __shfl_sync(0xffffffffu, (j >> 1) ? a1 : a0, (row & 7) * 4 + w);
            const u32 bw = __shfl_sync(0xffffffffu, b0, col * 4 + w);
            s += __popc(aw & bw);
        }
        c[j] += s;
    }
#endif
}

// The same shape with .xor.popc: c = popc(q ^ k) directly, so no popc(k) per key (measured against .and).
__device__ __forceinline__ void mma_b1_xor_popc(int (&c)[4], u32 a0, u32 a1, u32 b0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k128.row.col.s32.b1.b1.s32.xor.popc "
        "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(b0));
#else
    const int lane = threadIdx.x & 31, grp = lane >> 2, t = lane & 3;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int row = grp + (j >> 1) * 8, col = 2 * t + (j & 1);
        int s = 0;
        for (int w = 0; w < 4; ++w) {
            const u32 aw = __shfl_sync(0xffffffffu, (j >> 1) ? a1 : a0, (row & 7) * 4 + w);
            const u32 bw = __shfl_sync(0xffffffffu, b0, col * 4 + w);
            s += __popc(aw ^ bw);
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
                        mma_b1_xor_popc(c, a[2 * tile], a[2 * tile + 1], b[i]);
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
                        mma_b1_and_popc(c, a[2 * tile], a[2 * tile + 1], b[i]);
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
// Writes count[bh] += survivors (zeroed beforehand), idx[bh, slot] = key position, scores[bh, g, slot] =
// q_g . k for slot < cap; survivors past cap are counted but dropped (the caller checks count <= cap).
// Each block covers LS_WARPS x LS_KPT x 32 consecutive keys and makes one atomicAdd.
#define LS_BLOCK_KEYS (LS_WARPS * LS_KPT * 32)

template <int W, int METHOD>
__device__ void select_body(const u64* __restrict__ ksig, const u64* __restrict__ qsig,
                            const int* __restrict__ thresholds, const float* __restrict__ q,
                            const bf16_t* __restrict__ keys, long long ctx, long long start, long long n,
                            int G, int cap, unsigned int* __restrict__ count, int* __restrict__ idx,
                            float* __restrict__ scores) {
    constexpr int D = 64 * W;
    constexpr int LPS = D / 8;        // lanes per survivor row: 8 bf16 (16 bytes) each
    constexpr int SPW = 32 / LPS;     // survivor rows per warp at once
    __shared__ u64 qs[LS_MAX_G * 2];
    __shared__ float qf[LS_MAX_GA * D];
    __shared__ int spos[LS_BLOCK_KEYS];
    __shared__ unsigned int warp_total[LS_WARPS];
    __shared__ unsigned int block_base, block_total;
    const long long bh = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) qf[i] = q[bh * G * D + i];
    load_query_signs(qs, qsig + bh * G * W, G, W);
    const int threshold = thresholds[bh];
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
    unsigned int mine = 0;
#pragma unroll
    for (int j = 0; j < LS_KPT; ++j) mine += __popc(words[j]);
    if (lane == 0) warp_total[warp] = mine;
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned int total = 0;
        for (int w = 0; w < LS_WARPS; ++w) {
            const unsigned int t = warp_total[w];
            warp_total[w] = total;  // exclusive prefix
            total += t;
        }
        block_total = total;
        block_base = total ? atomicAdd(count + bh, total) : 0u;
    }
    __syncthreads();
    unsigned int off = warp_total[warp];
#pragma unroll
    for (int j = 0; j < LS_KPT; ++j) {
        const u32 b = words[j];
        if (b & (1u << lane)) spos[off + __popc(b & ((1u << lane) - 1u))] = (int)(a0 + wbase + 32 * j + lane);
        off += __popc(b);
    }
    __syncthreads();
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

#define LS_SELECT(W, METHOD, NAME)                                                                                   \
    extern "C" __global__ void __launch_bounds__(LS_WARPS * 32)                                                  \
        NAME(const u64* ksig, const u64* qsig, const int* thresholds, const float* q, const bf16_t* keys, \
             long long ctx, long long start, long long n, int G, int cap, unsigned int* count, int* idx,         \
             float* scores) {                                                                                    \
        select_body<W, METHOD>(ksig, qsig, thresholds, q, keys, ctx, start, n, G, cap, count, idx, scores);        \
    }
LS_SELECT(1, 0, ls_select_popc_w1)
LS_SELECT(2, 0, ls_select_popc_w2)
LS_SELECT(1, 1, ls_select_mma_w1)
LS_SELECT(2, 1, ls_select_mma_w2)
LS_SELECT(1, 2, ls_select_mmax_w1)
LS_SELECT(2, 2, ls_select_mmax_w2)
LS_SELECT(1, LS_FRAG, ls_select_frag_w1)
LS_SELECT(2, LS_FRAG, ls_select_frag_w2)

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

__device__ __forceinline__ u32 order_key(float f) {
    const u32 u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

extern "C" __global__ void __launch_bounds__(TOPK_THREADS)
    ls_topk(const unsigned int* __restrict__ count, const int* __restrict__ idx, const float* __restrict__ scores,
            int G, int cap, int k, int smem_keys, int mode, int* __restrict__ pick_pos,
            float* __restrict__ pick_score, int* __restrict__ pick_count) {
    extern __shared__ u32 cache[];  // smem_keys entries
    __shared__ unsigned int hist[TOPK_WARPS][256];
    __shared__ unsigned int total[256];
    __shared__ u32 s_prefix, s_mask, s_need, s_done;
    __shared__ unsigned int s_above, s_ties;
    const int bhg = blockIdx.x, bh = bhg / G;
    const int n = min((int)count[bh], cap);
    const int kk = min(k, n);
    const float* sc = scores + (long long)bhg * cap;
    const int* ix = idx + (long long)bh * cap;
    int* out_pos = pick_pos + (long long)bhg * k;
    float* out_score = pick_score + (long long)bhg * k;
    if (threadIdx.x == 0) pick_count[bhg] = kk;
    if (n <= k) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            out_pos[i] = ix[i];
            out_score[i] = sc[i];
        }
        return;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const bool cached = n <= smem_keys;
    if (cached) {
        for (int i0 = 0; i0 < n; i0 += 8 * TOPK_THREADS) {  // 8 loads in flight per thread
            u32 v[8];
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                const int i = i0 + u * TOPK_THREADS + threadIdx.x;
                v[u] = i < n ? order_key(__ldg(sc + i)) : 0u;
            }
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                const int i = i0 + u * TOPK_THREADS + threadIdx.x;
                if (i < n) cache[i] = v[u];
            }
        }
    }
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
                const u32 key = cached ? cache[i] : order_key(__ldg(sc + i));
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
        if (threadIdx.x < 256) {
            unsigned int t = 0;
#pragma unroll 8
            for (int w = 0; w < TOPK_WARPS; ++w) t += hist[w][threadIdx.x];
            total[threadIdx.x] = t;
        }
        __syncthreads();
        if (warp == 0) {
            // lane L owns bins 255 - 8L down to 248 - 8L; a scan from the top finds the k-th element's bin
            unsigned int h[8], mine = 0;
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                h[e] = total[255 - 8 * lane - e];
                mine += h[e];
            }
            narrow_to_bin(h, mine, lane, shift, prefix, mask, s_prefix, s_mask, s_need, s_done);
        }
        __syncthreads();
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
    for (int i0 = 0; i0 < n; i0 += blockDim.x) {
        const int i = i0 + threadIdx.x;
        if (i < n) {
            const u32 m = (cached ? cache[i] : order_key(__ldg(sc + i))) & mask;
            int slot = -1;
            if (m > prefix) {
                slot = (int)atomicAdd(&s_above, 1u);
            } else if (m == prefix) {
                const u32 t = atomicAdd(&s_ties, 1u);
                if (t < need) slot = (int)(n_above + t);
            }
            if (slot >= 0) {
                out_pos[slot] = ix[i];
                out_score[slot] = sc[i];
            }
        }
    }
}

// The same selection spread over a cluster of TOPK_CTAS thread blocks (sm_90): block r of the cluster holds
// scores [r n / C, (r + 1) n / C) of the row in its shared memory, histograms them, and every block reads the
// others' histograms through distributed shared memory, so all take the same bin each pass; the collect
// offsets come the same way. TOPK_CTAS times the SMs and the shared memory per row: at batch 1 a layer has
// only 32 rows (8 KV heads x 4 query heads) for 132 SMs.
#define TOPK_CTAS 4

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
__device__ __forceinline__ unsigned int cluster_rank() {
    unsigned int r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}

__device__ __forceinline__ void cluster_sync_all() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

// a 32-bit word of block ``rank``'s shared memory at the address ``p`` has in this block
__device__ __forceinline__ unsigned int ld_cluster(const unsigned int* p, unsigned int rank) {
    unsigned int local, remote, v;
    asm volatile("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(local) : "l"(p));
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
    asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(v) : "r"(remote) : "memory");
    return v;
}

extern "C" __global__ void __cluster_dims__(TOPK_CTAS, 1, 1) __launch_bounds__(TOPK_THREADS)
    ls_topk_cluster(const unsigned int* __restrict__ count, const int* __restrict__ idx,
                    const float* __restrict__ scores, int G, int cap, int k, int smem_keys,
                    int* __restrict__ pick_pos, float* __restrict__ pick_score, int* __restrict__ pick_count) {
    extern __shared__ u32 cache[];  // smem_keys entries: this block's slice
    __shared__ unsigned int hist[TOPK_WARPS][256];
    __shared__ unsigned int total[256];
    __shared__ unsigned int counts[2];  // this block's (above, ties) for the collect offsets
    __shared__ u32 s_prefix, s_mask, s_need, s_done;
    __shared__ unsigned int s_above, s_ties;
    const unsigned int rank = cluster_rank();
    const int bhg = blockIdx.x / TOPK_CTAS, bh = bhg / G;
    const int n = min((int)count[bh], cap);
    const int kk = min(k, n);
    const float* sc = scores + (long long)bhg * cap;
    const int* ix = idx + (long long)bh * cap;
    int* out_pos = pick_pos + (long long)bhg * k;
    float* out_score = pick_score + (long long)bhg * k;
    if (n <= k) {  // the same for every block of the cluster: all leave, block 0 copies
        if (rank == 0) {
            if (threadIdx.x == 0) pick_count[bhg] = kk;
            for (int i = threadIdx.x; i < n; i += blockDim.x) {
                out_pos[i] = ix[i];
                out_score[i] = sc[i];
            }
        }
        return;
    }
    if (rank == 0 && threadIdx.x == 0) pick_count[bhg] = kk;
    const int lo = (int)(((long long)n * rank) / TOPK_CTAS), hi = (int)(((long long)n * (rank + 1)) / TOPK_CTAS);
    const int m = hi - lo;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const bool cached = m <= smem_keys;
    if (cached) {
        for (int i0 = 0; i0 < m; i0 += 8 * TOPK_THREADS) {
            u32 v[8];
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                const int i = i0 + u * TOPK_THREADS + threadIdx.x;
                v[u] = i < m ? order_key(__ldg(sc + lo + i)) : 0u;
            }
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                const int i = i0 + u * TOPK_THREADS + threadIdx.x;
                if (i < m) cache[i] = v[u];
            }
        }
    }
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
            const u32 key = cached ? cache[i] : order_key(__ldg(sc + lo + i));
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
        const u32 key = (cached ? cache[i] : order_key(__ldg(sc + lo + i))) & mask;
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
    }
    __syncthreads();
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        const u32 key = (cached ? cache[i] : order_key(__ldg(sc + lo + i))) & mask;
        int slot = -1;
        if (key > prefix) {
            slot = (int)(above_off + atomicAdd(&s_above, 1u));
        } else if (key == prefix) {
            const u32 t = ties_off + atomicAdd(&s_ties, 1u);
            if (t < need) slot = (int)(n_above + t);
        }
        if (slot >= 0) {
            out_pos[slot] = ix[lo + i];
            out_score[slot] = sc[lo + i];
        }
    }
    cluster_sync_all();  // no block leaves while another may still read its shared memory
}
#endif

// ------------------------------------------------------------------------------------------------ attention

// One softmax per query head over the band (sinks [0, sinks) and window [ctx - window, ctx), shared by the
// group's G heads) and that head's picks (their scores from ls_topk). Work items per bh = blockIdx.y:
// band chunks of ATTN_CHUNK keys (all G heads), then G x pick chunks of ATTN_CHUNK picks (one head). Each
// lane group issues every row load of its item (keys and values) before the first use. Each item writes, per
// head, (max m, sum l, unnormalised o[D]) to part[bh, item, g]; the last item of bh to finish (a counter per
// bh, reset by that item for the next launch) merges them: out[bh, g] = sum e^(m_i - M) o_i / sum e^(m_i -
// M) l_i, lse[bh, g] = M + log(sum e^(m_i - M) l_i). An item with nothing for head g writes m = -inf, l = 0.
//   vals [BH, ctx, D] bf16; q [BH, G, D] fp32 scaled; part_ml [BH, items, G, 2]; part_o [BH, items, G, D]
#define ATTN_CHUNK 128
#define ATTN_THREADS 256
#define ATTN_MAX_ITEMS 128  // work items per row (band chunks + G x pick chunks)

template <int D, int GA>
__device__ void attn_body(const float* __restrict__ q, const bf16_t* __restrict__ keys,
                          const bf16_t* __restrict__ vals, long long ctx, int sinks, int window, int G, int k,
                          const int* __restrict__ pick_pos, const float* __restrict__ pick_score,
                          const int* __restrict__ pick_count, int items, float* __restrict__ part_ml,
                          float* __restrict__ part_o, unsigned int* __restrict__ done, float* __restrict__ out,
                          float* __restrict__ lse) {
    constexpr int LPS = D / 8, NSUB = ATTN_THREADS / LPS, ROWS = ATTN_CHUNK / NSUB;
    __shared__ float qf[LS_MAX_GA * D];
    __shared__ float s[LS_MAX_GA][ATTN_CHUNK];
    __shared__ float acc[LS_MAX_GA * D];
    __shared__ float mx[LS_MAX_GA], sm[LS_MAX_GA];
    __shared__ unsigned int s_last;
    __shared__ float ml_s[ATTN_MAX_ITEMS * LS_MAX_GA * 2];
    __shared__ __align__(16) float red[NSUB * D];
    const long long bh = blockIdx.y;
    const int item = blockIdx.x;
    const int band = sinks + window;
    const int band_items = (band + ATTN_CHUNK - 1) / ATTN_CHUNK;
    const int sub = threadIdx.x / LPS, part = threadIdx.x % LPS;
    const bf16_t* kb = keys + bh * ctx * D;
    const bf16_t* vb = vals + bh * ctx * D;
    const bool is_band = item < band_items;
    int g_lo, g_hi, nkeys, first;
    long long pick_base = 0;
    if (is_band) {
        g_lo = 0;
        g_hi = G;
        first = item * ATTN_CHUNK;
        nkeys = min(ATTN_CHUNK, band - first);
    } else {
        const int r = item - band_items;
        const int per_head = (k + ATTN_CHUNK - 1) / ATTN_CHUNK;
        const int g = r / per_head;
        first = (r % per_head) * ATTN_CHUNK;
        g_lo = g;
        g_hi = g + 1;
        pick_base = (bh * G + g) * k + first;
        nkeys = max(0, min(ATTN_CHUNK, pick_count[bh * G + g] - first));
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
    if (is_band) {
#pragma unroll
        for (int u = 0; u < ROWS; ++u) {
            const int j = sub + NSUB * u;
            float kf[8];
            bf16x8_to_float(kraw[u], kf);
            for (int g = 0; g < G; ++g) {
                float a = 0.f;
#pragma unroll
                for (int e = 0; e < 8; ++e) a = fmaf(qf[g * D + part * 8 + e], kf[e], a);
#pragma unroll
                for (int m = LPS / 2; m >= 1; m >>= 1) a += __shfl_xor_sync(0xffffffffu, a, m);
                if (part == 0 && j < nkeys) s[g][j] = a;
            }
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
        // sum over the lane groups, one head at a time through red[NSUB][D] (shared float atomics would
        // spin on compare-and-swap: measured 31-47 us for this kernel at batch 1 with them)
#pragma unroll
        for (int g = 0; g < GA; ++g) {
            if (g >= g_lo && g < g_hi) {  // block-uniform
                float4* dst = reinterpret_cast<float4*>(red + sub * D + part * 8);
                dst[0] = make_float4(o[g][0], o[g][1], o[g][2], o[g][3]);
                dst[1] = make_float4(o[g][4], o[g][5], o[g][6], o[g][7]);
                __syncthreads();
                if (threadIdx.x < D) {
                    float t = 0.f;
#pragma unroll
                    for (int u = 0; u < NSUB; ++u) t += red[u * D + threadIdx.x];
                    acc[g * D + threadIdx.x] = t;
                }
                __syncthreads();
            }
        }
    }
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        const int g = i / D, dd = i % D;
        const bool mine = g >= g_lo && g < g_hi && nkeys > 0;
        const long long slot = (bh * items + item) * G + g;
        part_o[slot * D + dd] = mine ? acc[i] : 0.f;
        if (dd == 0) {
            part_ml[slot * 2] = mine ? mx[g] : LS_NEG_INF;
            part_ml[slot * 2 + 1] = mine ? sm[g] : 0.f;
        }
    }
    // the last item of this bh merges every item's partial softmax
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) s_last = (atomicAdd(done + bh, 1u) == (unsigned int)items - 1u) ? 1u : 0u;
    __syncthreads();
    if (!s_last) return;
    if (threadIdx.x == 0) done[bh] = 0u;  // ready for the next launch
    __threadfence();
    // every item's (m, l) in shared memory, then per head M = max m and z = sum e^(m - M) l; the weights
    // e^(m - M) replace m in place, so each output element is one pass of independent loads
    const int nml = items * G;
    for (int i = threadIdx.x; i < nml; i += blockDim.x) {
        ml_s[2 * i] = __ldcg(part_ml + (bh * nml + i) * 2);
        ml_s[2 * i + 1] = __ldcg(part_ml + (bh * nml + i) * 2 + 1);
    }
    __syncthreads();
    if (threadIdx.x < G) {
        const int g = threadIdx.x;
        float m = LS_NEG_INF;
        for (int it = 0; it < items; ++it) m = fmaxf(m, ml_s[2 * (it * G + g)]);
        float z = 0.f;
        for (int it = 0; it < items; ++it) {
            const float mi = ml_s[2 * (it * G + g)];
            const float w = mi == LS_NEG_INF ? 0.f : __expf(mi - m);
            ml_s[2 * (it * G + g)] = w;
            z += w * ml_s[2 * (it * G + g) + 1];
        }
        mx[g] = m;
        sm[g] = z;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        const int g = i / D, dd = i % D;
        const float* po = part_o + (bh * items * G + g) * D + dd;
        float acc_o = 0.f;
#pragma unroll 16
        for (int it = 0; it < items; ++it) acc_o += ml_s[2 * (it * G + g)] * __ldcg(po + (long long)it * G * D);
        out[(bh * G + g) * D + dd] = acc_o / sm[g];
        if (dd == 0) lse[bh * G + g] = mx[g] + logf(sm[g]);
    }
}

// GA: query heads per KV head the registers hold (G <= GA); MINB: blocks kept resident per SM (3 for GA = 4:
// 112 registers a thread gave 2, and the pass is latency-bound)
#define LS_ATTN(DIM, GA, MINB)                                                                                          \
    extern "C" __global__ void __launch_bounds__(ATTN_THREADS, MINB)                                              \
        ls_attn_d##DIM##_g##GA(const float* q, const bf16_t* keys, const bf16_t* vals, long long ctx, int sinks,     \
                               int window, int G, int k, const int* pick_pos, const float* pick_score,             \
                               const int* pick_count, int items, float* part_ml, float* part_o, unsigned int* done, \
                               float* out, float* lse) {                                                           \
        attn_body<DIM, GA>(q, keys, vals, ctx, sinks, window, G, k, pick_pos, pick_score, pick_count, items,       \
                           part_ml, part_o, done, out, lse);                                                        \
    }
LS_ATTN(64, 4, 3)
LS_ATTN(64, 8, 2)
LS_ATTN(128, 4, 3)
LS_ATTN(128, 8, 2)
