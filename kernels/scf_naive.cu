// Baseline for benchmarks (issue 7): the published artifact's design, one thread per (query, key), every
// match count written out as int32. Kept to measure what the bitmap kernels save; not used by cemsim itself.
//   q [G, W], k [N, W] packed signs (cemsim/attention/signs.py layout); matches [G, N] int32.
extern "C" __global__ void scf_naive(const unsigned long long* __restrict__ q,
                                     const unsigned long long* __restrict__ k, long long N, int G, int W, int D,
                                     int* __restrict__ matches) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)G * N) return;
    const long long g = idx / N;
    const long long n = idx - g * N;
    int pc = 0;
    for (int w = 0; w < W; ++w) pc += __popcll(q[g * W + w] ^ k[n * W + w]);
    matches[g * N + n] = D - pc;
}
