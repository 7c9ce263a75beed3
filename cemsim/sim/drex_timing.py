"""DReX phase durations from the command-level DRAM engine (cemsim.dram), one compiled call per batch.

Per request (user, layer, KV head) the NMA alternates filter runs and scoring phases (cem.py), then fetches
the top-k values. Each duration comes from the requests the phase really makes (drex_layout.py):

* filter epoch: every bank holding one of the epoch's Key Blocks runs one bank-internal PFU operation per
  sign-bit row (ACT, then D x bitmap_time_per_dim x passes of column steps without the data bus, under the
  device's activation limits: ``cem.pfu.activation``), then the channel's bitmaps (16 B per bank and pass)
  are read over the data bus. The slowest channel sets the stage times; the memory controller's address
  generation (``pfu.address_generation_time``) is the third stage. Epochs pipeline through the three stages
  (a flow shop: an epoch enters a stage when it left the previous one and the stage is free).
* scoring phase: the survivor keys of the run's epochs, fetched in address order by the NMA with at most
  ``nma.outstanding_keys`` keys in flight per channel (closed loop); the MACs overlap the fetch.
* value fetch: the top-k values (a subset of the survivors' positions) the same way.

Every phase starts on idle banks with their rows closed at tick 0 of its own engine channel (phases of a
request are separated by the other stages, and the refresh schedule restarts with each phase).

``cem.dram_detail: sampled`` runs only ``cem.sampled_phases`` scoring and value phases per decode step
through the engine (spread over the range of key counts) and predicts the others from a least-squares fit of
duration on (keys, expected rows touched) over the sample; docs/benchmarks.md gives its error against full.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from cemsim.config.components import DReXConfig
from cemsim.dram import DramSpec, load_dram_spec, replay
from cemsim.errors import CemsimError
from cemsim.sim.drex_layout import DrexLayout, survivor_positions
from cemsim.sim.work import StepWork

_BATCH_REQUESTS = 2_000_000  # DRAM requests per engine call (bounds the arrays held at once)


def drex_dram_spec(cfg: DReXConfig) -> DramSpec:
    """The engine's device for one DReX channel: the preset's timings, DReX's bank organisation, and the
    PFUs' activation limits."""
    lp = cfg.lpddr
    try:
        spec = load_dram_spec(lp.device)
    except CemsimError as exc:
        raise CemsimError(f"cem.lpddr.device: {exc}") from None
    per_group, rest = divmod(cfg.banks_per_channel, lp.ranks * lp.bankgroups)
    if rest or per_group < 1:
        raise CemsimError(
            f"cem.banks_per_channel = {cfg.banks_per_channel} is not a whole number of banks per bank group "
            f"with cem.lpddr.ranks = {lp.ranks} and cem.lpddr.bankgroups = {lp.bankgroups}"
        )
    if int(lp.burst) != spec.burst_bytes:
        raise CemsimError(
            f"cem.lpddr.burst = {int(lp.burst)} B, but the DRAM device {spec.name!r} returns "
            f"{spec.burst_bytes} B per burst"
        )
    if int(lp.row_buffer) != spec.columns * spec.burst_bytes:
        raise CemsimError(
            f"cem.lpddr.row_buffer = {int(lp.row_buffer)} B, but a row of the DRAM device {spec.name!r} holds "
            f"{spec.columns} bursts of {spec.burst_bytes} B = {spec.columns * spec.burst_bytes} B"
        )
    return replace(
        spec,
        ranks=lp.ranks,
        bankgroups=lp.bankgroups,
        banks_per_group=per_group,
        act_limits=cfg.pfu.activation,
    )


def drex_layout(cfg: DReXConfig, head_dim: int, key_bytes: int, group: int) -> DrexLayout:
    lp = cfg.lpddr
    layout = DrexLayout(
        channels=cfg.channels_per_package,
        ranks=lp.ranks,
        bankgroups=lp.bankgroups,
        banks_per_group=cfg.banks_per_channel // (lp.ranks * lp.bankgroups),
        keys_per_block=cfg.layout.keys_per_block,
        interleave=cfg.layout.interleave,
        key_mapping=cfg.layout.key_mapping,
        burst=int(lp.burst),
        row_buffer=int(lp.row_buffer),
        key_bytes=key_bytes,
        head_dim=head_dim,
        passes=math.ceil(group / cfg.pfu.queries_per_pass),
    )
    layout.check()
    return layout


def pipeline(stages: list[list[float]]) -> list[float]:
    """Flow shop: end time of each job at the last stage; stages[s][j] = job j's time in stage s."""
    n = len(stages[0])
    prev = [0.0] * n
    for times in stages:
        free = 0.0
        for j in range(n):
            free = max(free, prev[j]) + times[j]
            prev[j] = free
    return prev


