"""DReX (ISCA 2025): PIM filter units in every LPDDR5X bank, one near-memory accelerator (NMA) per package.

One request = one (user, layer, KV head) context slice set, served by the NMA of the package it lives on
(one request at a time per NMA, DReX section 5.4):

1. filtering, one event per epoch: every bank holding one of the request's 128-key Key Blocks makes its
   bitmap in D x 1.25 ns (x query passes), all banks of a channel in lockstep; then the channel's bitmaps
   are read into the NMA (120.4 ns) and the memory controller generates survivor addresses (1,024 ns).
   Epochs pipeline: epoch e+1's stage runs while epoch e is in the next one.
2. the address scratchpad (2 MiB of 32-bit addresses) fills: filtering stops; the NMA fetches the survivor
   keys interleaved over its channels and scores them (MACs overlap the fetch), keeping the top-k; then
   filtering resumes. So filtering and scoring alternate, one scoring event per scratchpad fill.
3. the top-k values are fetched; the scores and values go back over the link (replay.py does the link).

Fetch cost per scoring phase (channels in parallel, keys interleaved over them): tCL + max(data bytes /
package bandwidth, rows opened x (tRP + tRCD) / cem.lpddr.activations_in_flight): the NMA issues survivors
one by one (DReX 5.4; activations_in_flight = 1), so each row miss exposes its precharge + activate while
row hits stream at channel bandwidth; a controller overlapping activations across banks raises the field.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import simpy

from cemsim.config.components import DReXConfig
from cemsim.sim.registry import register_sim
from cemsim.sim.stats import Recorder
from cemsim.sim.work import RowGeometry, StepWork


@dataclass(frozen=True)
class DrexShape:
    """Per-workload constants of the device: stage times and sizes (computed once per simulation)."""

    gen: float  # bitmap generation per epoch, all query passes
    read: float  # bitmap read into the NMA per epoch
    addr: float  # address generation per epoch
    key_bytes: int
    group: int
    head_dim: int
    passes: int
    rows: RowGeometry

    @property
    def bottleneck(self) -> float:
        return max(self.gen, self.read, self.addr)


def drex_shape(cfg: DReXConfig, head_dim: int, group: int, dtype_bytes: int) -> DrexShape:
    passes = math.ceil(group / cfg.pfu.queries_per_pass)
    key_bytes = head_dim * dtype_bytes
    rows = RowGeometry(
        slice_keys=cfg.channels_per_package * cfg.banks_per_channel * cfg.layout.keys_per_block,
        # a key is interleaved over the package's channels, so one "row" spans every channel's row buffer
        keys_per_row=cfg.lpddr.row_buffer * cfg.channels_per_package / key_bytes,
        keys_per_block=cfg.layout.keys_per_block,
    )
    gen = head_dim * cfg.pfu.bitmap_time_per_dim * passes
    return DrexShape(
        gen,
        cfg.pfu.bitmap_read_latency,
        cfg.pfu.address_generation_time,
        key_bytes,
        group,
        head_dim,
        passes,
        rows,
    )


def filter_time(shape: DrexShape, epochs: int) -> float:
    """A run of pipelined epochs: fill (all three stages) then one bottleneck stage per further epoch."""
    if epochs <= 0:
        return 0.0
    return shape.gen + shape.read + shape.addr + (epochs - 1) * shape.bottleneck


def fetch_time(cfg: DReXConfig, shape: DrexShape, keys: float, rows: float) -> float:
    if keys <= 0:
        return 0.0
    data = keys * shape.key_bytes / (cfg.channels_per_package * cfg.channel_bandwidth)
    activate = rows * (cfg.lpddr.tRP + cfg.lpddr.tRCD) / cfg.lpddr.activations_in_flight
    return cfg.lpddr.tCL + max(data, activate)


def nma_mac_rate(cfg: DReXConfig) -> float:
    return cfg.nma.engines * cfg.nma.mac_lanes * cfg.nma.clock


def scoring_time(cfg: DReXConfig, shape: DrexShape, keys: float, rows: float) -> float:
    """Fetch the phase's survivor keys and score them against every query of the group (overlapped)."""
    return max(fetch_time(cfg, shape, keys, rows), keys * shape.head_dim * shape.group / nma_mac_rate(cfg))


def scratchpad_groups(
    epoch_survivors: np.ndarray, epoch_blocks: np.ndarray, capacity: int
) -> list[list[int]]:
    """Epochs filtered between two scoring phases: a group closes when the next epoch would overflow."""
    groups: list[list[int]] = []
    cur: list[int] = []
    fill = 0
    for e in np.flatnonzero(epoch_blocks > 0):
        s = int(epoch_survivors[e])
        if cur and fill + s > capacity:
            groups.append(cur)
            cur, fill = [], 0
        cur.append(int(e))
        fill += s
    if cur:
        groups.append(cur)
    return groups


