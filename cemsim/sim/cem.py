"""DReX (ISCA 2025): PIM filter units in every LPDDR5X bank, one near-memory accelerator (NMA) per package.

One request = one (user, layer, KV head) context slice set, served by the NMA of the package it lives on
(one request at a time per NMA, DReX section 5.4):

1. filtering, one event per epoch: every bank holding one of the request's 128-key Key Blocks makes its
   bitmap (bank-internal PFU operations), the channel's bitmaps are read into the NMA, and the memory
   controller generates survivor addresses; epochs pipeline through these three stages.
2. the address scratchpad (2 MiB of 32-bit addresses) fills: filtering stops; the NMA fetches the survivor
   keys interleaved over its channels and scores them (MACs overlap the fetch), keeping the top-k; then
   filtering resumes. So filtering and scoring alternate, one scoring event per scratchpad fill.
3. the top-k values are fetched; the scores and values go back over the link (replay.py does the link).

Every duration comes from the DRAM engine (cemsim.dram) replaying the phase's requests: PFU operations and
bitmap reads per bank, survivor and value reads per channel with the NMA's queue depth
(drex_layout.py places the keys, drex_timing.py runs the engine). SimPy sees one event per epoch and phase.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

import simpy

from cemsim.config.components import DReXConfig
from cemsim.sim.drex_timing import DrexTimer, drex_layout
from cemsim.sim.registry import register_sim
from cemsim.sim.stats import Recorder
from cemsim.sim.work import RowGeometry, StepWork


@dataclass(frozen=True)
class DrexShape:
    """Per-workload constants of the device (computed once per simulation)."""

    pfu_time: float  # one PFU's busy time per Key Block: D column steps x query passes
    key_bytes: int
    group: int
    head_dim: int
    passes: int
    rows: RowGeometry


def drex_shape(cfg: DReXConfig, head_dim: int, group: int, dtype_bytes: int) -> DrexShape:
    passes = math.ceil(group / cfg.pfu.queries_per_pass)
    key_bytes = head_dim * dtype_bytes
    rows = RowGeometry(
        slice_keys=cfg.channels_per_package * cfg.banks_per_channel * cfg.layout.keys_per_block,
        # keys of a Key Block per opened row under the key mapping (64 contiguous keys with RoBaRaCoCh;
        # 32 per bank group with RoBaRaCoBgCh): the rows' expected count is the fetches' row signature
        keys_per_row=drex_layout(cfg, head_dim, key_bytes, group).keys_per_row(),
        keys_per_block=cfg.layout.keys_per_block,
    )
    return DrexShape(
        head_dim * cfg.pfu.bitmap_time_per_dim * passes, key_bytes, group, head_dim, passes, rows
    )


def work_counters(cfg: DReXConfig, shape: DrexShape, w: StepWork) -> dict[str, float]:
    """Bytes and operations of serving every (layer, KV head) request of one user's step work (the DES
    adds them once per user per step)."""
    surv = float(w.survivors.sum())
    vals = float(w.values.sum())
    blocks = float(w.epoch_blocks.sum())  # type: ignore[union-attr]
    return {
        "cem.lpddr": (surv + vals) * shape.key_bytes,
        "cem.bitmaps": blocks * cfg.layout.keys_per_block / 8 * shape.passes,
        "cem.scratchpad": 2 * surv * cfg.nma.address_bytes,  # written by address generation, read to fetch
        "ops:cem.pfu_seconds": blocks * shape.pfu_time,
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
        self.timer = DrexTimer(cfg, shape.head_dim, shape.key_bytes, shape.group, kv_heads)
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
        phases = self.timer.request(w, layer, head)
        env, rec = self.env, self.rec
        with self.nmas[pkg].request() as req:
            yield req
            t0 = env.now
            for p, epochs in enumerate(phases.epochs):
                for e, dt in zip(epochs, phases.increments[p], strict=True):
                    start = env.now
                    yield env.timeout(dt)
                    if rec.record_spans:
                        rec.span(
                            start, env.now, track, "filter_epoch", user=user, layer=layer, head=head, epoch=e
                        )
                yield from self._score(track, phases.scoring[p], phases.keys[p], user, layer, head)
            start = env.now
            if phases.value > 0:
                yield env.timeout(phases.value)
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
        self, track: str, dt: float, keys: float, user: int, layer: int, head: int
    ) -> Generator[simpy.Event, None, None]:
        if dt > 0:
            start = self.env.now
            yield self.env.timeout(dt)
            self.rec.span(start, self.env.now, track, "score", user=user, layer=layer, head=head, keys=keys)
