// Random row gathers at their own speed (benchmarks/gpu/bench_gather.py): the fused select's key-row gather
// without the filter around it, to tell the DRAM's rate for scattered rows from the kernels' issue pattern.
// Each row is ROW_BYTES contiguous bytes at a listed row index of a table; every kernel XORs what it read into
// one word a thread so nothing is optimised away.
#include "cp_async.cuh"
typedef unsigned int u32;
#define PROBE_THREADS 256

__device__ __forceinline__ u32 fold4(const uint4& v) { return v.x ^ v.y ^ v.z ^ v.w; }

// Lane groups of row_bytes / 16 lanes, R rows each in flight in registers (loads issued together, then used),
// grid-strided over the list.
template <int R>
__device__ void gather_ldg(const uint4* __restrict__ table, const int* __restrict__ rows, int n, int row_bytes,
                           u32* __restrict__ out) {
    const int lpr = row_bytes / 16;  // lanes a row (power of two, <= 32)
    const int sub = threadIdx.x / lpr, part = threadIdx.x % lpr;
    const long long groups = (long long)gridDim.x * (blockDim.x / lpr);
    u32 acc = 0;
    for (long long i = (long long)blockIdx.x * (blockDim.x / lpr) + sub; i < n; i += groups * R) {
        int r[R];
        uint4 v[R];
#pragma unroll
        for (int u = 0; u < R; ++u) r[u] = i + u * groups < n ? rows[i + u * groups] : -1;
#pragma unroll
        for (int u = 0; u < R; ++u) v[u] = __ldg(table + (long long)max(r[u], 0) * lpr + part);  // all issued first
#pragma unroll
        for (int u = 0; u < R; ++u) acc ^= r[u] >= 0 ? fold4(v[u]) : 0u;
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

#define GATHER_LDG(R)                                                                                          \
    extern "C" __global__ void __launch_bounds__(PROBE_THREADS)                                                \
        gather_ldg_r##R(const uint4* table, const int* rows, int n, int row_bytes, u32* out) {                 \
        gather_ldg<R>(table, rows, n, row_bytes, out);                                                         \
    }
GATHER_LDG(1)
GATHER_LDG(2)
GATHER_LDG(4)
GATHER_LDG(8)
GATHER_LDG(16)

// A block takes `per_block` consecutive list entries at a time and brings all their rows into dynamic shared
// memory by 16-byte cp.async (no registers held per row in flight), waits once, then reads them back.
extern "C" __global__ void __launch_bounds__(PROBE_THREADS)
    gather_async(const uint4* table, const int* rows, int n, int row_bytes, int per_block, u32* out) {
    extern __shared__ __align__(16) uint4 buf[];
    const int lpr = row_bytes / 16;
    u32 acc = 0;
    for (long long first = (long long)blockIdx.x * per_block; first < n; first += (long long)gridDim.x * per_block) {
        const int m = (int)min((long long)per_block, n - first);
        for (int p = threadIdx.x; p < m * lpr; p += blockDim.x)
            cp_async16(buf + p, table + (long long)rows[first + p / lpr] * lpr + p % lpr);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
        for (int p = threadIdx.x; p < m * lpr; p += blockDim.x) acc ^= fold4(buf[p]);
        __syncthreads();
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

// The same bytes read in order (rows[] ignored): the streaming rate on the same table.
extern "C" __global__ void __launch_bounds__(PROBE_THREADS)
    stream_read(const uint4* table, long long words, u32* out) {
    u32 acc = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < words; i += (long long)gridDim.x * blockDim.x)
        acc ^= fold4(__ldg(table + i));
    out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}
