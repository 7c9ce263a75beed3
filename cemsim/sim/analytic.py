"""The analytic twin: closed-form step time, bytes and energy over the same config and trace work.

Same cost primitives as the components (gpu_op_time, link_occupancy, host_stream_time, DReX filter_time /
scoring_time / fetch_time, request_counters), none of the scheduling: no event engine, no resources.
Per layer: projections + max(GPU attention kernels, offloaded attention) + combine + MLP + all-reduces +
overhead. The offload is a short recurrence: descriptors leave back to back, each NMA serves its requests in
arrival order, responses leave the device in the order they are ready. The service time of one DReX
request is a closed form: sum over scratchpad fills of (pipelined filter epochs + scoring), plus the value
fetch. With one user nothing else contends, and the discrete-event model must agree within 2%
(tests/sim/test_twin.py, every shipped hwconfig).
"""

from __future__ import annotations

from collections import defaultdict

from cemsim.sim.cem import drex_shape, fetch_time, filter_time, scoring_time, scratchpad_groups, work_counters
from cemsim.sim.gpu import gpu_op_time, projection_work
from cemsim.sim.host_memory import host_bandwidth
from cemsim.sim.link import allreduce_time, link_occupancy
from cemsim.sim.plan import GpuOp, kv_write_bytes_per_step, layer_plan
from cemsim.sim.result import SimResult, fill_metrics
from cemsim.sim.simulate import Prepared, empty_result
from cemsim.sim.work import StepWork


def fifo(ready: list[float], occupancy: list[float], free: float = 0.0) -> list[float]:
    """End of service of each job on one FIFO server, jobs taken in (ready time, index) order."""
    ends = [0.0] * len(ready)
    for j in sorted(range(len(ready)), key=lambda i: (ready[i], i)):
        free = max(free, ready[j]) + occupancy[j]
        ends[j] = free
    return ends


