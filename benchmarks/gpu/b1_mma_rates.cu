// Issue rate of the b1 tensor-core MMA forms on the device (benchmarks/gpu/bench_fused.py --mma-rates):
// each warp runs CHAINS independent accumulator chains of one form for `iters` rounds; MMAs / s / SM
// bound what the frag filter (kernels/scf_frag.cuh) can spend per 32-key block.
typedef unsigned int u32;
#define CHAINS 8

template <int FORM>
__device__ __forceinline__ void step(int (&c)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    if (FORM == 0)
        asm volatile("mma.sync.aligned.m16n8k128.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5}, {%6}, "
                     "{%0,%1,%2,%3};\n"
                     : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                     : "r"(a0), "r"(a1), "r"(b0));
    else if (FORM == 1)
        asm volatile("mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                     "{%8,%9}, {%0,%1,%2,%3};\n"
                     : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k128.row.col.s32.b1.b1.s32.xor.popc {%0,%1,%2,%3}, {%4,%5}, {%6}, "
                     "{%0,%1,%2,%3};\n"
                     : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                     : "r"(a0), "r"(a1), "r"(b0));
}

template <int FORM>
__device__ void rate(int iters, int* out) {
    const u32 x = threadIdx.x * 2654435761u + blockIdx.x;
    int c[CHAINS][4] = {};
    for (int it = 0; it < iters; ++it)
#pragma unroll
        for (int j = 0; j < CHAINS; ++j) step<FORM>(c[j], x + j, x ^ it, ~x, x * 3u, x + it, ~x + j);
    int s = 0;
#pragma unroll
    for (int j = 0; j < CHAINS; ++j) s += c[j][0] + c[j][1] + c[j][2] + c[j][3];
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}

extern "C" __global__ void b1_rate_and_k128(int iters, int* out) { rate<0>(iters, out); }
extern "C" __global__ void b1_rate_and_k256(int iters, int* out) { rate<1>(iters, out); }
extern "C" __global__ void b1_rate_xor_k128(int iters, int* out) { rate<2>(iters, out); }
