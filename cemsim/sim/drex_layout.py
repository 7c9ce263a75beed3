"""Where DReX keeps a request's keys, and the DRAM requests its phases make (DReX ISCA 2025, section 4).

A request is one (user, layer, KV head) context slice set. Its considered keys (index 0 = the first key
after the sinks) are cut into Key Blocks of ``keys_per_block`` keys. Two data structures, two placements:

* sign bits: Key Block j's bits lie column-major in one bank of one channel (one 128-bit column per
  dimension), next to that bank's PFU. A filter epoch covers one Key Block in every bank of a package
  (channels x banks blocks); ``layout.interleave`` says how consecutive blocks are dealt out:
  ``channel_then_bank`` (block j -> channel j % C, bank j // C) or ``bank_then_channel`` (bank j % B,
  channel j // B). It decides how the blocks of a partial epoch spread over the channels.
* full-precision keys (and values, an array of the same shape): ordinary data in the package's address
  space, key p at byte p x key_bytes, split into bursts of ``lpddr.burst`` bytes and mapped to DRAM
  coordinates by ``layout.key_mapping``, a field order from most to least significant (``RoBaRaCoCh``,
  Ramulator's default scheme: a 256-byte key is one 32-byte burst in each of 8 channels, consecutive
  keys fill a row's columns, consecutive rows rotate over ranks, then banks).

Survivor positions inside a Key Block are not in the trace (it holds counts per position block): the n
survivors of a block of w valid keys are a uniform random subset of its w keys (seeded: the same
request always gets the same positions). The NMA fetches
survivors in address order (the order address generation writes them into the scratchpad).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from cemsim.errors import CemsimError

FIELDS = ("Ro", "Ba", "Bg", "Ra", "Co", "Ch")


def parse_mapping(mapping: str, where: str = "cem.layout.key_mapping") -> list[str]:
    """``"RoBaRaCoCh"`` -> ``["Ro", "Ba", "Ra", "Co", "Ch"]`` (most significant first), checked."""
    parts = [mapping[i : i + 2] for i in range(0, len(mapping), 2)]
    bad = [p for p in parts if p not in FIELDS]
    if len(mapping) % 2 or bad or len(set(parts)) != len(parts):
        raise CemsimError(
            f"address mapping {mapping!r} is not a field order: write two-letter fields from most to least "
            f"significant, each once, from {', '.join(FIELDS)} (e.g. RoBaRaCoCh)",
            where=where,
        )
    for need in ("Ro", "Ba", "Co", "Ch"):
        if need not in parts:
            raise CemsimError(f"address mapping {mapping!r} has no {need} field", where=where)
    return parts


@dataclass(frozen=True)
class DrexLayout:
    channels: int  # per package
    ranks: int  # per channel (DReX dies modelled as ranks: each has its own activation window)
    bankgroups: int  # per rank
    banks_per_group: int
    keys_per_block: int
    interleave: str  # sign-bit Key Blocks over (channel, bank)
    key_mapping: str  # full-precision data, MSB -> LSB
    burst: int  # bytes one burst returns on one channel
    row_buffer: int  # bytes one activation opens in one channel
    key_bytes: int
    head_dim: int
    passes: int  # PFU passes (query groups of up to queries_per_pass)

    @property
    def banks(self) -> int:
        return self.ranks * self.bankgroups * self.banks_per_group

    @property
    def blocks_per_epoch(self) -> int:
        return self.channels * self.banks

    @property
    def columns(self) -> int:
        return self.row_buffer // self.burst  # bursts per row

    @property
    def bursts_per_key(self) -> int:
        return self.key_bytes // self.burst

    @property
    def dims_per_row(self) -> int:
        """Dimensions of one Key Block's sign bits that one row of its bank holds."""
        return max(1, self.row_buffer * 8 // self.keys_per_block)

    @property
    def sign_rows_per_block(self) -> int:
        return math.ceil(self.head_dim / self.dims_per_row)

    @property
    def replicated(self) -> bool:
        """Every key touches every channel at the same coordinates: one channel's stream is the package's."""
        order = parse_mapping(self.key_mapping)
        return order[-1] == "Ch" and self.bursts_per_key % self.channels == 0

    def keys_per_row(self) -> float:
        """Keys of one Key Block that share a DRAM row (of a channel): the block's keys over the distinct rows
        its bursts open. With bank groups below the columns a block spans one row per bank group."""
        c = self.data_coordinates(np.arange(self.keys_per_block))
        rows = np.unique(np.stack([c["channel"], c["rank"], c["bankgroup"], c["bank"], c["row"]]), axis=1)
        return self.keys_per_block / rows.shape[1]

    def check(self) -> None:
        if self.key_bytes % self.burst:
            raise CemsimError(
                f"a key of {self.key_bytes} B is not a whole number of {self.burst}-byte bursts",
                where="cem.lpddr.burst",
            )
        if self.row_buffer % self.burst:
            raise CemsimError(
                f"the row buffer ({self.row_buffer} B) is not a whole number of {self.burst}-byte bursts",
                where="cem.lpddr.row_buffer",
            )
        parse_mapping(self.key_mapping)

    # -- full-precision keys and values ------------------------------------------------------------------
    def data_coordinates(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """DRAM coordinates of every burst of the keys at ``positions`` (in order), one row per burst:
        channel, rank, bankgroup, bank, row, column, key (index into ``positions``). When ``replicated``,
        only channel 0's bursts are returned (the other channels get the same stream)."""
        pos = np.asarray(positions, dtype=np.int64)
        bpk = self.bursts_per_key
        per_channel = bpk // self.channels if self.replicated else bpk
        if self.replicated:
            # burst address of channel 0's t-th burst of key p: (p * bpk + t * C); Ch digit is 0
            t = np.arange(per_channel, dtype=np.int64) * self.channels
        else:
            t = np.arange(bpk, dtype=np.int64)
        addr = (pos[:, None] * bpk + t[None, :]).reshape(-1)
        key = np.repeat(np.arange(len(pos), dtype=np.int64), len(t))
        out = self._decompose(addr)
        out["key"] = key
        return out

    def _decompose(self, addr: np.ndarray) -> dict[str, np.ndarray]:
        order = parse_mapping(self.key_mapping)
        flat_bank = "Bg" not in order
        radix = {
            "Ch": self.channels,
            "Co": self.columns,
            "Ra": self.ranks,
            "Bg": self.bankgroups,
            "Ba": self.bankgroups * self.banks_per_group if flat_bank else self.banks_per_group,
        }
        digits: dict[str, np.ndarray] = {}
        rest = addr
        for name in reversed(order):  # least significant first
            if name == "Ro":
                continue
            digits[name] = rest % radix[name]
            rest = rest // radix[name]
        digits["Ro"] = rest  # the row takes whatever is left, wherever it sits in the order
        zero = np.zeros_like(addr)
        ba = digits["Ba"]
        if flat_bank:  # Ramulator's order below the row: bank group bits under the bank bits
            bankgroup, bank = ba % self.bankgroups, ba // self.bankgroups
        else:
            bankgroup, bank = digits["Bg"], ba
        return {
            "channel": digits["Ch"],
            "rank": digits.get("Ra", zero),
            "bankgroup": bankgroup,
            "bank": bank,
            "row": digits["Ro"],
            "column": digits["Co"],
        }

    # -- sign-bit Key Blocks -------------------------------------------------------------------------------
    def epoch_blocks_per_channel(self, n_blocks: int) -> np.ndarray:
        """Key Blocks each channel holds in an epoch of ``n_blocks`` blocks (a full epoch: every bank)."""
        j = np.arange(min(n_blocks, self.blocks_per_epoch))
        ch = j % self.channels if self.interleave == "channel_then_bank" else j // self.banks
        return np.bincount(ch, minlength=self.channels)

    def bank_coordinates(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rank, bankgroup, bank) of a channel's first ``n`` Key Block banks: consecutive blocks of a channel
        go to consecutive bank groups, then ranks (so a JEDEC activation stream alternates bank groups)."""
        b = np.arange(n, dtype=np.int64)
        bankgroup = b % self.bankgroups
        rank = (b // self.bankgroups) % self.ranks
        bank = b // (self.bankgroups * self.ranks)
        return rank, bankgroup, bank


_TABLES = 251  # random subsets per (block size, count): enough that neighbouring blocks differ


@functools.lru_cache(maxsize=4)
def _subset_table(keys_per_block: int) -> np.ndarray:
    """[tables, n - 1, i]: the i-th smallest of n offsets drawn without replacement from a block, for
    every n: sorted prefixes of fixed random permutations (seeded, so every run places keys alike)."""
    rng = np.random.default_rng(20250613)
    out = np.zeros((_TABLES, keys_per_block, keys_per_block), np.int16)
    for t in range(_TABLES):
        perm = rng.permutation(keys_per_block)
        for n in range(1, keys_per_block + 1):
            out[t, n - 1, :n] = np.sort(perm[:n])
    return out


def random_offsets(
    counts: np.ndarray, widths: np.ndarray, keys_per_block: int, salt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each block's survivors at a random subset of its valid keys (uniform, without replacement; the
    trace holds counts, not positions): (block index, offset) per survivor, in block then offset order.
    counts, widths, salt: per block (salt picks the subset table, so (layer, head, block) differ). With
    the same salt, fewer keys get a subset of the offsets more get: the top-k values sit on survivors."""
    counts = np.asarray(counts, dtype=np.int64)
    widths = np.asarray(widths, dtype=np.int64)
    counts = np.minimum(counts, widths)
    block = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    i = np.arange(len(block), dtype=np.int64) - starts[block]
    table = _subset_table(keys_per_block)
    n = counts[block]
    off = table[np.asarray(salt, dtype=np.int64)[block] % _TABLES, n - 1, i].astype(np.int64)
    partial = np.flatnonzero((widths < keys_per_block) & (counts > 0))
    for b in partial:  # a block cut short by the end of the range: draw from its valid keys only
        rng = np.random.default_rng(int(salt[b]))
        sel = slice(starts[b], starts[b] + counts[b])
        off[sel] = np.sort(rng.permutation(int(widths[b]))[: counts[b]])  # prefixes nest, as above
    return block, off


def survivor_positions(counts: np.ndarray, keys_per_block: int, considered: int, salt: int) -> np.ndarray:
    """Positions (considered-key index) of every survivor of one request, ascending, from its survivors
    per Key Block. ``salt``: the request's (layer, head) index, as work.rows_touched uses it."""
    nb = len(counts)
    starts = np.arange(nb, dtype=np.int64) * keys_per_block
    widths = np.clip(considered - starts, 0, keys_per_block)
    block, off = random_offsets(counts, widths, keys_per_block, block_salt(salt, nb))
    return starts[block] + off


def block_salt(request: int | np.ndarray, n_blocks: int) -> np.ndarray:
    """Per-block table selector of request(s) ``request`` (flat layer x head index): [.., n_blocks]."""
    r = np.asarray(request, dtype=np.int64)[..., None]
    return (r * 7919 + np.arange(n_blocks, dtype=np.int64)) % _TABLES
