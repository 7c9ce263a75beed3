// The SCF filter alone on frag-layout key signs (scf_frag.cuh): bitmap[ceil(N / 32)], bit n % 32 of word
// n / 32 set when key n survives, as DReX's PFUs report it. Issue 18's second target: this at >= 80 % of the
// device-to-device copy bandwidth for G = 1-16 at 16M keys.
//   q       [G, W]  packed query signs of one KV group (G <= 8 NB)
//   k       frag layout of ceil(N / 32) * 32 keys (cemsim/gpu/sign_layout.py; padding keys are masked)
// Each warp takes U consecutive 32-key blocks and issues all U loads before the first MMA.

#include "scf_frag.cuh"

#define FRAG_WARPS 8

template <int W, int NB, int U>
__device__ void frag_bitmap(const u64* q, const u64* __restrict__ k, long long N, int G, int threshold,
                            u32* __restrict__ bitmap) {
    FragFilter<W, NB> f;
    f.init(q, G, threshold);  // a few query words a lane, from L2
    const int lane = threadIdx.x & 31;
    const long long words = (N + 31) >> 5;
    const long long w0 = ((long long)blockIdx.x * FRAG_WARPS + (threadIdx.x >> 5)) * U;
    if (w0 >= words) return;  // warp-uniform
    u32 w[U], out = 0;
    frag_words<W, NB, U>(f, frag_lane_ptr<W>(k, w0), words - w0, w);
#pragma unroll
    for (int j = 0; j < U; ++j)
        if (lane == j) out = w[j];
    if (lane < U && w0 + lane < words) bitmap[w0 + lane] = out & frag_range_mask(32 * (w0 + lane), 0, N);
}

#define SCF_FRAG(NAME, W, NB, U)                                                                    \
    extern "C" __global__ void __launch_bounds__(FRAG_WARPS * 32)                                        \
        NAME(const u64* q, const u64* k, long long N, int G, int threshold, u32* bitmap) {               \
        frag_bitmap<W, NB, U>(q, k, N, G, threshold, bitmap);                                            \
    }
// U: blocks a warp loads up front, 4 KiB for D = 128 and D = 64 (U = 4 measured 0-15 % slower, a persistent
// cp.async ring of 3 x 4 blocks a warp 0-35 % slower: benchmarks/gpu/results/h200-filter-run3-2026-12-02.json)
SCF_FRAG(scf_frag_w2_g8, 2, 1, 8)
SCF_FRAG(scf_frag_w2_g16, 2, 2, 8)
SCF_FRAG(scf_frag_w1_g8, 1, 1, 16)
SCF_FRAG(scf_frag_w1_g16, 1, 2, 16)
