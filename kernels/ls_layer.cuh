// ls_layer_d{64,128}: LongSight's whole sparse layer in one launch (issue 18, fifth step). Included at the end of
// longsight_fused.cu, whose helpers it uses (PopcFilter, bf16x8_to_float, order_key, image_value,
// narrow_to_bin, the cluster primitives).
//
// One cluster of C blocks per (user, KV head) row bh = blockIdx.x / C, C set at launch (1..16, the most for which
// every row's cluster is resident at once), LAYER_THREADS threads a block, one block an SM. Block r of a row:
//   0. its first tile's sign loads go out; the query and its signs into shared memory; the scores of its share of
//      the band (sinks + window) against the group's G heads;
//   1. its contiguous share of the region in tiles of LAYER_TILE keys: the SCF filter (popc), compaction into its
//      survivor list in shared memory, one slot claim per tile on the row's tally (idx / scores are written at
//      those slots, as ls_select's), the exact scores of the tile's survivors (LAYER_ROWS key rows per lane group
//      in flight) while the next tile's signs are in flight;
//   2. exact top-k per query head over the whole row: radix select from the top, 8 bits a pass. Each warp counts
//      one head's digits of a slice of the list into its own histogram (no contended shared atomics: N(0, 1)-like
//      scores share a handful of top digits), the block sums them per head, one cluster barrier publishes every
//      block's sums (double-buffered, so no second barrier a pass) and every block adds all C of them through
//      distributed shared memory and narrows identically (narrow_to_bin). Ties at the k-th score are taken by
//      block rank (the last pass's per-block counts of the tied value);
//   3. each block attends over its share of the band and its own picks (their scores are already in the list, so
//      only value rows are read), lane groups assigned to heads: one partial softmax (max, sum, output) per head;
//   4. after a cluster barrier, block r merges heads r, r + C, ... from every block's partial (out, lse) and writes
//      its picks after the lower ranks' (pick_pos / pick_score / pick_count as the staged kernels'); block 0 moves
//      the tally to count and zeroes it (no reset launch) and adds up the survivors no list had room for (lost).
// A block's list holds scap survivors (dynamic shared memory, what is left after the rest); survivors past it are
// counted in lost[bh] and take no part (FusedLongSight.overflowed() reports them), as survivors past cap do.
// Measured 1.8-2.6x slower than the staged kernels at batch 1 on the H200 (docs/gpu-kernels.md, fifth step: 72 SMs
// of 32 warps, latency-bound), so an option, not the default; LAYER_KPT / ROWS / VROWS / ROTATE are build
// variants for experiments (benchmarks/gpu/bench_layer.py --defines).
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900

// 1,024 threads only: a 512-thread build (128 registers) failed with CUDA_ERROR_INVALID_ADDRESS_SPACE on the
// H200 (lead call 14), not investigated
#define LAYER_THREADS 1024
#define LAYER_WARPS (LAYER_THREADS / 32)
#ifndef LAYER_KPT
#define LAYER_KPT 4                                     // 32-key words per warp per tile
#endif
#define LAYER_TILE (LAYER_WARPS * LAYER_KPT * 32)       // keys per tile: 4,096
#ifndef LAYER_ROWS
#define LAYER_ROWS 4                                    // survivor key rows per lane group in flight
#endif
#ifndef LAYER_VROWS
#define LAYER_VROWS 8                                   // value rows per lane group in flight (attention)
#endif
#ifndef LAYER_ROTATE
#define LAYER_ROTATE 0
#endif
#define LAYER_SCR (LAYER_WARPS * 256)                   // per-warp histograms, later the attention's reduction

#define LAYER_MAX_C 16

// Phase times of every block (thread 0), only when built with -DLS_TRACE (benchmarks/gpu/bench_layer.py --trace):
// [0] %globaltimer at the start, [1..7] SM clock at the start and after the band, the tiles, the radix passes,
// the collect, the attention and the merge, [8] %globaltimer at the end.
#ifdef LS_TRACE
__device__ long long ls_trace_layer[2048][9];
#endif

