"""Host DDR5 feeding the GPU over PCIe: KV streamed (dense) or gathered (sparse) each decode step.

A stream holds the host memory and the link's to-GPU direction together for nbytes / min(host read rate,
effective link bandwidth), then pays both latencies once (DMA pipelines the rest). The host read rate comes
from the DRAM engine (cemsim.dram) with the host's device preset, over all of its engine channels (a DDR5
DIMM channel is two 32-bit subchannels): a dense stream reads consecutive addresses; a sparse gather reads
``gather_bytes`` at random addresses (survivors of a sparse filter are scattered: a gather is replayed as
uniformly random vectors, not credited with the row hits of survivors that happen to be neighbours). Each
rate is measured once per config on a stream long enough for refresh to show, and reused.
"""

from __future__ import annotations

import functools
from collections.abc import Generator
from dataclasses import replace

import numpy as np
import simpy

from cemsim.config.components import HostMemoryConfig
from cemsim.dram import DramSpec, load_dram_spec, replay
from cemsim.errors import CemsimError
from cemsim.sim.drex_layout import DrexLayout
from cemsim.sim.link import Link, link_occupancy
from cemsim.sim.registry import register_sim
from cemsim.sim.stats import Recorder

STREAM_LINES = 1 << 15  # lines of a dense stream per engine channel (~30 tREFI of DDR5-4800)
GATHER_READS = 1 << 14  # random vectors per gather sample
GATHER_SPAN = (
    1 << 30
)  # bytes the random vectors are drawn from (a KV region much larger than the banks' rows)
GATHER_DEPTH = 32  # vectors in flight per engine channel: a DMA engine keeps the controller's queue full


def host_spec(cfg: HostMemoryConfig) -> tuple[DramSpec, int]:
    """The engine's device and the number of engine channels of the host memory."""
    try:
        spec = load_dram_spec(cfg.device)
    except CemsimError as exc:
        raise CemsimError(f"host_memory.device: {exc}") from None
    per_channel = cfg.channel_bandwidth / spec.channel_peak_bytes_per_s
    if abs(per_channel - round(per_channel)) > 0.01 or round(per_channel) < 1:
        raise CemsimError(
            f"host_memory.channel_bandwidth ({cfg.channel_bandwidth / 1e9:.2f} GB/s) is not a whole number of "
            f"the DRAM device {spec.name!r}'s channels ({spec.channel_peak_bytes_per_s / 1e9:.2f} GB/s each)"
        )
    return spec, cfg.channels * round(per_channel)


def _layout(cfg: HostMemoryConfig, spec: DramSpec, channels: int, vector: int) -> DrexLayout:
    lay = DrexLayout(
        channels=channels,
        ranks=spec.ranks,
        bankgroups=spec.bankgroups,
        banks_per_group=spec.banks_per_group,
        keys_per_block=1,
        interleave="channel_then_bank",
        key_mapping=cfg.mapping,
        burst=spec.burst_bytes,
        row_buffer=spec.columns * spec.burst_bytes,
        key_bytes=vector,
        head_dim=1,
        passes=1,
    )
    try:
        lay.check()
    except CemsimError as exc:
        raise CemsimError(f"host_memory: {exc}") from None
    return lay


def _replay_rate(spec: DramSpec, lay: DrexLayout, positions: np.ndarray, depth: int) -> float:
    """Bytes per second of reading the vectors at ``positions`` over every engine channel (closed loop)."""
    c = lay.data_coordinates(positions)
    order = np.argsort(c["channel"], kind="stable")
    res = replay(
        spec,
        rank=c["rank"][order],
        bankgroup=c["bankgroup"][order],
        bank=c["bank"][order],
        row=c["row"][order] % spec.rows,
        column=c["column"][order],
        is_write=np.zeros(len(order), bool),
        channel=c["channel"][order],
        depth=depth,
        key_id=c["key"][order],
    )
    return len(positions) * lay.key_bytes / (float(np.max(res.done)) * spec.tck_s)


@functools.lru_cache(maxsize=16)
def _rates(cfg: HostMemoryConfig) -> tuple[float, float]:
    spec, channels = host_spec(cfg)
    spec = replace(spec, act_limits="jedec")
    line = spec.burst_bytes
    stream = _replay_rate(spec, _layout(cfg, spec, channels, line), np.arange(STREAM_LINES * channels), 64)
    vector = int(cfg.gather_bytes)
    lay = _layout(cfg, spec, channels, vector)
    rng = np.random.default_rng(0)
    pos = np.sort(rng.choice(GATHER_SPAN // vector, GATHER_READS, replace=False))
    gather = _replay_rate(spec, lay, pos, GATHER_DEPTH)
    return stream, gather


def host_bandwidth(cfg: HostMemoryConfig, gather: bool = False) -> float:
    """Host read rate (bytes/s) from the DRAM engine: a dense stream, or a sparse gather of random vectors."""
    stream, scattered = _rates(cfg)
    return scattered if gather else stream


@register_sim("host_memory", "ddr5")
class HostMemory:
    def __init__(self, env: simpy.Environment, cfg: HostMemoryConfig, rec: Recorder) -> None:
        self.env, self.cfg, self.rec = env, cfg, rec
        self.port = simpy.Resource(env, capacity=1)

    def stream(self, link: Link, nbytes: float, label: str, track: str) -> Generator[simpy.Event, None, None]:
        """Host memory -> link -> GPU, both held for the slower of the two. ``kv_stream`` reads consecutive
        addresses; anything else (survivor keys, top-k values) is a gather of scattered vectors."""
        if nbytes <= 0:
            return
        mem_req = self.port.request()
        link_req = link.dirs["to_host"].request()
        yield mem_req & link_req
        start = self.env.now
        rate = host_bandwidth(self.cfg, gather=label != "kv_stream")
        occ = max(nbytes / rate, link_occupancy(link.cfg, nbytes))
        yield self.env.timeout(occ)
        self.port.release(mem_req)
        link.dirs["to_host"].release(link_req)
        self.rec.add_bytes("host_memory", nbytes)
        self.rec.add_bytes(f"{link.name}.to_host", nbytes)
        self.rec.add_busy("host_memory", occ)
        self.rec.add_busy(f"{link.name}.to_host", occ)
        self.rec.span(start, self.env.now, track, label, bytes=nbytes)
        yield self.env.timeout(self.cfg.latency + link.cfg.latency)
