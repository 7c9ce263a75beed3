// The SCF filter alone on frag-layout key signs (scf_frag.cuh): bitmap[ceil(N / 32)], bit n % 32 of word
// n / 32 set when key n survives, as DReX's PFUs report it. Issue 18's second target: this at >= 80 % of the
// device-to-device copy bandwidth for G = 1-16 at 16M keys.
//   q       [G, W]  packed query signs of one KV group (G <= 8 NB)
//   k       frag layout of ceil(N / 32) * 32 keys (cemsim/gpu/sign_layout.py; padding keys are masked)
// Each warp takes U consecutive 32-key blocks and issues all U loads before the first MMA.

#include "scf_frag.cuh"

#define FRAG_WARPS 8

template <int W, int NB, bool K256, int U>
__device__ void frag_bitmap(const u64* q, const u64* __restrict__ k, long long N, int G, int threshold,
                            u32* __restrict__ bitmap) {
    FragFilter<W, NB, K256> f;
    f.init(q, G, threshold);  // a few query words a lane, from L2
    const int lane = threadIdx.x & 31;
    const long long words = (N + 31) >> 5;
    const long long w0 = ((long long)blockIdx.x * FRAG_WARPS + (threadIdx.x >> 5)) * U;
    if (w0 >= words) return;  // warp-uniform
    u32 w[U], out = 0;
    frag_words<W, NB, K256, U>(f, frag_lane_ptr<W>(k, w0), words - w0, w);
#pragma unroll
    for (int j = 0; j < U; ++j)
        if (lane == j) out = w[j];
    if (lane < U && w0 + lane < words) bitmap[w0 + lane] = out & frag_range_mask(32 * (w0 + lane), 0, N);
}

// The same through each warp's cp.async ring (frag_stream): a persistent grid, S stages of U blocks a warp.
template <int W, int NB, bool K256, int U, int S>
__device__ void frag_bitmap_async(const u64* q, const u64* __restrict__ k, long long N, int G, int threshold,
                                  u32* __restrict__ bitmap) {
    __shared__ uint4 ring[FRAG_WARPS][S][U][32];  // 48 KiB at U = 4, S = 3
    FragFilter<W, NB, K256> f;
    f.init(q, G, threshold);  // a few query words a lane, from L2
    const int warp = threadIdx.x >> 5;
    const long long words = (N + 31) >> 5;
    frag_stream<W, NB, K256, U, S>(f, k, words, (long long)blockIdx.x * FRAG_WARPS + warp,
                                   (long long)gridDim.x * FRAG_WARPS, ring[warp], [&](long long blk, u32 word) {
                                       bitmap[blk] = word & frag_range_mask(32 * blk, 0, N);
                                   });
}

// 4 blocks an SM (48 KiB of ring each): registers capped at 64 so that the persistent grid is one wave
#define SCF_FRAG_ASYNC(NAME, W, NB, K256, U, S)                                                                 \
    extern "C" __global__ void __launch_bounds__(FRAG_WARPS * 32, 4)                                           \
        NAME(const u64* q, const u64* k, long long N, int G, int threshold, u32* bitmap) {                     \
        frag_bitmap_async<W, NB, K256, U, S>(q, k, N, G, threshold, bitmap);                                   \
    }
SCF_FRAG_ASYNC(scf_frag_async_w2_g8, 2, 1, false, 4, 3)
SCF_FRAG_ASYNC(scf_frag_async_w2_g16, 2, 2, false, 4, 3)
SCF_FRAG_ASYNC(scf_frag_async_w1_g8, 1, 1, false, 4, 3)
SCF_FRAG_ASYNC(scf_frag_async_w1_g16, 1, 2, false, 4, 3)
SCF_FRAG_ASYNC(scf_frag_async_k256_w2_g8, 2, 1, true, 4, 3)
SCF_FRAG_ASYNC(scf_frag_async_k256_w2_g16, 2, 2, true, 4, 3)

#define SCF_FRAG(NAME, W, NB, K256, U)                                                                          \
    extern "C" __global__ void __launch_bounds__(FRAG_WARPS * 32)                                              \
        NAME(const u64* q, const u64* k, long long N, int G, int threshold, u32* bitmap) {                     \
        frag_bitmap<W, NB, K256, U>(q, k, N, G, threshold, bitmap);                                            \
    }
SCF_FRAG(scf_frag_w2_g8, 2, 1, false, 8)
SCF_FRAG(scf_frag_w2_g16, 2, 2, false, 8)
SCF_FRAG(scf_frag_w1_g8, 1, 1, false, 16)
SCF_FRAG(scf_frag_w1_g16, 1, 2, false, 16)
SCF_FRAG(scf_frag_w2_g8_u4, 2, 1, false, 4)
SCF_FRAG(scf_frag_w2_g16_u4, 2, 2, false, 4)
SCF_FRAG(scf_frag_w1_g8_u4, 1, 1, false, 4)
SCF_FRAG(scf_frag_w1_g16_u4, 1, 2, false, 4)