__device__ __forceinline__ unsigned int cluster_size() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    unsigned int r;
    asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(r));
    return r;
#else
    return 1u;
#endif
}

__device__ __forceinline__ int layer_align4(int words) { return (words + 3) & ~3; }

// The u32 at p in each block of the cluster with rank < n (n <= LAYER_MAX_C), summed: the loads are issued together
// (one distributed-shared-memory round trip, not n).
__device__ __forceinline__ unsigned int cluster_sum(const unsigned int* p, unsigned int n) {
    unsigned int v[LAYER_MAX_C];
#pragma unroll
    for (int c = 0; c < LAYER_MAX_C; ++c) v[c] = (unsigned int)c < n ? ld_cluster(p, c) : 0u;
    unsigned int t = 0;
#pragma unroll
    for (int c = 0; c < LAYER_MAX_C; ++c) t += v[c];
    return t;
}

// The dynamic shared memory of a block, in 4-byte words (cemsim/gpu/fused.py layer_smem_words is the same sum).
struct LayerSmem {
    float* qf;               // [G][D] the query, scaled
    float* bsc;              // [G][bcap] scores of this block's band keys
    u32* whist;              // [LAYER_WARPS][256] per-warp digit counts; then the attention's red [NG][D]
    u32* xh;                 // [2][G][256] this block's per-head digit counts, read by the cluster
    u32* tot;                // [G][256] the cluster's
    unsigned short* plist;   // [G][kp] this block's picks per head, as list indices
    int* spos;               // [scap] survivor positions (-1: past cap, no part in the top-k)
    float* sc;               // [G][scap] their scores
    __device__ LayerSmem(u32* base, int G, int D, int bcap, int kp, int scap) {
        int o = 0;
        qf = reinterpret_cast<float*>(base + o);
        o += layer_align4(G * D);
        bsc = reinterpret_cast<float*>(base + o);
        o += layer_align4(G * bcap);
        whist = base + o;
        o += LAYER_SCR;
        xh = base + o;
        o += 2 * G * 256;
        tot = base + o;
        o += G * 256;
        plist = reinterpret_cast<unsigned short*>(base + o);
        o += layer_align4((G * kp + 1) / 2);
        spos = reinterpret_cast<int*>(base + o);
        o += layer_align4(scap);
        sc = reinterpret_cast<float*>(base + o);
    }
};

