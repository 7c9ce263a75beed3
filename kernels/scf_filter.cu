// Sign-concordance filter (LongSight SCF) for CuPy's RawModule.
//
// Inputs use cemsim's sign layout (cemsim/attention/signs.py): dimension d is bit d % 64 of uint64 word d / 64,
// set when the component is >= 0.
//   q        [R, G, W]  packed query signs: R independent rows (decode steps or prefill positions),
//                       G query heads of one KV group per row
//   k        [N, W]     packed key signs
// Outputs:
//   matches  [R, G, N]  D - popcount(q XOR k), or nullptr to skip writing them
//   survive  [R, N]     1 when any of the row's G queries has matches >= threshold
// One thread per (row, key); keys vary fastest so a warp reads consecutive keys.
extern "C" __global__ void scf_filter(const unsigned long long* __restrict__ q,
                                      const unsigned long long* __restrict__ k,
                                      const int R, const int G, const long long N, const int W, const int D,
                                      const int threshold,
                                      unsigned char* __restrict__ matches,
                                      unsigned char* __restrict__ survive) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)R * N) return;
    const long long r = idx / N;
    const long long n = idx - r * N;
    const unsigned long long* kk = k + n * W;
    const unsigned long long* qr = q + r * (long long)G * W;
    unsigned char any = 0;
    for (int g = 0; g < G; ++g) {
        int pc = 0;
        for (int w = 0; w < W; ++w) {
            pc += __popcll(qr[g * W + w] ^ kk[w]);
        }
        const int m = D - pc;
        if (matches != nullptr) {
            matches[(r * G + g) * N + n] = (unsigned char)m;
        }
        any |= (unsigned char)(m >= threshold);
    }
    survive[r * N + n] = any;
}
