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
// popc(k & ~q) + popc(~k & q) = popc(k ^ q). D = 128: two chained m16n8k128 per tile (k with ~q, then ~k
// with q; one m16n8k256 on [k | ~k] measured 0-10 % slower); D = 64: one m16n8k128 whose lanes t >= 2 hold
// ~k and q. (.xor.popc says the same in one PTX instruction, but sm_90 has no XOR BMMA: ptxas calls a
// routine of two AND BMMAs plus adds, 7x below the AND form's issue rate on the H200.)
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

#if !(defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
// No b1 tensor cores before sm_80: the same product one element at a time through shuffles (fragment words as
// in the PTX ISA: a0 row g, a1 row g + 8, bits 32t..32t+31; b0 bits 32t.. of column g).
__device__ __forceinline__ void frag_mma_emulated(int (&d)[4], u32 a0, u32 a1, u32 b0, const int (&c)[4]) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int row = (lane >> 2) + (j >> 1) * 8, col = 2 * (lane & 3) + (j & 1);
        int s = c[j];
        for (int w = 0; w < 4; ++w) {
            const u32 lo = __shfl_sync(0xffffffffu, a0, (row & 7) * 4 + w);
            const u32 hi = __shfl_sync(0xffffffffu, a1, (row & 7) * 4 + w);
            const u32 bw = __shfl_sync(0xffffffffu, b0, col * 4 + w);
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
    frag_mma_emulated(d, a0, a1, b0, c);
#endif
}

// W = D / 64 words a key; NB: blocks of 8 query heads (G <= 8 NB).
template <int W, int NB>
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
template <int W, int NB, int U>
__device__ __forceinline__ void frag_words(const FragFilter<W, NB>& f, const uint4* p, long long nvalid,
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