def work_counters(cfg: DReXConfig, shape: DrexShape, w: StepWork) -> dict[str, float]:
    """Bytes and operations of serving every (layer, KV head) request of one user's step work (the DES
    adds them once per user per step; the analytic twin counts with the same function)."""
    surv = float(w.survivors.sum())
    vals = float(w.values.sum())
    blocks = float(w.epoch_blocks.sum())  # type: ignore[union-attr]
    return {
        "cem.lpddr": (surv + vals) * shape.key_bytes,
        "cem.bitmaps": blocks * cfg.layout.keys_per_block / 8 * shape.passes,
        "cem.scratchpad": 2 * surv * cfg.nma.address_bytes,  # written by address generation, read to fetch
        "ops:cem.pfu_seconds": blocks * shape.gen,
        "ops:cem.nma_macs": surv * shape.head_dim * shape.group,
    }


@register_sim("cem", "drex")
class DReX:
    def __init__(
        self, env: simpy.Environment, cfg: DReXConfig, shape: DrexShape, rec: Recorder, kv_heads: int
    ) -> None:
        self.env, self.cfg, self.shape, self.rec, self.kv_heads = env, cfg, shape, rec, kv_heads
        self.nmas = [simpy.Resource(env, capacity=1) for _ in range(cfg.packages)]
        self.queue = simpy.Resource(env, capacity=cfg.request_queue_depth)  # CXL controller request queue
        self.responses = simpy.Resource(
            env, capacity=cfg.response_buffers
        )  # scores + values awaiting the link
        self.capacity = int(cfg.nma.address_scratchpad // cfg.nma.address_bytes)
        self.buffers_can_fill = (
            True  # the replayer clears it when fewer requests can be in flight than buffers
        )

    def bound_in_flight(self, requests: int) -> None:
        """Wiring: at most ``requests`` are ever in flight; queues that can hold them all never block."""
        self.buffers_can_fill = requests > self.cfg.response_buffers

    def package_of(self, user: int, head: int) -> int:
        return self.cfg.layout.package_of(user, head, self.kv_heads, self.cfg.packages)

    def serve(self, user: int, layer: int, head: int, w: StepWork) -> Generator[simpy.Event, None, object]:
        """Serve one request; returns the response buffer it holds (release it once the response is sent),
        or None when buffers cannot run out. With every buffer taken, the NMA waits, holding its results."""
        pkg = self.package_of(user, head)
        track = f"nma{pkg}"
        blocks = w.epoch_blocks[layer, head]  # type: ignore[index]
        live = np.flatnonzero(blocks > 0).tolist()
        surv = w.epoch_survivors[layer, head].tolist()  # type: ignore[index]
        rows = w.epoch_rows[layer, head].tolist()  # type: ignore[index]
        sh, env, rec = self.shape, self.env, self.rec
        with self.nmas[pkg].request() as req:
            yield req
            t0 = env.now
            fill, fill_rows, in_run = 0.0, 0.0, 0
            for e in live:
                s = surv[e]
                if in_run and fill + s > self.capacity:  # scratchpad full: stop filtering, score
                    yield from self._score(track, fill, fill_rows, user, layer, head)
                    fill, fill_rows, in_run = 0.0, 0.0, 0
                start = env.now
                yield env.timeout(sh.gen + sh.read + sh.addr if in_run == 0 else sh.bottleneck)
                if rec.record_spans:
                    rec.span(
                        start, env.now, track, "filter_epoch", user=user, layer=layer, head=head, epoch=e
                    )
                fill += s
                fill_rows += rows[e]
                in_run += 1
            yield from self._score(track, fill, fill_rows, user, layer, head)
            start = env.now
            vt = fetch_time(self.cfg, sh, float(w.values[layer, head]), float(w.value_rows[layer, head]))  # type: ignore[index]
            if vt > 0:
                yield env.timeout(vt)
                rec.span(start, env.now, track, "value_fetch", user=user, layer=layer, head=head)
            buf = None
            if self.buffers_can_fill:
                buf = self.responses.request()
                yield buf
            rec.add_busy(track, env.now - t0)
        return buf

    def account(self, w: StepWork) -> None:
        """Counters of one user's whole step (every request it makes), added once."""
        for key, n in work_counters(self.cfg, self.shape, w).items():
            if key.startswith("ops:"):
                self.rec.add_ops(key[4:], n)
            else:
                self.rec.add_bytes(key, n)

    def _score(
        self, track: str, keys: float, rows: float, user: int, layer: int, head: int
    ) -> Generator[simpy.Event, None, None]:
        dt = scoring_time(self.cfg, self.shape, keys, rows)
        if dt > 0:
            start = self.env.now
            yield self.env.timeout(dt)
            self.rec.span(start, self.env.now, track, "score", user=user, layer=layer, head=head, keys=keys)