class Twin:
    def __init__(self, prep: Prepared) -> None:
        self.prep = prep
        system = prep.system
        self.gpu, self.link, self.host = system.gpu, system.link, system.host_memory
        self.tp = self.gpu.count if self.gpu.parallelism == "tensor" else 1
        self.sizes = prep.sizes
        self.shape = (
            drex_shape(system.cem, self.sizes.head_dim, self.sizes.group, self.sizes.dtype_bytes)
            if prep.kind == "cem"
            else None
        )  # type: ignore[arg-type]
        self.bytes: dict[str, float] = defaultdict(float)
        self.ops: dict[str, float] = defaultdict(float)
        self.phase: dict[str, float] = defaultdict(float)

    def op(self, ops: list[GpuOp]) -> float:
        t = 0.0
        for _, nbytes, flops, fixed in ops:
            t += gpu_op_time(self.gpu, self.prep.system.workload.dtype, nbytes, flops) + fixed
            self.bytes["gpu.hbm"] += nbytes
            self.ops["gpu.flops"] += flops
        return t

    def service(self, w: StepWork, layer: int, head: int) -> float:
        cem, shape = self.prep.system.cem, self.shape
        assert shape is not None
        surv, rows = w.epoch_survivors[layer, head], w.epoch_rows[layer, head]  # type: ignore[index]
        cap = int(cem.nma.address_scratchpad // cem.nma.address_bytes)  # type: ignore[union-attr]
        t = 0.0
        for grp in scratchpad_groups(surv, w.epoch_blocks[layer, head], cap):  # type: ignore[index]
            t += filter_time(shape, len(grp)) + scoring_time(
                cem, shape, float(surv[grp].sum()), float(rows[grp].sum())
            )
        return t + fetch_time(cem, shape, float(w.values[layer, head]), float(w.value_rows[layer, head]))  # type: ignore[arg-type,index]

    def offload(self, users: list[int], works: dict[int, StepWork], layer: int) -> float:
        kind, sizes, link = self.prep.kind, self.sizes, self.link
        if kind == "cem" and link is not None:
            cem = self.prep.system.cem
            jobs = [(u, h) for u in users for h in range(sizes.kv_heads)]
            d = link_occupancy(link, sizes.request_bytes())
            arrive = [(j + 1) * d + link.latency for j in range(len(jobs))]
            pkg_free: dict[int, float] = defaultdict(float)
            ready = [0.0] * len(jobs)
            for j in sorted(range(len(jobs)), key=lambda i: (arrive[i], i)):
                u, h = jobs[j]
                pkg = (
                    (u * sizes.kv_heads + h) % cem.packages
                    if cem.layout.kv_heads_across_packages
                    else u % cem.packages
                )  # type: ignore[union-attr]
                pkg_free[pkg] = max(pkg_free[pkg], arrive[j]) + self.service(works[u], layer, h)
                ready[j] = pkg_free[pkg]
            resp = [
                sizes.response_bytes(
                    self.prep.header.k, int(works[u].survivors[layer, h]), int(works[u].values[layer, h])
                )
                for u, h in jobs
            ]
            self.bytes["link.to_device"] += sizes.request_bytes() * len(jobs)
            self.bytes["link.to_host"] += sum(resp)
            ends = fifo(ready, [link_occupancy(link, r) for r in resp])
            return max(ends) + link.latency
        if kind.startswith("host") and link is not None and self.host is not None:
            hb = host_bandwidth(self.host)
            lat = self.host.latency + link.latency

            def occ(n: float) -> float:
                self.bytes["host_memory"] += n
                self.bytes["link.to_host"] += n
                return max(n / hb, link_occupancy(link, n)) if n > 0 else 0.0

            if kind == "host_dense":
                ends = fifo(
                    [0.0] * len(users),
                    [occ(works[u].context * sizes.kv_heads * 2 * sizes.key_bytes) for u in users],
                )
                return max(ends) + lat
            keys = [occ(float(works[u].survivors[layer].sum()) * sizes.key_bytes) for u in users]
            k_ends = fifo([0.0] * len(users), keys)
            vals = [occ(float(works[u].values[layer].sum()) * sizes.key_bytes) for u in users]
            ready = [e + (lat if k > 0 else 0.0) for e, k in zip(k_ends, keys, strict=True)]
            v_ends = fifo(ready, vals, free=max(k_ends))
            return max(e + (lat if v > 0 else 0.0) for e, v in zip(v_ends, vals, strict=True))
        return 0.0

    def lane_step(self, users: list[int], step: int, main: bool) -> float:
        prep, sizes = self.prep, self.sizes
        works = {u: prep.works[(step + u) % len(prep.works)] for u in users}
        proj = projection_work(prep.system.geometry, sizes.dtype_bytes, len(users), self.tp)
        phases: dict[str, float] = defaultdict(float)
        for layer in range(sizes.layers):
            phases["projection"] += self.op([("qkv_proj", *proj["pre"], 0.0)])
            plan = layer_plan(prep.kind, sizes, list(works.values()), layer, self.tp, self.gpu)
            phases["attention_gpu"] += self.op(plan.before)
            par = self.op(plan.parallel)
            att = max(par, self.offload(users, works, layer))
            phases["attention_gpu"] += par + self.op(plan.after)
            phases["attention_wait"] += att - par
            phases["projection"] += self.op([("out_proj_mlp", *proj["post"], 0.0)])
            if self.tp > 1 and self.gpu.peer_link is not None:
                nbytes = len(users) * prep.system.geometry.hidden * sizes.dtype_bytes
                phases["all_reduce"] += 2 * allreduce_time(self.gpu.peer_link, nbytes, self.tp)
                self.bytes["gpu.peer_link"] += 2 * 2 * (self.tp - 1) * nbytes / self.tp
            phases["layer_overhead"] += self.gpu.layer_overhead
        phases["projection"] += self.op([("lm_head", *proj["head"], 0.0)])
        if main:
            for k, v in phases.items():
                self.phase[k] += v
        return sum(phases.values())

    def run(self, steps: int) -> list[float]:
        prep = self.prep
        lanes = self.gpu.count // self.tp
        lane_users = [[u for u in range(prep.batch) if u % lanes == g] for g in range(lanes)]
        out = []
        for i in range(steps):
            out.append(max(self.lane_step(us, i, g == 0) for g, us in enumerate(lane_users) if us))
            if self.shape is not None:
                for u in range(prep.batch):
                    for key, n in work_counters(
                        prep.system.cem, self.shape, prep.works[(i + u) % len(prep.works)]
                    ).items():
                        (self.ops if key.startswith("ops:") else self.bytes)[key.removeprefix("ops:")] += n
            if prep.kind == "cem" or prep.kind.startswith("host"):
                nbytes = kv_write_bytes_per_step(self.sizes, prep.batch)
                self.bytes["link.to_device"] += nbytes
                self.bytes["cem.lpddr_write" if prep.kind == "cem" else "host_memory"] += nbytes
        return out


def analytic(prep: Prepared, *, steps: int | None = None) -> SimResult:
    """Closed-form result for ``prep`` (no contention between users; see the module doc)."""
    res = empty_result(prep, "analytic")
    if not prep.fit.fits:
        return res
    twin = Twin(prep)
    lat = twin.run(steps if steps is not None else len(prep.works))
    fill_metrics(res, prep.system, dict(twin.bytes), dict(twin.ops), dict(twin.phase), lat)
    return res
