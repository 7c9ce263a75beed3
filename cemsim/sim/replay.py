"""Replay decode steps on a built system: one SimPy process per GPU lane per step, requests as processes.

Per layer, each lane runs: QKV projection -> (GPU kernels before the offload) -> [GPU window/dense attention
|| offloaded attention: DReX requests over the link, or host streams] -> softmax/combine -> output
projection + MLP -> tensor-parallel all-reduces -> layer overhead. The lane waits for every user's offload
before it combines: that wait is where queueing at NMAs and on the link shows. After the last layer, the
LM head, then gpu.step_overhead (host work per step; every lane pays it). User u at replay step i takes trace step (i + u) mod n, so users differ. New tokens' KV go back
in groups (user u sends when (i + u) is a multiple of the group), as background link traffic; their bytes
are counted amortized, one token per user per step.

Every run is bounded: system.simulation.max_events and max_simulated_time stop it, and the outcome says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import simpy

from cemsim.config.components import DReXConfig
from cemsim.sim.gpu import GPU, projection_work
from cemsim.sim.link import BACKGROUND, link_occupancy
from cemsim.sim.plan import GpuOp, kv_write_bytes_per_step, layer_plan
from cemsim.sim.system import SimSystem
from cemsim.sim.work import StepWork
from cemsim.trace.records import TraceHeader


@dataclass
class ReplayOutcome:
    step_latencies: list[float] = field(default_factory=list)
    events: int = 0
    wall_s: float = 0.0
    sim_time: float = 0.0
    truncated: str | None = None  # why the run stopped early, when it did


def write_group(sim: SimSystem) -> int:
    cfg = sim.config
    if sim.kind.startswith("cem") and cfg.cem is not None:  # the KV lives there, whatever the policy reads
        return cfg.cem.layout.keys_per_block  # type: ignore[attr-defined]
    if sim.kind.startswith("host") and cfg.host_memory is not None:
        return cfg.host_memory.kv_write_group
    return 0


class Replayer:
    def __init__(self, sim: SimSystem, header: TraceHeader, works: list[StepWork], batch: int) -> None:
        self.sim, self.header, self.works, self.batch = sim, header, works, batch
        self.env, self.rec, self.sizes = sim.env, sim.rec, sim.sizes
        n_lanes = len(sim.lanes)
        self.lane_users = [[u for u in range(batch) if u % n_lanes == g] for g in range(n_lanes)]
        self.group = write_group(sim)
        # at most batch x kv_heads requests are in flight (a lane waits for its layer's before the next):
        # when the controller queue holds them all it never blocks, and skipping it saves two events each
        depth = getattr(sim.config.cem, "request_queue_depth", 0)
        self.queue_can_fill = sim.cem is not None and batch * self.sizes.kv_heads > depth
        if sim.cem is not None:
            sim.cem.bound_in_flight(batch * self.sizes.kv_heads)  # type: ignore[attr-defined]

    # -- one step --------------------------------------------------------------------------------------
    def lane_step(
        self, lane: GPU, users: list[int], step: int, main: bool
    ) -> Generator[simpy.Event, None, None]:
        env, rec, sim = self.env, self.rec, self.sim
        works = {u: self.works[(step + u) % len(self.works)] for u in users}
        proj = projection_work(sim.config.geometry, self.sizes.dtype_bytes, len(users), sim.tp)

        def phase(name: str, since: float) -> None:
            if main:
                rec.add_phase(name, env.now - since)

        for layer in range(self.sizes.layers):
            t = env.now
            yield from lane.op("qkv_proj", *proj["pre"])
            phase("projection", t)
            plan = layer_plan(sim.kind, self.sizes, list(works.values()), layer, sim.tp, sim.config.gpu)
            t = env.now
            for op in plan.before:
                yield from lane.op(*op)
            phase("attention_gpu", t)
            t_att = env.now
            par = env.process(self._ops(lane, plan.parallel))
            offload = self._offload(users, works, layer, t_att)
            yield simpy.AllOf(env, [par, *offload])
            gpu_time = par.value
            if main:
                rec.add_phase("attention_gpu", gpu_time)
                rec.add_phase("attention_wait", env.now - t_att - gpu_time)
            if not offload:
                rec.user_latency.extend([env.now - t_att] * len(users))
            t = env.now
            for op in plan.after:
                yield from lane.op(*op)
            phase("attention_gpu", t)
            self._write_back(users, step, layer)
            t = env.now
            yield from lane.op("out_proj_mlp", *proj["post"])
            phase("projection", t)
            if sim.peer is not None:
                t = env.now
                for _ in range(2):  # after attention's output projection and after the MLP
                    yield from sim.peer.allreduce(
                        len(users) * sim.config.geometry.hidden * self.sizes.dtype_bytes, sim.tp, lane.track
                    )
                phase("all_reduce", t)
            t = env.now
            yield from lane.overhead()
            phase("layer_overhead", t)
        t = env.now
        yield from lane.op("lm_head", *proj["head"])
        phase("projection", t)
        t = env.now
        yield from lane.step_overhead()
        phase("step_overhead", t)

    def _ops(self, lane: GPU, ops: list[GpuOp]) -> Generator[simpy.Event, None, float]:
        start = self.env.now
        for op in ops:
            yield from lane.op(*op)
        return self.env.now - start

    # -- offloaded attention ---------------------------------------------------------------------------
    def _offload(
        self, users: list[int], works: dict[int, StepWork], layer: int, t0: float
    ) -> list[simpy.Process]:
        sim, env, key_bytes = self.sim, self.env, self.sizes.key_bytes
        procs: list[simpy.Process] = []
        if layer in self.sizes.local_layers:  # a sliding-window layer: on the GPU only (plan.py)
            return procs
        if sim.kind == "cem":
            left = {u: self.sizes.kv_heads for u in users}
            for u in users:
                for h in range(self.sizes.kv_heads):
                    procs.append(env.process(self._cem_request(u, layer, h, works[u], t0, left)))
        elif sim.kind == "host_dense" and sim.host is not None and sim.link is not None:
            for u in users:
                nbytes = works[u].context * self.sizes.kv_heads * 2 * key_bytes
                procs.append(
                    env.process(
                        self._timed(u, t0, sim.host.stream(sim.link, nbytes, "kv_stream", "host_memory"))
                    )
                )
        elif sim.kind == "cem_dense" and sim.link is not None:
            for u in users:
                nbytes = works[u].context * self.sizes.kv_heads * 2 * key_bytes
                procs.append(env.process(self._timed(u, t0, self._cem_stream(nbytes))))
        elif sim.kind == "host_sparse":
            for u in users:
                procs.append(env.process(self._timed(u, t0, self._host_gather(works[u], layer))))
        return procs

    def _cem_stream(self, nbytes: float) -> Generator[simpy.Event, None, None]:
        """Dense attention with the KV on the CEM device: every key and value read out of its LPDDR5X (all
        packages in parallel) and over the link, whose to-host direction is held for the slower of the two,
        then the link's flight latency. No PFU or NMA works: nothing is filtered."""
        sim, env, rec = self.sim, self.env, self.rec
        cem, link = sim.config.cem, sim.link
        assert isinstance(cem, DReXConfig) and link is not None
        req = link.dirs["to_host"].request()
        yield req
        start = env.now
        device = cem.packages * cem.channels_per_package * cem.channel_bandwidth
        occ = max(nbytes / device, link_occupancy(link.cfg, nbytes))
        yield env.timeout(occ)
        link.dirs["to_host"].release(req)
        rec.add_bytes("cem.lpddr", nbytes)
        rec.add_bytes(f"{link.name}.to_host", nbytes)
        rec.add_busy(f"{link.name}.to_host", occ)
        rec.span(start, env.now, "cem", "kv_stream", bytes=nbytes)
        yield env.timeout(link.cfg.latency)

    def _timed(self, user: int, t0: float, gen: Generator) -> Generator[simpy.Event, None, None]:
        yield from gen
        self.rec.user_latency.append(self.env.now - t0)

    def _host_gather(self, w: StepWork, layer: int) -> Generator[simpy.Event, None, None]:
        sim, key_bytes = self.sim, self.sizes.key_bytes
        assert sim.host is not None and sim.link is not None
        yield from sim.host.stream(
            sim.link, float(w.survivors[layer].sum()) * key_bytes, "survivor_keys", "host_memory"
        )
        yield from sim.host.stream(
            sim.link, float(w.values[layer].sum()) * key_bytes, "topk_values", "host_memory"
        )

    def _cem_request(
        self, user: int, layer: int, head: int, w: StepWork, t0: float, left: dict[int, int]
    ) -> Generator[simpy.Event, None, None]:
        sim, sizes = self.sim, self.sizes
        assert sim.cem is not None and sim.link is not None
        slot = sim.cem.queue.request() if self.queue_can_fill else None  # type: ignore[attr-defined]
        if slot is not None:
            yield slot
        yield from sim.link.transfer("to_device", sizes.request_bytes(), "request")
        buf = yield from sim.cem.serve(user, layer, head, w)  # type: ignore[attr-defined]
        resp = sizes.response_bytes(self.header.k, int(w.survivors[layer, head]), int(w.values[layer, head]))
        yield from sim.link.transfer("to_host", resp, "response")
        if buf is not None:
            sim.cem.responses.release(buf)  # type: ignore[attr-defined]
        if slot is not None:
            sim.cem.queue.release(slot)  # type: ignore[attr-defined]
        left[user] -= 1
        if left[user] == 0:
            self.rec.user_latency.append(self.env.now - t0)

    def _write_back(self, users: list[int], step: int, layer: int) -> None:
        sim = self.sim
        if not self.group or sim.link is None or layer in self.sizes.local_layers:
            return
        nbytes = self.group * self.sizes.kv_token_bytes
        for u in users:
            if (step + u) % self.group == 0:
                self.env.process(
                    sim.link.transfer("to_device", nbytes, "kv_write", BACKGROUND, account=False)
                )

    def account_step(self, step: int) -> None:
        """Amortized and per-step counters: DReX work of every user, KV write-back bytes."""
        if self.sim.cem is not None:
            for u in range(self.batch):
                self.sim.cem.account(self.works[(step + u) % len(self.works)])  # type: ignore[attr-defined]
        if not self.group:
            return
        nbytes = kv_write_bytes_per_step(self.sizes, self.batch)
        self.rec.add_bytes("link.to_device", nbytes)
        self.rec.add_bytes("cem.lpddr_write" if self.sim.kind.startswith("cem") else "host_memory", nbytes)

    def _run_until(self, done: simpy.Event, out: ReplayOutcome) -> str | None:
        """Step the engine until ``done``, within the configured bounds on events and simulated time."""
        env, limits = self.env, self.sim.config.simulation
        step, peek = env.step, env.peek
        max_events, max_time = limits.max_events, limits.max_simulated_time
        n = out.events
        try:
            while not done.triggered:
                if n >= max_events:
                    return f"stopped at system.simulation.max_events = {max_events} events"
                if peek() > max_time:
                    if peek() == float("inf"):
                        return "stopped: no more events, yet the step is not done (a deadlock)"
                    return f"stopped at system.simulation.max_simulated_time = {max_time} s"
                step()
                n += 1
        finally:
            out.events = n
        return None

    # -- driver ----------------------------------------------------------------------------------------
    def run(
        self, steps: int, timeline_step: int | None = None, progress: Callable[[int], None] | None = None
    ) -> ReplayOutcome:
        env = self.env
        out = ReplayOutcome()
        t_wall = time.perf_counter()
        for i in range(steps):
            self.rec.record_spans = i == timeline_step
            start = env.now
            procs = [
                env.process(self.lane_step(lane, users, i, g == 0))
                for g, (lane, users) in enumerate(zip(self.sim.lanes, self.lane_users, strict=True))
                if users
            ]
            done = simpy.AllOf(env, procs)
            out.truncated = self._run_until(done, out)
            if out.truncated:
                break
            self.account_step(i)
            out.step_latencies.append(env.now - start)
            if progress is not None:
                progress(i)
        self.rec.record_spans = False
        out.wall_s = time.perf_counter() - t_wall
        out.sim_time = env.now
        return out
