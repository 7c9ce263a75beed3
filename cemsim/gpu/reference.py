"""NumPy reference of every stage of the fused GPU pipeline (kernels/longsight_fused.cu), stage by stage, so a
GPU run can be checked where it can go wrong: survivors bit for bit, scores to fp32 rounding, top-k sets up to
ties, the attention output to bf16 tolerance.

Shapes follow the kernels: ``BH`` rows = users x KV heads, each with its own keys; ``G`` query heads per KV
head; the sparse region is positions ``[sinks, ctx - window)``, the band ``[0, sinks)`` and
``[ctx - window, ctx)``. Keys and values are bf16, held here as their uint16 bit patterns (NumPy has no
bfloat16), queries fp32 already multiplied by the softmax scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cemsim.errors import CemsimError


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """fp32 -> bf16 bit patterns (uint16), rounding to nearest even (as torch's ``.to(torch.bfloat16)``)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_to_float(bits: np.ndarray) -> np.ndarray:
    """bf16 bit patterns (uint16) -> fp32, exactly."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def survivors(
    ksig: np.ndarray, qsig: np.ndarray, thresholds: np.ndarray, start: int, n: int
) -> list[np.ndarray]:
    """SCF per row: ascending positions in ``[start, start + n)`` where some query's ``D - popc(q ^ k)`` reaches
    the row's threshold. ``ksig [BH, ctx, W]``, ``qsig [BH, G, W]`` uint64, ``thresholds [BH]``."""
    d = 64 * ksig.shape[-1]
    out = []
    for r in range(ksig.shape[0]):
        region = ksig[r, start : start + n]
        pc = np.bitwise_count(qsig[r][:, None, :] ^ region[None, :, :]).sum(-1, dtype=np.int32)  # [G, n]
        keep = ((d - pc) >= int(thresholds[r])).any(axis=0)
        out.append(start + np.flatnonzero(keep))
    return out


def bitmap(ksig: np.ndarray, qsig: np.ndarray, threshold: int) -> np.ndarray:
    """The standalone filters' output for one group: uint32 words, bit n % 32 of word n // 32 = key n survives.
    ``ksig [N, W]``, ``qsig [G, W]``."""
    n = ksig.shape[0]
    keep = survivors(ksig[None], qsig[None], np.array([threshold]), 0, n)[0]
    bits = np.zeros(-(-n // 32) * 32, dtype=np.uint8)
    bits[keep] = 1
    return np.packbits(bits, bitorder="little").view(np.uint32)


def scores(q: np.ndarray, keys: np.ndarray, rows: list[np.ndarray]) -> list[np.ndarray]:
    """Exact scores ``[G, s]`` (float64) of each row's survivors: q (fp32) . k (bf16)."""
    return [
        q[r].astype(np.float64) @ bf16_to_float(keys[r, pos]).astype(np.float64).T
        for r, pos in enumerate(rows)
    ]


def kth_largest(x: np.ndarray, k: int) -> float:
    """The k-th largest of ``x`` (``-inf`` when x has at most k entries: everything is picked)."""
    return float(np.partition(x, len(x) - k)[len(x) - k]) if len(x) > k else -np.inf


@dataclass(frozen=True)
class TopkCheck:
    ok: bool
    message: str


def check_topk(picked: np.ndarray, pos: np.ndarray, sc: np.ndarray, k: int, tol: float) -> TopkCheck:
    """Is ``picked`` (positions) a top-k of survivors ``pos`` by reference scores ``sc`` up to ties within
    ``tol``? Every pick is a survivor, picks are distinct, there are ``min(k, len(pos))`` of them, and no
    survivor left out scores above a picked one by more than ``tol``."""
    want = min(k, len(pos))
    if len(picked) != want:
        return TopkCheck(False, f"{len(picked)} picks, expected {want}")
    if len(np.unique(picked)) != len(picked):
        return TopkCheck(False, "a key was picked twice")
    where = {int(p): i for i, p in enumerate(pos)}
    if any(int(p) not in where for p in picked):
        return TopkCheck(False, "a pick is not a survivor")
    chosen = np.zeros(len(pos), dtype=bool)
    chosen[[where[int(p)] for p in picked]] = True
    if chosen.all() or not chosen.any():
        return TopkCheck(True, "")
    low, high = sc[chosen].min(), sc[~chosen].max()
    if high > low + tol:
        return TopkCheck(False, f"a survivor scoring {high} was left out for a pick scoring {low}")
    return TopkCheck(True, "")


def band_positions(ctx: int, sinks: int, window: int) -> np.ndarray:
    return np.concatenate([np.arange(sinks), np.arange(ctx - window, ctx)])


def attention(
    q: np.ndarray, keys: np.ndarray, vals: np.ndarray, band: np.ndarray, picks: list[list[np.ndarray]]
) -> np.ndarray:
    """One softmax per query head over the band and that head's picks, float64: ``[BH, G, D]``. ``picks[r][g]``
    are positions; a pick inside the band would count twice (the pipeline's picks come from the region)."""
    bh, g_n, d = q.shape
    out = np.empty((bh, g_n, d))
    for r in range(bh):
        for g in range(g_n):
            pos = np.concatenate([band, picks[r][g]]).astype(np.int64)
            s = bf16_to_float(keys[r, pos]).astype(np.float64) @ q[r, g].astype(np.float64)
            p = np.exp(s - s.max())
            out[r, g] = p @ bf16_to_float(vals[r, pos]).astype(np.float64) / p.sum()
    return out


def topk_reference(rows: list[np.ndarray], sc: list[np.ndarray], k: int) -> list[list[np.ndarray]]:
    """The reference's own top-k per (row, head), ties to the lower position (as cemsim.attention.fused)."""
    out = []
    for pos, s in zip(rows, sc, strict=True):
        per = []
        for g in range(s.shape[0]):
            order = np.lexsort((pos, -s[g]))  # descending score, then ascending position
            per.append(pos[order[: min(k, len(pos))]])
        out.append(per)
    return out


def survival_threshold(head_dim: int, group: int, survival: float) -> int:
    """The smallest threshold T whose survival on independent random signs, 1 - (1 - P(Bin(D, 1/2) >= T))^G,
    is at most ``survival``: what the benchmarks use to dial survival on random data."""
    from math import comb

    if not 0.0 < survival < 1.0:
        raise CemsimError(f"survival must be in (0, 1), got {survival}")
    tail = 1.0
    for t in range(head_dim + 2):
        p_any = 1.0 - (1.0 - tail) ** group
        if p_any <= survival:
            return t
        tail -= comb(head_dim, t) / 2**head_dim
    return head_dim + 1


def check_pipeline(s: Any, x: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> None:
    """Asserts a GPU run (``got``: FusedLongSight.results()) of shape ``s`` (cemsim.gpu.fused.Shape) on inputs
    ``x`` against this reference: survivors bit-identical, scores and pick scores to fp32 rounding, each head's
    picks a top-k up to ties, the output within 1e-4 (relative norm) of the float64 attention over the GPU's
    picks, and over the reference's own picks where the two sets agree."""
    rows = survivors(x["ksig"], x["qsig"], x["thresholds"], s.start, s.region)
    sc = scores(x["q"], x["keys"], rows)
    band = band_positions(s.ctx, s.sinks, s.window)
    picks = []
    for r in range(s.rows):
        n = int(got["count"][r])
        assert n == len(rows[r]), f"row {r}: {n} survivors, reference {len(rows[r])}"
        idx = got["idx"][r, :n]
        order = np.argsort(idx)
        np.testing.assert_array_equal(idx[order], rows[r])  # bit-identical survivors
        scale = max(1.0, float(np.abs(sc[r]).max(initial=0.0)))
        np.testing.assert_allclose(got["scores"][r, :, :n][:, order], sc[r], rtol=1e-5, atol=1e-5 * scale)
        per = []
        for g in range(s.group):
            kk = int(got["pick_count"][r, g])
            p = got["pick_pos"][r, g, :kk]
            verdict = check_topk(p, rows[r], sc[r][g], s.k, tol=1e-5 * scale)
            assert verdict.ok, f"row {r} head {g}: {verdict.message}"
            where = np.searchsorted(rows[r], p)
            np.testing.assert_allclose(
                got["pick_score"][r, g, :kk], sc[r][g][where], rtol=1e-5, atol=1e-5 * scale
            )
            per.append(p)
        picks.append(per)
    want = attention(x["q"], x["keys"], x["vals"], band, picks)  # float64 over the GPU's picks
    err = np.linalg.norm(got["out"] - want) / np.linalg.norm(want)
    assert err < 1e-4, f"attention output off by {err:.2e} (relative norm)"
    own = topk_reference(rows, sc, s.k)
    if all(
        set(a.tolist()) == set(b.tolist())
        for pa, pb in zip(own, picks, strict=True)
        for a, b in zip(pa, pb, strict=True)
    ):
        err_own = np.linalg.norm(got["out"] - attention(x["q"], x["keys"], x["vals"], band, own))
        assert err_own / np.linalg.norm(want) < 1e-4
