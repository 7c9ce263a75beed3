// SCF filter on the b1 tensor-core MMA over key signs stored in MMA fragment order (issue 18, second target).
//
// Survival rule (cemsim/gpu/reference.py): key k survives for a group of G query heads when some query q has
// D - popc(q ^ k) >= T, i.e. popc(q ^ k) <= L = D - T.
//
// Layout "frag" (cemsim/gpu/sign_layout.py): keys in groups of 4, each group's 4 x 2W 32-bit words stored
// word-major, so u32 index 8W (n / 4) + 4 w + n % 4 holds word w of key n (dims 32w..32w+31, bit d % 32).
// In a block of 32 keys, lane L = 4 g + t of a warp then finds word t of keys 4g..4g+3 in one 16-byte load
// (D = 128; D = 64 has 2 words a key, lanes t and t + 2 load the same 16 bytes): exactly the A fragments of
// two m16n8 MMAs whose rows g and g + 8 are keys 4g + 2T and 4g + 2T + 1 (tile T = 0, 1).
//
// popc(q ^ k) from the tensor core with no popc(k) per key: .and.popc on [k | ~k] x [~q | q], since
// popc(k & ~q) + popc(~k & q) = popc(k ^ q). D = 128: one m16n8k256 (K256) or two chained m16n8k128 per
// tile; D = 64: one m16n8k128 whose lanes t >= 2 hold ~k and q. (.xor.popc does the same in one PTX
// instruction, but sm_90 has no XOR BMMA: ptxas calls a routine of two AND BMMAs plus adds, measured 10-20 %
// slower than the AND form in the old kernel.)
// The accumulator starts at -(L + 1) for a present query and 0 for an absent one (B = 0), so a sign bit set
// means "passes"; the sign bits of a key's columns are OR-ed, packed four keys to a nibble, OR-ed over the
// four lanes of the quad (two shuffles), and lane L's bit of its own key goes into one ballot: bit L of the
// survivor word is key L of the block, the order the bitmap and the compaction want.

#pragma once

#ifndef SCF_FRAG_TYPES
#define SCF_FRAG_TYPES
typedef unsigned long long u64;
typedef unsigned int u32;
#endif

#define FRAG_MAX_NB 2  // query blocks of 8: G <= 16

#if !(defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
// No b1 tensor cores before sm_80: the same products one element at a time through shuffles. KK = 128 or 256
// bits; fragment words as in the PTX ISA (a[r + 2h]: row g + 8r, bits 128h + 32t..; b[h]: bits 128h + 32t..).
template <int KK>
__device__ __forceinline__ void frag_mma_emulated(int (&d)[4], const u32* a, const u32* b, const int (&c)[4]) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int row = (lane >> 2) + (j >> 1) * 8, col = 2 * (lane & 3) + (j & 1);
        int s = c[j];
        for (int h = 0; h < KK / 128; ++h)
            for (int w = 0; w < 4; ++w) {
                const u32 lo = __shfl_sync(0xffffffffu, a[2 * h], (row & 7) * 4 + w);
                const u32 hi = __shfl_sync(0xffffffffu, a[2 * h + 1], (row & 7) * 4 + w);
                const u32 bw = __shfl_sync(0xffffffffu, b[h], col * 4 + w);
                s += __popc((row >= 8 ? hi : lo) & bw);
            }
        d[j] = s;
    }
}
#endif

// d = popc(A & B) + c for one m16n8 tile; c is read, not overwritten, so the bias registers live on.
__device__ __forceinline__ void frag_mma_and_k128(int (&d)[4], u32 a0, u32 a1, u32 b0, const int (&c)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k128.row.col.s32.b1.b1.s32.and.popc "
        "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%7, %8, %9, %10};\n"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a0), "r"(a1), "r"(b0), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]));
#else
    const u32 a[2] = {a0, a1}, b[1] = {b0};
    frag_mma_emulated<128>(d, a, b, c);
#endif
}

__device__ __forceinline__ void frag_mma_and_k256(int (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1,
                                                  const int (&c)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]));
#else
    const u32 a[4] = {a0, a1, a2, a3}, b[2] = {b0, b1};
    frag_mma_emulated<256>(d, a, b, c);
#endif
}

