// Bandwidth-oriented sign-concordance filter kernels (issue 7): one key per thread, the G query signs of one
// KV group in shared memory, and outputs shaped like DReX's PFU bitmaps (1 bit per key) or compacted
// survivor indices, so the bytes written are a small fraction of the key-sign bytes read.
//
// Layout as cemsim/attention/signs.py: dimension d is bit d % 64 of uint64 word d / 64 (1 when >= 0).
//   q       [G, W]  packed query signs of one KV group (G <= 32)
//   k       [N, W]  packed key signs, W = 1 (D = 64) or 2 (D = 128)
// A key survives when any query has D - popcount(q ^ k) >= threshold.

#define MAX_G 32

template <int W>
__device__ __forceinline__ bool survives(const unsigned long long* __restrict__ k, long long n,
                                         const unsigned long long* qs, int G, int D, int threshold) {
    unsigned long long kw[W];
    if (W == 2) {
        // one 16-byte load per key
        const ulonglong2 v = reinterpret_cast<const ulonglong2*>(k)[n];
        kw[0] = v.x;
        kw[W - 1] = v.y;
    } else {
        kw[0] = k[n];
    }
    bool any = false;
    for (int g = 0; g < G; ++g) {
        int pc = 0;
#pragma unroll
        for (int w = 0; w < W; ++w) pc += __popcll(qs[g * W + w] ^ kw[w]);
        any |= (D - pc) >= threshold;
    }
    return any;
}

// bitmap[N / 32]: bit (n % 32) of word n / 32 set when key n survives (a warp's ballot).
template <int W>
__device__ void bitmap_body(const unsigned long long* __restrict__ q, const unsigned long long* __restrict__ k,
                            long long N, int G, int D, int threshold, unsigned int* __restrict__ bitmap) {
    __shared__ unsigned long long qs[MAX_G * 2];
    for (int i = threadIdx.x; i < G * W; i += blockDim.x) qs[i] = q[i];
    __syncthreads();
    const long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const bool s = n < N && survives<W>(k, n, qs, G, D, threshold);
    const unsigned int ballot = __ballot_sync(0xffffffffu, s);
    if ((threadIdx.x & 31) == 0 && n < N) bitmap[n >> 5] = ballot;
}

extern "C" __global__ void scf_bitmap_w1(const unsigned long long* q, const unsigned long long* k, long long N,
                                         int G, int D, int threshold, unsigned int* bitmap) {
    bitmap_body<1>(q, k, N, G, D, threshold, bitmap);
}

extern "C" __global__ void scf_bitmap_w2(const unsigned long long* q, const unsigned long long* k, long long N,
                                         int G, int D, int threshold, unsigned int* bitmap) {
    bitmap_body<2>(q, k, N, G, D, threshold, bitmap);
}

// Fused filter + compaction: survivor indices appended to out[]; count[0] ends as the number of survivors.
// Each block covers COMPACT_KPT x blockDim.x consecutive keys and makes ONE atomicAdd (a per-warp atomic
// serialises on the counter: measured 4x slower at 16M keys). Indices are ordered within a block; blocks
// land in atomic order, so callers sort when they need positions in order.
#define COMPACT_KPT 8
template <int W>
__device__ void compact_body(const unsigned long long* __restrict__ q, const unsigned long long* __restrict__ k,
                             long long N, int G, int D, int threshold, int* __restrict__ out,
                             unsigned long long* __restrict__ count) {
    __shared__ unsigned long long qs[MAX_G * 2];
    __shared__ unsigned int warp_total[32];
    __shared__ unsigned long long block_base;
    for (int i = threadIdx.x; i < G * W; i += blockDim.x) qs[i] = q[i];
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    // warp w owns keys [start + w * 32 * KPT, ... + 32 * KPT): contiguous, so block order = key order
    const long long start = (long long)blockIdx.x * blockDim.x * COMPACT_KPT + (long long)warp * 32 * COMPACT_KPT;
    unsigned int ballots[COMPACT_KPT];
    unsigned int mine = 0;
#pragma unroll
    for (int j = 0; j < COMPACT_KPT; ++j) {
        const long long n = start + j * 32 + lane;
        const bool s = n < N && survives<W>(k, n, qs, G, D, threshold);
        ballots[j] = __ballot_sync(0xffffffffu, s);
        mine += __popc(ballots[j]);
    }
    if (lane == 0) warp_total[warp] = mine;
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned int total = 0;
        for (int w = 0; w < nwarps; ++w) {
            const unsigned int t = warp_total[w];
            warp_total[w] = total;  // exclusive prefix
            total += t;
        }
        block_base = total ? atomicAdd(count, (unsigned long long)total) : 0ull;
    }
    __syncthreads();
    unsigned long long base = block_base + warp_total[warp];
#pragma unroll
    for (int j = 0; j < COMPACT_KPT; ++j) {
        const unsigned int b = ballots[j];
        if (b & (1u << lane)) out[base + __popc(b & ((1u << lane) - 1u))] = (int)(start + j * 32 + lane);
        base += __popc(b);
    }
}

extern "C" __global__ void scf_compact_w1(const unsigned long long* q, const unsigned long long* k, long long N,
                                          int G, int D, int threshold, int* out, unsigned long long* count) {
    compact_body<1>(q, k, N, G, D, threshold, out, count);
}

extern "C" __global__ void scf_compact_w2(const unsigned long long* q, const unsigned long long* k, long long N,
                                          int G, int D, int threshold, int* out, unsigned long long* count) {
    compact_body<2>(q, k, N, G, D, threshold, out, count);
}