template <int D>
__device__ void layer_body(const u64* __restrict__ ksig, const u64* __restrict__ qsig,
                           const int* __restrict__ thresholds, const float* __restrict__ q,
                           const bf16_t* __restrict__ keys, const bf16_t* __restrict__ vals, long long ctx,
                           int sinks, int window, int G, int k, int cap, int scap, int bcap,
                           unsigned int* __restrict__ tally, unsigned int* __restrict__ count,
                           unsigned int* __restrict__ lost, int* __restrict__ idx, float* __restrict__ scores,
                           int* __restrict__ pick_pos, float* __restrict__ pick_score, int* __restrict__ pick_count,
                           float* __restrict__ out, float* __restrict__ lse) {
    constexpr int W = D / 64;
    constexpr int LPS = D / 8;                 // lanes per bf16 row: 16 bytes each
    constexpr int SPW = 32 / LPS;              // rows per warp at once
    constexpr int NG = LAYER_THREADS / LPS;    // lane groups
    extern __shared__ __align__(16) u32 ls_layer_dyn[];
    __shared__ u64 qs[LS_MAX_GA * 2];
    __shared__ unsigned int warp_total[LAYER_WARPS];
    __shared__ unsigned int s_tile_total, s_tile_base, s_lost;
    __shared__ u32 s_prefix[LS_MAX_GA], s_mask[LS_MAX_GA], s_need[LS_MAX_GA], s_done[LS_MAX_GA];
    __shared__ u32 s_none[LS_MAX_GA], s_take[LS_MAX_GA], s_ticket[LS_MAX_GA], s_pc[LS_MAX_GA];
    __shared__ u32 s_pmax[LS_MAX_GA], s_pbase[LS_MAX_GA];
    __shared__ float s_m[LS_MAX_GA], s_l[LS_MAX_GA], s_w[16], s_z;
    __shared__ float s_lsum[NG];
    __shared__ __align__(16) float s_o[LS_MAX_GA * D];

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const unsigned int rank = cluster_rank(), C = cluster_size();
    const long long bh = blockIdx.x / C;
    const int kp = (k + 1) & ~1;
    LayerSmem sm(ls_layer_dyn, G, D, bcap, kp, scap);
    [[maybe_unused]] const int trow = (int)blockIdx.x;
#ifdef LS_TRACE
    if (threadIdx.x == 0 && trow < 2048) ls_trace_layer[trow][0] = ls_gtimer();
    if (threadIdx.x == 0 && trow < 2048) ls_trace_layer[trow][1] = clock64();
#define LAYER_MARK(i) \
    if (threadIdx.x == 0 && trow < 2048) ls_trace_layer[trow][i] = clock64()
#else
#define LAYER_MARK(i) \
    do {              \
    } while (0)
#endif

    // this block's share of the region (keys relative to its start, whole 32-key words) and of the band
    const long long n = ctx - window - sinks;
    const long long per = ((((n + 31) >> 5) + C - 1) / C) << 5;
    const long long lo = min(n, (long long)rank * per), hi = min(n, lo + per);
    const int band = sinks + window;
    const int bper = (band + (int)C - 1) / (int)C;
    const int b_lo = min(band, (int)rank * bper), nb = min(band, b_lo + bper) - b_lo;
    const u64* ks = ksig + (bh * ctx + sinks) * W;
    const bf16_t* kb = keys + bh * ctx * D;
    const bf16_t* vb = vals + bh * ctx * D;
    const int sub = threadIdx.x / LPS, part = threadIdx.x % LPS;  // lane group, its 16 bytes of a row

    // 0. the first tile's signs in flight before anything else
    PopcFilter<W> filt{qs, G, D, 0};
    u64 kw[LAYER_KPT][W];
    auto load_tile = [&](long long tb) {
        const long long wb = tb + (long long)warp * LAYER_KPT * 32;
#pragma unroll
        for (int j = 0; j < LAYER_KPT; ++j) filt.load(ks, wb + 32 * j, hi, lane, kw[j]);
    };
    // tiles in a rotated order (LAYER_ROTATE): the rows' and blocks' streams then do not advance in lockstep over
    // addresses a power of two apart
    const long long ntiles = (hi - lo + LAYER_TILE - 1) / LAYER_TILE;
#if LAYER_ROTATE
    const long long rot = ntiles > 0 ? ((long long)bh * 5 + (long long)rank * 3) % ntiles : 0;
#else
    const long long rot = 0;
#endif
    auto tile_at = [&](long long t) { return lo + ((t + rot) % ntiles) * LAYER_TILE; };
    if (ntiles > 0) load_tile(tile_at(0));
    for (int i = threadIdx.x; i < G * D; i += LAYER_THREADS) sm.qf[i] = q[bh * G * D + i];
    for (int i = threadIdx.x; i < G * W; i += LAYER_THREADS) qs[i] = qsig[bh * G * W + i];
    filt.threshold = thresholds[bh];
    if (threadIdx.x < LS_MAX_GA) {
        const int g = threadIdx.x;
        s_prefix[g] = s_mask[g] = s_need[g] = 0u;
        s_done[g] = g < G ? 0u : 1u;
        s_none[g] = 0u;
        s_ticket[g] = s_pc[g] = s_pmax[g] = 0u;
    }
    if (threadIdx.x == 0) s_lost = 0u;
    __syncthreads();
    // the band's scores: lane groups of LPS lanes, one key row each, LAYER_ROWS rows in flight
    for (int j0 = 0; j0 < nb; j0 += NG * LAYER_ROWS) {
        uint4 raw[LAYER_ROWS];
#pragma unroll
        for (int u = 0; u < LAYER_ROWS; ++u) {
            const int j = j0 + u * NG + sub;
            raw[u] = make_uint4(0, 0, 0, 0);
            if (j < nb) {
                const int b = b_lo + j;
                const long long pos = b < sinks ? b : ctx - window + (b - sinks);
                raw[u] = __ldg(reinterpret_cast<const uint4*>(kb + pos * D) + part);
            }
        }
#pragma unroll
        for (int u = 0; u < LAYER_ROWS; ++u) {
            const int j = j0 + u * NG + sub;
            float kf[8];
            bf16x8_to_float(raw[u], kf);
            for (int g = 0; g < G; ++g) {
                const float acc = row_dot<LPS>(sm.qf + g * D + part * 8, kf);
                if (part == 0 && j < nb) sm.bsc[g * bcap + j] = acc;
            }
        }
    }
    LAYER_MARK(2);

    // 1. filter, compaction, slot claims and scores, tile by tile
    unsigned int n_list = 0;  // survivors in this block's list (block-uniform)
    for (long long t = 0; t < ntiles; ++t) {
        const long long tb = tile_at(t);
        const long long wb = tb + (long long)warp * LAYER_KPT * 32;
        u32 words[LAYER_KPT];
#pragma unroll
        for (int j = 0; j < LAYER_KPT; ++j) words[j] = filt.word(kw[j], wb + 32 * j, hi, lane);
        if (t + 1 < ntiles) load_tile(tile_at(t + 1));  // the next tile's signs while this one's rows come
        const unsigned int room = (unsigned int)scap - n_list;  // n_list <= scap
        compact_block<LAYER_WARPS, LAYER_KPT, false, true>(words, sinks + wb, lane, warp, warp_total,
                                                           sm.spos + n_list, room, nullptr, s_tile_total,
                                                           s_tile_base);  // the tile's positions in the list
        const unsigned int tt = s_tile_total;
        if (tt == 0) continue;  // block-uniform
        unsigned int claim = 0;
        if (threadIdx.x == 0) claim = atomicAdd(tally + bh, tt);  // waited for after the first row loads
        const unsigned int kept = min(tt, room), end = n_list + kept;
        if (threadIdx.x == 0) s_lost += tt - kept;
        constexpr unsigned int STEP = LAYER_WARPS * SPW * LAYER_ROWS;
        uint4 raw[LAYER_ROWS];
        int pos[LAYER_ROWS];
        unsigned int i0 = n_list + warp * SPW * LAYER_ROWS;
        auto load_rows = [&](unsigned int first) {
#pragma unroll
            for (int u = 0; u < LAYER_ROWS; ++u) {
                const unsigned int i = first + u * SPW + (lane / LPS);
                pos[u] = i < end ? sm.spos[i] : -1;
            }
#pragma unroll
            for (int u = 0; u < LAYER_ROWS; ++u)
                raw[u] = pos[u] >= 0 ? __ldg(reinterpret_cast<const uint4*>(kb + (long long)pos[u] * D) + part)
                                     : make_uint4(0, 0, 0, 0);
        };
        load_rows(i0);
        if (threadIdx.x == 0) s_tile_base = claim;
        __syncthreads();
        const unsigned int base = s_tile_base;
        while (i0 < end) {  // warp-uniform
#pragma unroll
            for (int u = 0; u < LAYER_ROWS; ++u) {
                const unsigned int i = i0 + u * SPW + (lane / LPS);
                float kf[8];
                bf16x8_to_float(raw[u], kf);
                const unsigned int slot = base + (i - n_list);
                const bool in = i < end, keep = in && slot < (unsigned int)cap;
                for (int g = 0; g < G; ++g) {
                    const float acc = row_dot<LPS>(sm.qf + g * D + part * 8, kf);
                    if (part == 0 && in) {
                        sm.sc[g * scap + i] = acc;
                        if (keep) scores[(bh * G + g) * cap + slot] = acc;
                    }
                }
                if (part == 0 && in) {
                    if (keep)
                        idx[bh * cap + slot] = pos[u];
                    else
                        sm.spos[i] = -1;  // past the row's cap: counted, not kept (as the staged kernels)
                }
            }
            i0 += STEP;
            if (i0 >= end) break;
            load_rows(i0);
        }
        n_list = end;
    }
    LAYER_MARK(3);

    // 2. exact top-k per head over the cluster: radix select, 8 bits a pass from the top
    const int wph = LAYER_WARPS / G;  // warps counting each head's digits
    for (int pass = 0; pass < 4; ++pass) {
        const int shift = 24 - 8 * pass;
        u32* xh = sm.xh + (pass & 1) * G * 256;
        for (int i = threadIdx.x; i < LAYER_SCR; i += LAYER_THREADS) sm.whist[i] = 0u;
        __syncthreads();
        if (warp < G * wph) {
            const int g = warp / wph;
            if (!s_done[g]) {  // warp-uniform
                u32* hw = sm.whist + warp * 256;
                const u32 pfx = s_prefix[g], msk = s_mask[g];
                const float* scg = sm.sc + g * scap;
                for (unsigned int i = (warp % wph) * 32 + lane; i < n_list; i += wph * 32) {
                    if (sm.spos[i] < 0) continue;
                    const u32 key = order_key(scg[i]);
                    if ((key & msk) == pfx) atomicAdd(hw + ((key >> shift) & 0xffu), 1u);
                }
            }
        }
        __syncthreads();
        for (int b = threadIdx.x; b < G * 256; b += LAYER_THREADS) {
            const int g = b >> 8;
            unsigned int t = 0;
            for (int w = 0; w < wph; ++w) t += sm.whist[(g * wph + w) * 256 + (b & 255)];
            xh[b] = t;
        }
        cluster_sync_all();  // every block's counts of this pass visible to the cluster
        for (int b = threadIdx.x; b < G * 256; b += LAYER_THREADS) sm.tot[b] = cluster_sum(xh + b, C);
        __syncthreads();
        if (warp < G && !s_done[warp]) {  // warp g narrows head g
            const int g = warp;
            unsigned int h[8], mine = 0;
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                h[e] = sm.tot[g * 256 + 255 - 8 * lane - e];
                mine += h[e];
            }
            if (pass == 0) {  // every kept survivor is counted once: need min(k, their number)
                unsigned int all = mine;
#pragma unroll
                for (int o = 16; o >= 1; o >>= 1) all += __shfl_xor_sync(0xffffffffu, all, o);
                if (lane == 0) {
                    s_need[g] = min((unsigned int)k, all);
                    if (all == 0) s_none[g] = s_done[g] = 1u;
                }
                __syncwarp();
            }
            if (!s_none[g])
                narrow_to_bin(h, mine, lane, shift, s_prefix[g], s_mask[g], s_prefix[g], s_mask[g], s_need[g],
                              s_done[g]);
        }
        __syncthreads();
        bool all_done = true;
        for (int g = 0; g < G; ++g) all_done = all_done && s_done[g];
        if (all_done) break;  // the same in every block of the cluster: they narrowed the same sums
    }
    // heads still open after the last pass: a run of equal scores at the k-th; block r takes what the lower ranks
    // leave of the s_need still wanted (their counts of that value are in their last pass's buffer)
    if (threadIdx.x < (unsigned int)G) {
        const int g = threadIdx.x;
        if (!s_done[g]) {
            const u32* xh = sm.xh + G * 256;  // pass 3's buffer
            const int b = g * 256 + (int)(s_prefix[g] & 0xffu);
            const unsigned int below = cluster_sum(xh + b, rank);
            s_take[g] = s_need[g] > below ? s_need[g] - below : 0u;
        }
    }
    __syncthreads();
    LAYER_MARK(4);
    // collect this block's picks per head
    for (unsigned int i = threadIdx.x; i < n_list; i += LAYER_THREADS) {
        if (sm.spos[i] < 0) continue;
        for (int g = 0; g < G; ++g) {
            if (s_none[g]) continue;
            const u32 key = order_key(sm.sc[g * scap + i]), km = key & s_mask[g];
            bool pick = km > s_prefix[g];
            if (!pick && km == s_prefix[g]) pick = s_done[g] || atomicAdd(&s_ticket[g], 1u) < s_take[g];
            if (pick) {
                sm.plist[g * kp + atomicAdd(&s_pc[g], 1u)] = (unsigned short)i;
                atomicMax(&s_pmax[g], key);
            }
        }
    }
    __syncthreads();
    if (warp < G) {  // the head's largest score here (band or pick): the partial's max
        const int g = warp;
        float m = LS_NEG_INF;
        for (int j = lane; j < nb; j += 32) m = fmaxf(m, sm.bsc[g * bcap + j]);
#pragma unroll
        for (int o = 16; o >= 1; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        if (lane == 0) s_m[g] = s_pc[g] ? fmaxf(m, image_value(s_pmax[g])) : m;
    }
    __syncthreads();
    LAYER_MARK(5);

    // 3. attention over the band share and the picks: gph lane groups per head, LAYER_VROWS value rows each in
    // flight
    {
        const int gph = NG / G, g = sub / gph, r = sub % gph;
        float o[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        float lsum = 0.f;
        if (g < G) {
            const float M = s_m[g];
            const int items = nb + (int)s_pc[g];
            for (int j0 = r; j0 < items; j0 += gph * LAYER_VROWS) {
                uint4 raw[LAYER_VROWS];
                float p[LAYER_VROWS];
#pragma unroll
                for (int u = 0; u < LAYER_VROWS; ++u) {
                    const int j = j0 + u * gph;
                    raw[u] = make_uint4(0, 0, 0, 0);
                    p[u] = 0.f;
                    if (j < items) {
                        long long pos;
                        float s;
                        if (j < nb) {
                            const int b = b_lo + j;
                            pos = b < sinks ? b : ctx - window + (b - sinks);
                            s = sm.bsc[g * bcap + j];
                        } else {
                            const int i = sm.plist[g * kp + (j - nb)];
                            pos = sm.spos[i];
                            s = sm.sc[g * scap + i];
                        }
                        raw[u] = __ldg(reinterpret_cast<const uint4*>(vb + pos * D) + part);
                        p[u] = __expf(s - M);
                    }
                }
#pragma unroll
                for (int u = 0; u < LAYER_VROWS; ++u) {
                    float vf[8];
                    bf16x8_to_float(raw[u], vf);
#pragma unroll
                    for (int e = 0; e < 8; ++e) o[e] = fmaf(p[u], vf[e], o[e]);
                    lsum += p[u];
                }
            }
        }
        float* red = reinterpret_cast<float*>(sm.whist);  // [NG][D]: the histograms are spent
        float4* dst = reinterpret_cast<float4*>(red + sub * D + part * 8);
        dst[0] = make_float4(o[0], o[1], o[2], o[3]);
        dst[1] = make_float4(o[4], o[5], o[6], o[7]);
        if (part == 0) s_lsum[sub] = lsum;
        __syncthreads();
        for (int t = threadIdx.x; t < G * D; t += LAYER_THREADS) {
            const int hg = t / D, dd = t % D;
            float a = 0.f;
            for (int u = 0; u < gph; ++u) a += red[(hg * gph + u) * D + dd];
            s_o[t] = a;
        }
        if (warp < G) {
            float z = 0.f;
            for (int u = lane; u < gph; u += 32) z += s_lsum[warp * gph + u];
#pragma unroll
            for (int m = 16; m >= 1; m >>= 1) z += __shfl_xor_sync(0xffffffffu, z, m);
            if (lane == 0) s_l[warp] = z;
        }
    }
    LAYER_MARK(6);

    // 4. every block's partials and pick counts visible to the cluster; the merges and the picks out
    cluster_sync_all();
    if (threadIdx.x < (unsigned int)G) {
        const int g = threadIdx.x;
        s_pbase[g] = cluster_sum(s_pc + g, rank);
        if (rank == 0) pick_count[bh * G + g] = (int)cluster_sum(s_pc + g, C);
    }
    if (rank == 0 && threadIdx.x == 32) {  // every tile's claim is in: the survivor count, and the tally to 0
        count[bh] = atomicExch(tally + bh, 0u);
        lost[bh] = cluster_sum(&s_lost, C);
    }
    __syncthreads();
    for (int g = 0; g < G; ++g) {
        const int pc = (int)s_pc[g];
        const long long o0 = (bh * G + g) * k + s_pbase[g];
        for (int j = threadIdx.x; j < pc; j += LAYER_THREADS) {
            const int i = sm.plist[g * kp + j];
            pick_pos[o0 + j] = sm.spos[i];
            pick_score[o0 + j] = sm.sc[g * scap + i];
        }
    }
    for (int g = (int)rank; g < G; g += (int)C) {  // block-uniform
        if (warp == 0) {  // the weights e^(m_c - M) of the C partials, and z = sum of weight x sum
            const float mc = lane < (int)C ? __uint_as_float(ld_cluster(reinterpret_cast<const u32*>(s_m + g), lane))
                                           : LS_NEG_INF;
            const float lc = lane < (int)C ? __uint_as_float(ld_cluster(reinterpret_cast<const u32*>(s_l + g), lane))
                                           : 0.f;
            float M = mc;
#pragma unroll
            for (int o = 16; o >= 1; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
            const float w = mc == LS_NEG_INF ? 0.f : __expf(mc - M);
            float z = w * lc;
#pragma unroll
            for (int o = 16; o >= 1; o >>= 1) z += __shfl_xor_sync(0xffffffffu, z, o);
            if (lane < 16) s_w[lane] = w;
            if (lane == 0) {
                s_z = z;
                lse[bh * G + g] = M + logf(z);
            }
        }
        __syncthreads();
        if (threadIdx.x < D) {
            const u32* src = reinterpret_cast<const u32*>(s_o + g * D + threadIdx.x);
            float v[LAYER_MAX_C];
#pragma unroll
            for (int c = 0; c < LAYER_MAX_C; ++c) v[c] = (unsigned int)c < C ? __uint_as_float(ld_cluster(src, c)) : 0.f;
            float a = 0.f;
#pragma unroll
            for (int c = 0; c < LAYER_MAX_C; ++c) a += s_w[c] * v[c];
            out[(bh * G + g) * D + threadIdx.x] = a / s_z;
        }
        __syncthreads();
    }
    LAYER_MARK(7);
#ifdef LS_TRACE
    if (threadIdx.x == 0 && trow < 2048) ls_trace_layer[trow][8] = ls_gtimer();
#endif
#undef LAYER_MARK
    cluster_sync_all();  // no block leaves while another may still read its shared memory
}

#define LS_LAYER(DIM)                                                                                            \
    extern "C" __global__ void __launch_bounds__(LAYER_THREADS, 1) ls_layer_d##DIM(                              \
        const u64* ksig, const u64* qsig, const int* thresholds, const float* q, const bf16_t* keys,            \
        const bf16_t* vals, long long ctx, int sinks, int window, int G, int k, int cap, int scap, int bcap,    \
        unsigned int* tally, unsigned int* count, unsigned int* lost, int* idx, float* scores, int* pick_pos,   \
        float* pick_score, int* pick_count, float* out, float* lse) {                                           \
        layer_body<DIM>(ksig, qsig, thresholds, q, keys, vals, ctx, sinks, window, G, k, cap, scap, bcap, tally, \
                        count, lost, idx, scores, pick_pos, pick_score, pick_count, out, lse);                   \
    }
LS_LAYER(64)
LS_LAYER(128)

#endif