// W = D / 64 words a key; NB: blocks of 8 query heads (G <= 8 NB); K256: D = 128 through one m16n8k256 per
// tile, else two chained m16n8k128 (k with ~q, then ~k with q).
template <int W, int NB, bool K256>
struct FragFilter {
    u32 bn[NB], bq[NB];  // B fragments: this lane's word of ~q and of q (D = 64: one word, bn)
    int c[NB][4];        // accumulator start per column: -(L + 1), or 0 for an absent query (B = 0)
    u32 tbit;            // 1 << t: this lane's own key of its quad's four

    // qs: the group's query signs [G][W] (shared memory or global)
    __device__ __forceinline__ void init(const u64* qs, int G, int threshold) {
        constexpr int D = 64 * W;
        const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
        // survive when popc(q ^ k) <= L; clamping T to [0, D + 1] keeps every answer and cannot overflow
        const int L = D - min(max(threshold, 0), D + 1);
        tbit = 1u << t;
#pragma unroll
        for (int i = 0; i < NB; ++i) {
            const int qi = 8 * i + g;
            const int wt = W == 1 ? (t & 1) : t;  // the query's 32-bit word this lane's B holds
            u32 qw = 0;
            if (qi < G) {
                const u64 q = qs[qi * W + (wt >> 1)];
                qw = (wt & 1) ? (u32)(q >> 32) : (u32)q;
            }
            const u32 nq = qi < G ? ~qw : 0u;
            bn[i] = (W == 1 && t >= 2) ? qw : nq;  // D = 64: lanes t >= 2 pair ~k with q
            bq[i] = qw;
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                const int col = 8 * i + 2 * t + j;
                c[i][j] = c[i][j + 2] = col < G ? -(L + 1) : 0;
            }
        }
    }

    // v: this lane's 16 bytes of one 32-key block (word t of keys 4g..4g+3). Returns the survivor word, bit
    // L = key L of the block (every lane gets it; keys past the end are the caller's to mask).
    __device__ __forceinline__ u32 word(uint4 v) const {
        u32 k[4] = {v.x, v.y, v.z, v.w};
        if (W == 1 && (threadIdx.x & 2)) {  // lanes t >= 2 of D = 64 hold ~k
#pragma unroll
            for (int i = 0; i < 4; ++i) k[i] = ~k[i];
        }
        int m[4] = {0, 0, 0, 0};  // sign bit: key 4g + i passes in one of this lane's columns
#pragma unroll
        for (int i = 0; i < NB; ++i) {
#pragma unroll
            for (int tile = 0; tile < 2; ++tile) {
                int d[4];
                const u32 a0 = k[2 * tile], a1 = k[2 * tile + 1];
                if (W == 1) {
                    frag_mma_and_k128(d, a0, a1, bn[i], c[i]);
                } else if (K256) {
                    frag_mma_and_k256(d, a0, a1, ~a0, ~a1, bn[i], bq[i], c[i]);
                } else {
                    int e[4];
                    frag_mma_and_k128(e, a0, a1, bn[i], c[i]);
                    frag_mma_and_k128(d, ~a0, ~a1, bq[i], e);
                }
                m[2 * tile] |= d[0] | d[1];
                m[2 * tile + 1] |= d[2] | d[3];
            }
        }
        // nibble: bit i = sign of m[i]
        u32 nib = (u32)m[3] >> 31;
#pragma unroll
        for (int i = 2; i >= 0; --i) nib = __funnelshift_l((u32)m[i], nib, 1);
        nib |= __shfl_xor_sync(0xffffffffu, nib, 1);
        nib |= __shfl_xor_sync(0xffffffffu, nib, 2);
        return __ballot_sync(0xffffffffu, (nib & tbit) != 0u);
    }
};

// This lane's part of a frag-layout key array (W u64 words a key): block b's 16 bytes are at the returned
// pointer + 16 W b. Lanes t and t + 2 of D = 64 share theirs.
template <int W>
__device__ __forceinline__ const uint4* frag_lane_ptr(const u64* k, long long first_block) {
    const int lane = threadIdx.x & 31;
    return reinterpret_cast<const uint4*>(k) + first_block * (16 * W) +
           (W == 2 ? lane : (lane >> 2) * 2 + (lane & 1));
}