@dataclass
class RequestPhases:
    """One request's timeline pieces: per filter run, the epochs' increments (epoch e of a run ends
    sum(increments[:e + 1]) after the run starts), then that run's scoring phase; then the value fetch."""

    epochs: list[list[int]]
    increments: list[list[float]]
    scoring: list[float]
    value: float
    keys: list[float]  # survivors scored in each phase


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


class DrexTimer:
    """Durations of DReX phases on one device config, memoised per step work (a batch reuses them)."""

    def __init__(self, cfg: DReXConfig, head_dim: int, key_bytes: int, group: int, kv_heads: int) -> None:
        self.cfg, self.group, self.kv_heads, self.head_dim = cfg, group, kv_heads, head_dim
        self.spec = drex_dram_spec(cfg)
        self.layout = drex_layout(cfg, head_dim, key_bytes, group)
        self.tck = self.spec.tck_s
        self.capacity = int(cfg.nma.address_scratchpad // cfg.nma.address_bytes)
        self.mac_rate = cfg.nma.engines * cfg.nma.mac_lanes * cfg.nma.clock
        self._stages: dict[int, tuple[float, float]] = {}
        self._works: dict[int, list[list[RequestPhases]]] = {}
        self.engine_requests = 0  # DRAM requests replayed so far (benchmarks report it)
        self.sampled: dict[str, float] = {}  # sampled mode: phases run vs predicted

    # -- filtering -------------------------------------------------------------------------------------
    def epoch_stages(self, blocks: int) -> tuple[float, float]:
        """(bitmap generation, bitmap read) seconds of an epoch of ``blocks`` Key Blocks: the slowest
        channel's, from one engine replay per distinct per-channel block count."""
        if blocks not in self._stages:
            gen, read = 0.0, 0.0
            for n in sorted(set(self.layout.epoch_blocks_per_channel(blocks).tolist())):
                if n:
                    g, r = self._pfu_channel(n)
                    gen, read = max(gen, g), max(read, r)
            self._stages[blocks] = (gen, read)
        return self._stages[blocks]

    def _pfu_channel(self, n: int) -> tuple[float, float]:
        """(generation, readout) seconds of one channel whose first ``n`` banks each filter a Key Block."""
        lay = self.layout
        rank, bg, bank = lay.bank_coordinates(n)
        if self.cfg.pfu.activation == "broadcast":
            # one command reaches every bank and the banks step in lockstep: the channel behaves like one
            # bank per bank group, each standing for its group's banks (the readout still moves every bitmap)
            keep = min(n, lay.bankgroups)
            rank, bg, bank = rank[:keep], bg[:keep], bank[:keep]
        banks = len(rank)
        rows = lay.sign_rows_per_block
        dims = [min(lay.dims_per_row, lay.head_dim - r * lay.dims_per_row) for r in range(rows)]
        t_col = self.cfg.pfu.bitmap_time_per_dim * lay.passes
        # PFU operations: sign row r of each bank, D_r column steps without the data bus
        op_rank, op_bg, op_bank = np.tile(rank, rows), np.tile(bg, rows), np.tile(bank, rows)
        op_row = np.repeat(np.arange(rows, dtype=np.int64), banks)
        op_hold = np.repeat([math.ceil(d * t_col / self.tck - 1e-9) for d in dims], banks).astype(np.int64)
        # bitmap readout: the NMA reads the channel's whole bitmap set, 16 B per bank and pass (DReX's fixed
        # 120.4 ns transfer, also for an epoch whose blocks fill only some banks), packed into bursts from the
        # filtering banks' open last sign row, consecutive bursts from consecutive bank groups
        bitmap_bytes = lay.keys_per_block // 8 * lay.passes
        reads = math.ceil(lay.banks * bitmap_bytes / lay.burst)
        src = np.arange(reads) % banks
        k = np.concatenate([np.full(len(op_row), 2), np.zeros(reads, np.int64)])
        # the controller sends every bank's PFU command at once, so its queue holds the whole epoch
        ctrl = self.spec.controller
        spec = replace(self.spec, controller=replace(ctrl, queue_size=max(ctrl.queue_size, len(k))))
        res = replay(
            spec,
            rank=np.concatenate([op_rank, rank[src]]),
            bankgroup=np.concatenate([op_bg, bg[src]]),
            bank=np.concatenate([op_bank, bank[src]]),
            row=np.concatenate([op_row, np.full(reads, rows - 1)]),
            column=np.concatenate([np.zeros(len(op_row), np.int64), np.arange(reads) % lay.columns]),
            is_write=np.zeros(len(k), bool),
            kind=k,
            hold=np.concatenate([op_hold, np.zeros(reads, np.int64)]),
            arrival=np.zeros(len(k), np.int64),
        )
        self.engine_requests += len(k)
        done = np.asarray(res.done)
        gen = float(done[: len(op_row)].max()) * self.tck
        read = float(done.max()) * self.tck - gen
        return gen, read

    def filter_increments(self, epoch_blocks: list[int]) -> list[float]:
        addr = self.cfg.pfu.address_generation_time
        stages = [self.epoch_stages(b) for b in epoch_blocks]
        ends = pipeline([[s[0] for s in stages], [s[1] for s in stages], [addr] * len(stages)])
        return [e - p for e, p in zip(ends, [0.0, *ends[:-1]], strict=True)]

    # -- fetches ---------------------------------------------------------------------------------------
    def fetch_times(self, phases: list[np.ndarray]) -> list[float]:
        """Seconds to fetch the keys at each array of positions (each phase on idle banks), batched."""
        out = [0.0] * len(phases)
        batch: list[int] = []
        size = 0
        per_key = self.layout.bursts_per_key // (self.layout.channels if self.layout.replicated else 1)
        for i, pos in enumerate(phases):
            if len(pos) == 0:
                continue
            batch.append(i)
            size += len(pos) * per_key
            if size >= _BATCH_REQUESTS:
                self._fetch_batch(phases, batch, out)
                batch, size = [], 0
        if batch:
            self._fetch_batch(phases, batch, out)
        return out

    def _fetch_batch(self, phases: list[np.ndarray], idx: list[int], out: list[float]) -> None:
        lay = self.layout
        parts = [lay.data_coordinates(phases[i]) for i in idx]
        chans = 1 if lay.replicated else lay.channels
        channel = np.concatenate([p["channel"] + j * chans for j, p in enumerate(parts)])
        key_off = np.cumsum([0] + [len(phases[i]) for i in idx[:-1]])
        key = np.concatenate([p["key"] + key_off[j] for j, p in enumerate(parts)])
        cols = {
            f: np.concatenate([p[f] for p in parts]) for f in ("rank", "bankgroup", "bank", "row", "column")
        }
        order = np.argsort(channel, kind="stable")  # each engine channel's requests together, in order
        res = replay(
            self.spec,
            **{f: v[order] for f, v in cols.items()},
            is_write=np.zeros(len(order), bool),
            channel=channel[order],
            depth=self.cfg.nma.outstanding_keys,
            key_id=key[order],
        )
        self.engine_requests += len(order)
        done = np.zeros(len(order), np.int64)
        done[order] = np.asarray(res.done)
        phase_of = channel // chans
        end = np.zeros(len(idx), np.int64)
        np.maximum.at(end, phase_of, done)
        for j, i in enumerate(idx):
            out[i] = float(end[j]) * self.tck

    # -- requests of a step ----------------------------------------------------------------------------
    def request(self, w: StepWork, layer: int, head: int) -> RequestPhases:
        table = self._works.get(id(w))
        if table is None:
            table = self._works[id(w)] = self._step(w)
        return table[layer][head]

    def _step(self, w: StepWork) -> list[list[RequestPhases]]:
        assert w.block_survivors is not None and w.block_values is not None
        assert w.epoch_survivors is not None and w.epoch_blocks is not None
        n_layers, n_heads = w.considered.shape
        lay = self.layout
        kpb, per_epoch = lay.keys_per_block, lay.blocks_per_epoch
        reqs: list[list[RequestPhases]] = []
        fetch_phase: list[tuple[int, int, int]] = []  # (layer, head, phase; -1 = values)
        sig: list[tuple[float, float]] = []  # (keys, expected rows) per fetch phase
        for layer in range(n_layers):
            row: list[RequestPhases] = []
            for head in range(n_heads):
                groups = scratchpad_groups(
                    w.epoch_survivors[layer, head], w.epoch_blocks[layer, head], self.capacity
                )
                blocks = w.epoch_blocks[layer, head]
                incs = [self.filter_increments([int(blocks[e]) for e in g]) for g in groups]
                keys = [float(w.epoch_survivors[layer, head, g].sum()) for g in groups]
                rows = w.epoch_rows[layer, head] if w.epoch_rows is not None else None
                for p, g in enumerate(groups):
                    fetch_phase.append((layer, head, p))
                    sig.append((keys[p], float(rows[g].sum()) if rows is not None else keys[p]))
                fetch_phase.append((layer, head, -1))
                vrows = float(w.value_rows[layer, head]) if w.value_rows is not None else 0.0
                sig.append((float(w.values[layer, head]), vrows))
                row.append(RequestPhases(groups, incs, [0.0] * len(groups), 0.0, keys))
            reqs.append(row)

        def positions(i: int) -> np.ndarray:
            layer, head, p = fetch_phase[i]
            salt = layer * n_heads + head
            n = int(w.considered[layer, head])
            if p < 0:
                return survivor_positions(w.block_values[layer, head], kpb, n, salt)
            pos = survivor_positions(w.block_survivors[layer, head], kpb, n, salt)
            epochs = reqs[layer][head].epochs[p]
            ep = pos // (kpb * per_epoch)
            return pos[(ep >= epochs[0]) & (ep <= epochs[-1])]

        if self.cfg.dram_detail == "full":
            times = self._timed(positions, list(range(len(fetch_phase))))
        else:
            times = self._sampled(positions, sig, fetch_phase)
        for i, (layer, head, p) in enumerate(fetch_phase):
            r = reqs[layer][head]
            if p < 0:
                r.value = times[i]
            else:
                macs = r.keys[p] * self.head_dim * self.group / self.mac_rate
                r.scoring[p] = max(times[i], macs)
        return reqs

    def _timed(self, positions, which: list[int]) -> dict[int, float]:  # type: ignore[no-untyped-def]
        out: dict[int, float] = {}
        chunk: list[int] = []
        arrays: list[np.ndarray] = []
        size = 0
        for i in which:  # positions are made per batch, so a 1M-token step never holds them all
            pos = positions(i)
            chunk.append(i)
            arrays.append(pos)
            size += len(pos)
            if size >= _BATCH_REQUESTS:
                out.update(zip(chunk, self.fetch_times(arrays), strict=True))
                chunk, arrays, size = [], [], 0
        if chunk:
            out.update(zip(chunk, self.fetch_times(arrays), strict=True))
        return out

    def _windowed(self, positions, which: list[int]) -> dict[int, float]:  # type: ignore[no-untyped-def]
        """Sampled mode's measurement of a phase: ``sampled_windows`` runs of consecutive survivors spread
        through it (``sampled_keys`` keys in all, each run on idle banks), scaled to the phase's keys:
        t = L + (sum over runs of (t_run - L)) x keys / keys in the runs, L one key's unloaded latency."""
        runs, per_run = self.cfg.sampled_windows, max(1, self.cfg.sampled_keys // self.cfg.sampled_windows)
        latency = self.fetch_times([np.zeros(1, np.int64)])[0]
        arrays: list[np.ndarray] = []
        owner: list[tuple[int, int, int]] = []  # (phase, keys of the phase, keys in this run)
        for i in which:
            pos = positions(i)
            if len(pos) <= runs * per_run:
                arrays.append(pos)
                owner.append((i, len(pos), -1))
                continue
            for start in np.linspace(0, len(pos) - per_run, runs).astype(np.int64):
                arrays.append(pos[start : start + per_run])
                owner.append((i, len(pos), per_run))
        times = self.fetch_times(arrays)
        out: dict[int, float] = {}
        spent: dict[int, float] = {}
        sampled: dict[int, int] = {}
        total: dict[int, int] = {}
        for (i, n, k), t in zip(owner, times, strict=True):
            if k < 0:
                out[i] = t
            else:
                spent[i] = spent.get(i, 0.0) + t - latency
                sampled[i] = sampled.get(i, 0) + k
                total[i] = n
        for i, extra in spent.items():
            out[i] = latency + extra * total[i] / sampled[i]
        return out

    def _sampled(self, positions, sig: list[tuple[float, float]], kinds: list[tuple[int, int, int]]):  # type: ignore[no-untyped-def]
        out: dict[int, float] = {}
        budget = self.cfg.sampled_phases
        for is_value in (False, True):
            idx = [i for i, k in enumerate(kinds) if (k[2] < 0) == is_value and sig[i][0] > 0]
            for i, k in enumerate(kinds):
                if (k[2] < 0) == is_value and sig[i][0] <= 0:
                    out[i] = 0.0
            if not idx:
                continue
            order = sorted(idx, key=lambda i: sig[i])
            pick = sorted({order[round(q)] for q in np.linspace(0, len(order) - 1, min(budget, len(order)))})
            measured = self._windowed(positions, pick)
            out.update(measured)
            rest = [i for i in idx if i not in measured]
            self.sampled["run" if not is_value else "run_values"] = len(pick)
            if not rest:
                continue
            # time per key interpolated in key count between the measured phases (which span the smallest
            # and the largest): a plane fit over (keys, rows) erred -26 % to +15 % on single phases and +5.1 %
            # on a whole 1M step; per-key interpolation -1.5 % there (docs/validation.md, sampled mode)
            keys, inverse = np.unique([sig[i][0] for i in pick], return_inverse=True)
            per_key = np.array([measured[i] / sig[i][0] for i in pick])
            per_key = np.bincount(inverse, weights=per_key) / np.bincount(inverse)  # phases of equal keys
            for i in rest:
                out[i] = float(np.interp(sig[i][0], keys, per_key)) * sig[i][0]
        return out
