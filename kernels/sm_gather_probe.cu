// One SM's rate for scattered 256-byte rows (benchmarks/gpu/bench_sm_gather.py): the picks' value rows of the
// fused top-k block (kernels/longsight_fused.cu topk_attend), 1,024 of them read by one 1,024-thread block, by
// plain loads as topk_attend issues them, against the same rows brought into shared memory by Hopper's bulk
// copies (cp.async.bulk, completed on an mbarrier), which need no thread or register per row in flight. Each
// block takes `per_block` consecutive entries of the row list from `first + blockIdx.x * per_block`; every kernel
// XORs what it read into one word a thread so nothing is optimised away.
typedef unsigned int u32;
#define PROBE_THREADS 1024
#define ROW_BYTES 256

__device__ __forceinline__ u32 fold4(const uint4& v) { return v.x ^ v.y ^ v.z ^ v.w; }

// topk_attend's pattern: 16 lanes a row, 8 rows in flight a lane group, each register reloaded once used.
extern "C" __global__ void __launch_bounds__(PROBE_THREADS)
    sm_gather_ldg(const uint4* __restrict__ table, const int* __restrict__ rows, long long first, int per_block,
                  u32* __restrict__ out) {
    constexpr int LPS = ROW_BYTES / 16, NSUB = PROBE_THREADS / LPS, U = 8;
    const int* list = rows + first + (long long)blockIdx.x * per_block;
    const int sub = threadIdx.x / LPS, pt = threadIdx.x % LPS;
    auto row = [&](int j) {
        return j < per_block ? __ldg(table + (long long)list[j] * LPS + pt) : make_uint4(0, 0, 0, 0);
    };
    uint4 raw[U];
#pragma unroll
    for (int u = 0; u < U; ++u) raw[u] = row(sub + u * NSUB);
    u32 acc = 0;
    for (int j0 = sub; j0 < per_block; j0 += NSUB * U) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int j = j0 + u * NSUB;
            acc ^= fold4(raw[u]);
            raw[u] = row(j + NSUB * U);
        }
    }
    out[blockIdx.x * PROBE_THREADS + threadIdx.x] = acc;
}

#define BULK_BATCH 128  // rows a stage (32 KB)
#define BULK_STAGES 4   // stages in flight (128 KB of dynamic shared memory)

__device__ __forceinline__ u32 smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }

// Warp 0 issues a stage's rows as bulk copies (one a row) completing on the stage's mbarrier; every thread waits
// on it, folds the stage, and the block's barrier frees it for the batch STAGES on.
extern "C" __global__ void __launch_bounds__(PROBE_THREADS)
    sm_gather_bulk(const uint4* __restrict__ table, const int* __restrict__ rows, long long first, int per_block,
                   u32* __restrict__ out) {
    u32 acc = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900  // bulk copies and mbarrier transaction counts: sm_90
    extern __shared__ __align__(128) uint4 ring[];  // BULK_STAGES x BULK_BATCH rows
    __shared__ __align__(8) unsigned long long bar[BULK_STAGES];
    const int* list = rows + first + (long long)blockIdx.x * per_block;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int batches = (per_block + BULK_BATCH - 1) / BULK_BATCH;
    if (threadIdx.x == 0)
        for (int s = 0; s < BULK_STAGES; ++s)
            asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(&bar[s])) : "memory");
    __syncthreads();
    auto issue = [&](int b) {  // warp 0: batch b into stage b % STAGES
        const int s = b % BULK_STAGES, n = min(BULK_BATCH, per_block - b * BULK_BATCH);
        const u32 ba = smem_addr(&bar[s]);
        if (lane == 0)
            asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(ba), "r"(n * ROW_BYTES)
                         : "memory");
        __syncwarp();
        for (int i = lane; i < n; i += 32) {
            const uint4* src = table + (long long)list[b * BULK_BATCH + i] * (ROW_BYTES / 16);
            const u32 dst = smem_addr(ring + (s * BULK_BATCH + i) * (ROW_BYTES / 16));
            asm volatile(
                "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
                "l"(src), "r"(ROW_BYTES), "r"(ba)
                : "memory");
        }
    };
    if (warp == 0)
        for (int b = 0; b < BULK_STAGES && b < batches; ++b) issue(b);
    for (int b = 0; b < batches; ++b) {
        const int s = b % BULK_STAGES;
        const u32 ba = smem_addr(&bar[s]), parity = (u32)((b / BULK_STAGES) & 1);
        asm volatile(
            "{\n .reg .pred p;\n W: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra W;\n}" ::"r"(ba),
            "r"(parity)
            : "memory");
        const int n = min(BULK_BATCH, per_block - b * BULK_BATCH);
        for (int i = threadIdx.x; i < n * (ROW_BYTES / 16); i += PROBE_THREADS)
            acc ^= fold4(ring[s * BULK_BATCH * (ROW_BYTES / 16) + i]);
        __syncthreads();  // the stage is free
        if (warp == 0 && b + BULK_STAGES < batches) issue(b + BULK_STAGES);
    }
#endif
    out[blockIdx.x * PROBE_THREADS + threadIdx.x] = acc;
}