// Streaming 16-byte load, volatile so the compiler keeps a warp's loads ahead of its first MMA as written,
// with no L1 allocation (every byte is read once).
__device__ __forceinline__ uint4 frag_ld(const uint4* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

// Survivor words w[j] of U consecutive blocks starting where p points (uniform over the warp), nvalid of them
// real: the rest read nothing and give 0. Full groups take a path with no per-block checks.
template <int W, int NB, bool K256, int U>
__device__ __forceinline__ void frag_words(const FragFilter<W, NB, K256>& f, const uint4* p, long long nvalid,
                                           u32 (&w)[U]) {
    uint4 v[U];
    if (nvalid >= U) {
#pragma unroll
        for (int j = 0; j < U; ++j) v[j] = frag_ld(p + j * 16 * W);
#pragma unroll
        for (int j = 0; j < U; ++j) w[j] = f.word(v[j]);
        return;
    }
#pragma unroll
    for (int j = 0; j < U; ++j)
        if (j < nvalid) v[j] = frag_ld(p + j * 16 * W);
#pragma unroll
    for (int j = 0; j < U; ++j) w[j] = j < nvalid ? f.word(v[j]) : 0u;  // warp-uniform condition
}

// Bits i of a 32-key word starting at key kb whose key kb + i lies in [lo, hi).
__device__ __forceinline__ u32 frag_range_mask(long long kb, long long lo, long long hi) {
    const long long a = lo > kb ? lo - kb : 0, b = hi - kb < 32 ? hi - kb : 32;
    if (b <= a) return 0u;
    return (b >= 32 ? 0xffffffffu : (1u << b) - 1u) & ~((1u << a) - 1u);
}

// cp.async: 16 bytes global -> shared without a register (sm_80+; a plain copy before), and its group waits.
__device__ __forceinline__ void frag_cp_async(uint4* smem, const uint4* gmem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"((u32)__cvta_generic_to_shared(smem)),
                 "l"(gmem));
#else
    *smem = *gmem;
#endif
}
__device__ __forceinline__ void frag_cp_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N>
__device__ __forceinline__ void frag_cp_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// Survivor words of the chunks c = c0, c0 + stride, ... of U blocks each (the warp's share of nblk blocks),
// streamed through a ring of S stages of this warp's shared memory by cp.async: S - 1 chunks are in flight
// while one is tested, whatever registers the compiler gives the loop. Each lane reads back only the 16 bytes
// it copied, so no barrier is needed. emit(block, word) is called by lane j < U for block c U + j.
template <int W, int NB, bool K256, int U, int S, typename Emit>
__device__ __forceinline__ void frag_stream(const FragFilter<W, NB, K256>& f, const u64* __restrict__ k,
                                            long long nblk, long long c0, long long stride,
                                            uint4 (*ring)[U][32], Emit emit) {
    const int lane = threadIdx.x & 31;
    const uint4* kp = frag_lane_ptr<W>(k, 0);
    const long long nchunk = (nblk + U - 1) / U;
    auto issue = [&](long long c, int stage) {
        if (c < nchunk) {
#pragma unroll
            for (int j = 0; j < U; ++j)
                if (c * U + j < nblk) frag_cp_async(&ring[stage][j][lane], kp + (c * U + j) * (16 * W));
        }
        frag_cp_commit();  // an empty group keeps the wait count uniform
    };
#pragma unroll
    for (int s = 0; s < S - 1; ++s) issue(c0 + s * stride, s);
    int stage = 0;
    for (long long c = c0; c < nchunk; c += stride) {
        issue(c + (S - 1) * stride, stage == 0 ? S - 1 : stage - 1);  // the stage tested last round
        frag_cp_wait<S - 1>();
        const long long nvalid = nblk - c * U;
        u32 out = 0;
        if (nvalid >= U) {
#pragma unroll
            for (int j = 0; j < U; ++j) {
                const u32 b = f.word(ring[stage][j][lane]);
                if (lane == j) out = b;
            }
        } else {
#pragma unroll
            for (int j = 0; j < U; ++j) {
                if (j < nvalid) {  // warp-uniform
                    const u32 b = f.word(ring[stage][j][lane]);
                    if (lane == j) out = b;
                }
            }
        }
        if (lane < U && lane < nvalid) emit(c * U + lane, out);
        stage = stage == S - 1 ? 0 : stage + 1;
    }
    frag_cp_wait<0>();
}

