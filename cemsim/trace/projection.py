"""Project captured traces to longer contexts and other model geometries through an explicit survival model.

The model (version "distance-power-law/1"; docs/projection.md has the derivation and its validation):

1. Survival of a sparse-region key depends on its distance d from the query (d = context_len - 1 - position).
   For each source (layer, KV head):   p(d) = min(1, a * (d / W) ** -beta)   (W = dense window)
   fitted by weighted least squares of log survival fraction on log distance, over log-spaced distance bins
   pooled from every step of every source trace (so captures at several lengths constrain beta together).
   Weights are the bins' survivor counts (Poisson variance of a log count); the fit's covariance gives the
   uncertainty of log a and beta, and, by the delta method, of the projected survivor count.
2. The first ``early_tokens`` sparse positions after the sinks keep their measured survival fraction at any
   context (a second sink-like region seen in real heads); set 0 to switch this off.
3. Survivors per block are beta-binomial around p(d): the intra-block correlation rho is measured per head
   from the source's block counts against the fitted p (method of moments), so bank-load spread carries over.
4. k stays fixed (the source's, or --k). Values fetched = min(survivors, round(u * G * k)) where u is the
   measured mean of values_fetched / (G * k) over steps where every query head's top-k was full (the union
   share of the group's picks), 1 when no step was.
5. Geometry mapping: target layer l takes source layer floor(l * L_src / L_dst) (same relative depth);
   target KV head h takes source head h mod H_src. Head dimension and thresholds are not modelled: the
   survival law of a source head is assumed to carry over to the head it is mapped to. Layer types (Gemma 3's
   sliding-window layers): only full-attention layers have a sparse stage, so the j-th of the target's full
   layers takes the source's full layer at the same relative depth among full layers, and the target's
   sliding layers get no sparse keys and no survivors (their window is the target's ``local_window``).
6. Trained positions: the law describes the source model inside the positions it was trained on. Projecting
   past ``MAX_EXTRAPOLATION`` times the source model's trained positions (``model_max_positions`` in the
   source header) is refused unless ``allow_extrapolation`` is given, and the header then says so: SmolLM2's
   real 1M capture (8K trained) filters 1.7x where this law fitted on 4K says about 500x (docs/projection.md).

Projected traces carry no top-k positions, are marked ``projected=True``, and hold the fit, its uncertainty,
the mapping and the source checksums in ``header.projection``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cemsim import __version__
from cemsim.config.workload import ModelGeometry
from cemsim.errors import CemsimError
from cemsim.trace.format import TraceReader, TraceWriter
from cemsim.trace.records import SCHEMA_VERSION, StepRecord, TraceHeader
from cemsim.trace.synthetic import block_distance, draw_blocks, geometry, sparse_keys_per_block

MODEL_NAME = "distance-power-law/1"
# Projection beyond the source model's trained positions is refused past this factor (item 6 above): no
# measurement supports the law outside the trained range, and SmolLM2's 1M capture contradicts it there.
MAX_EXTRAPOLATION = 1.0
BINS_PER_OCTAVE = 4
FILTER_POLICIES = ("longsight",)
NO_SPARSE_POLICIES = ("dense", "window")


@dataclass
class SurvivalFit:
    """Per source (layer, KV head) arrays [L, H] of the fitted law, plus what it was fitted on."""

    log_a: np.ndarray
    beta: np.ndarray
    var_log_a: np.ndarray
    var_beta: np.ndarray
    cov: np.ndarray
    rho: np.ndarray
    early_fraction: np.ndarray
    union_share: np.ndarray
    bins_used: np.ndarray
    window: int
    sinks: int
    early_tokens: int
    sources: list[dict[str, Any]]

    def p(self, d: np.ndarray) -> np.ndarray:
        """Survival probability [L, H, n] at distances d [n] (tokens)."""
        x = np.log(np.maximum(d, 1.0) / max(self.window, 1))
        return np.minimum(1.0, np.exp(self.log_a[..., None] - self.beta[..., None] * x[None, None, :]))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = np.round(v, 6).tolist() if isinstance(v, np.ndarray) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SurvivalFit:
        arrays = {f.name for f in dataclasses.fields(cls) if f.type == "np.ndarray"}
        return cls(**{k: (np.asarray(v, dtype=float) if k in arrays else v) for k, v in d.items()})


# --------------------------------------------------------------------------------------------- fitting


def _sparse_geometry(
    rec: StepRecord, h: TraceHeader, early: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sparse keys per block excluding the early region, early keys per block, block distances)."""
    keys = sparse_keys_per_block(rec.context_len, h, rec.window, rec.sinks)
    early_keys = sparse_keys_per_block(
        rec.context_len, h, max(rec.context_len - rec.sinks - early, 0), rec.sinks
    )
    early_keys = np.minimum(early_keys, keys)
    dist = block_distance(rec.context_len, h, keys, rec.window, rec.sinks)
    return keys, early_keys, dist


def fit_traces(
    paths: Sequence[str | os.PathLike[str]],
    *,
    early_tokens: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[SurvivalFit, TraceHeader]:
    """Fit the survival model to one or more traces of the same model and policy (streamed, two passes)."""
    if not paths:
        raise CemsimError("projection needs at least one source trace")
    readers = [TraceReader(p) for p in paths]
    h0 = readers[0].header
    for r in readers[1:]:
        h = r.header
        same = (h.model, h.layers, h.kv_heads, h.q_heads, h.policy, h.window, h.sinks, h.block_size)
        if same != (
            h0.model,
            h0.layers,
            h0.kv_heads,
            h0.q_heads,
            h0.policy,
            h0.window,
            h0.sinks,
            h0.block_size,
        ):
            raise CemsimError(
                f"source traces differ in model or policy: {h0.model}/{h0.policy} vs {h.model}/{h.policy}",
                where=str(r.path),
            )
    if h0.projected:
        raise CemsimError(
            "the source is itself a projected trace; project from captured traces", where=str(paths[0])
        )
    if h0.policy not in FILTER_POLICIES + NO_SPARSE_POLICIES:
        raise CemsimError(
            f"projection models filter policies ({', '.join(FILTER_POLICIES)}) and policies without a sparse "
            f"stage ({', '.join(NO_SPARSE_POLICIES)}); {h0.policy!r} selects a fixed number of keys per step "
            "and is not modelled",
            where=str(paths[0]),
        )
    L, H, G = h0.layers, h0.kv_heads, h0.group_size
    n_bins = 8 * BINS_PER_OCTAVE * 4  # distances up to W * 2**32: far beyond any capture
    bin_keys = np.zeros((L, H, n_bins))
    bin_surv = np.zeros((L, H, n_bins))
    bin_x = np.zeros((L, H, n_bins))  # keys-weighted sum of log(d / W)
    early_k = np.zeros((L, H))
    early_s = np.zeros((L, H))
    union_num = np.zeros((L, H))
    union_n = np.zeros((L, H))
    W = max(h0.window, 1)
    lmask = sliding_mask(h0)[..., 0]  # [L, 1]: sliding layers have no sparse keys to fit
    done = 0
    for r in readers:
        for rec in r.iter_steps(topk=True):
            keys, ek, dist = _sparse_geometry(rec, h0, early_tokens)
            x = np.log(dist / W)
            b = _bin_of(dist, W, n_bins)
            blocks = rec.survivor_blocks.astype(np.float64)
            if early_tokens and ek.any():
                # Split each block's survivors between the early region and the rest in proportion to keys.
                share = np.divide(ek, keys, out=np.zeros(keys.shape), where=keys > 0)
                early_s += (blocks * share).sum(-1)
                early_k += ek.sum() * lmask
                blocks = blocks * (1 - share)
                keys = keys - ek
            onehot = np.zeros((b.size, n_bins))
            onehot[np.arange(b.size), b] = 1.0
            bin_surv += blocks @ onehot
            bin_keys += lmask[..., None] * ((keys * 1.0) @ onehot)
            bin_x += lmask[..., None] * ((keys * x) @ onehot)
            if rec.topk_positions is not None:
                full = (rec.topk_positions >= 0).sum(-1).min(-1) >= h0.k  # every query head chose k
                union_num += np.where(full, rec.values_fetched / (G * h0.k), 0)
                union_n += full
            done += 1
            if progress:
                progress(done)
    if h0.policy in FILTER_POLICIES and bin_keys.sum() + early_k.sum() == 0:
        raise CemsimError(
            f"the source traces have no sparse region to fit (every context <= window {h0.window} + sinks "
            f"{h0.sinks}); capture with more --tokens",
            where=str(paths[0]),
        )
    fit = _shrink(*_wls(bin_keys, bin_surv, bin_x, W), bin_keys, bin_surv, bin_x)
    rho = _dispersion(readers, h0, bin_keys, bin_surv, early_tokens)
    # Survivors bunch within blocks, so a count carries less information than Poisson assumes: inflate the
    # variance of log a by the beta-binomial design effect 1 + (B - 1) rho.
    fit = (fit[0], fit[1], fit[2] * (1 + (h0.block_size - 1) * rho), *fit[3:])
    early_fraction = np.divide(early_s, early_k, out=np.zeros((L, H)), where=early_k > 0)
    union_share = np.divide(union_num, union_n, out=np.ones((L, H)), where=union_n > 0)
    sources = [
        {
            "path": str(r.path),
            "steps": r.num_steps,
            "context_min": r.summary.get("context_min"),
            "context_max": r.summary.get("context_max"),
            "text_source": r.header.text_source,
        }
        for r in readers
    ]
    for r in readers:
        r.close()
    return (
        SurvivalFit(
            log_a=fit[0],
            beta=fit[1],
            var_log_a=fit[2],
            var_beta=fit[3],
            cov=fit[4],
            rho=rho,
            early_fraction=early_fraction,
            union_share=union_share,
            bins_used=fit[5],
            window=h0.window,
            sinks=h0.sinks,
            early_tokens=early_tokens,
            sources=sources,
        ),
        h0,
    )


def _wls(keys: np.ndarray, surv: np.ndarray, xsum: np.ndarray, W: int) -> tuple[np.ndarray, ...]:
    """Per head: y = log((s + 0.5) / (n + 1)) = alpha - beta x, weights s + 0.5, over bins with keys."""
    L, H, _ = keys.shape
    out = [np.zeros((L, H)) for _ in range(6)]
    for l_ in range(L):
        for h in range(H):
            m = keys[l_, h] >= 1
            n, s = keys[l_, h, m], surv[l_, h, m]
            x = xsum[l_, h, m] / np.maximum(n, 1)
            y = np.log((s + 0.5) / (n + 1))
            w = s + 0.5
            if m.sum() == 0:
                alpha, beta, va, vb, c = np.log(1e-9), 0.0, np.inf, np.inf, 0.0
            elif m.sum() == 1 or np.ptp(x) < 1e-9:
                alpha, beta, va, vb, c = (
                    float(np.log((s.sum() + 0.5) / (n.sum() + 1))),
                    0.0,
                    1 / w.sum(),
                    np.inf,
                    0.0,
                )
            else:
                X = np.stack([np.ones_like(x), -x], axis=1)
                XtW = X.T * w
                A = XtW @ X
                coef = np.linalg.solve(A, XtW @ y)
                resid = y - X @ coef
                # Scale by the reduced chi-square when the data scatter more than Poisson (never less).
                dof = max(m.sum() - 2, 1)
                scale = max(1.0, float((w * resid**2).sum() / dof))
                covm = np.linalg.inv(A) * scale
                alpha, beta = float(coef[0]), float(coef[1])
                va, vb, c = float(covm[0, 0]), float(covm[1, 1]), float(covm[0, 1])
            for arr, v in zip(out, (alpha, beta, va, vb, c, float(m.sum())), strict=True):
                arr[l_, h] = v
    return tuple(out)


def _shrink(
    alpha: np.ndarray,
    beta: np.ndarray,
    va: np.ndarray,
    vb: np.ndarray,
    cov: np.ndarray,
    used: np.ndarray,
    keys: np.ndarray,
    surv: np.ndarray,
    xsum: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Empirical-Bayes pooling of beta across heads (step 1b of the model).

    A capture spans only a couple of octaves of distance, so one head's beta is often uncertain; each head's
    beta is pulled towards the precision-weighted mean in proportion to its own variance against the
    between-head variance tau^2 (method of moments). log a is then refitted with that beta held fixed."""
    ok = np.isfinite(vb) & (vb > 0)
    if ok.sum() < 2:
        return alpha, beta, va, vb, cov, used
    w = 1 / vb[ok]
    pooled = float((beta[ok] * w).sum() / w.sum())
    tau2 = max(float(np.var(beta[ok]) - np.mean(vb[ok])), 1e-6)
    post_var = np.where(ok, 1 / (1 / np.where(ok, vb, 1) + 1 / tau2), tau2 + 1 / w.sum())
    new_beta = np.where(ok, post_var * (beta / np.where(ok, vb, 1) + pooled / tau2), pooled)
    # Survival that grows with distance (beta < 0: in a short capture, the start of the text can survive
    # more than the recent past) would run to p = 1 over a 1M context; hold it constant instead.
    new_beta = np.maximum(new_beta, 0.0)
    new_alpha = alpha.copy()
    new_va = va.copy()
    L, H, _ = keys.shape
    for l_ in range(L):
        for h in range(H):
            m = keys[l_, h] >= 1
            if not m.any():
                continue
            n, s_ = keys[l_, h, m], surv[l_, h, m]
            x = xsum[l_, h, m] / n
            wt = s_ + 0.5
            y = np.log((s_ + 0.5) / (n + 1)) + new_beta[l_, h] * x
            new_alpha[l_, h] = float((wt * y).sum() / wt.sum())
            xbar = float((wt * x).sum() / wt.sum())
            # Var(alpha) = Var(mean y) + xbar^2 Var(beta); the covariance follows from alpha = ybar + beta xbar.
            new_va[l_, h] = 1 / wt.sum() + xbar**2 * post_var[l_, h]
            cov[l_, h] = xbar * post_var[l_, h]
    return new_alpha, new_beta, new_va, post_var, cov, used


def _dispersion(
    readers: list[TraceReader], h0: TraceHeader, bin_keys: np.ndarray, bin_surv: np.ndarray, early: int
) -> np.ndarray:
    """Beta-binomial intra-block correlation per head: Var = n p (1 - p) (1 + (n - 1) rho), with p the observed
    survival of the block's distance bin (not the fitted law, so misfit of the law is not read as clustering)."""
    L, H = h0.layers, h0.kv_heads
    p_bin = np.divide(bin_surv, bin_keys, out=np.zeros_like(bin_surv), where=bin_keys > 0)
    num = np.zeros((L, H))
    den = np.zeros((L, H))
    W = max(h0.window, 1)
    for r in readers:
        for rec in r.iter_steps(topk=False):
            keys, ek, dist = _sparse_geometry(rec, h0, early)
            keys = keys - ek
            m = keys == h0.block_size  # whole blocks only: partial blocks would bias the moment
            if not m.any():
                continue
            b = _bin_of(dist[m], W, p_bin.shape[-1])
            p = np.clip(p_bin[:, :, b], 0.0, 1.0)
            n = keys[m][None, None, :]
            c = rec.survivor_blocks[..., m].astype(np.float64)
            num += ((c - n * p) ** 2 - n * p * (1 - p)).sum(-1)
            den += (n * p * (1 - p) * (n - 1)).sum(-1)
    return np.clip(np.divide(num, den, out=np.zeros((L, H)), where=den > 0), 0.0, 0.95)


def _bin_of(dist: np.ndarray, W: int, n_bins: int) -> np.ndarray:
    x = np.log(dist / W)
    return np.clip(np.floor(x / np.log(2) * BINS_PER_OCTAVE).astype(int) + 8, 0, n_bins - 1)


# ------------------------------------------------------------------------------------------ projecting


def head_map(
    src_layers: int,
    src_heads: int,
    dst_layers: int,
    dst_heads: int,
    src_full: Sequence[int] | None = None,
    dst_full: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Source (layer, head) index arrays [dst_layers, dst_heads] for each target head (module docstring, 5).
    ``src_full`` / ``dst_full``: full-attention layers (None: all); the j-th target full layer takes the source
    full layer at the same relative depth among full layers; target sliding layers map to the first source
    full layer, and :func:`sliding_mask` zeroes them."""
    head = np.arange(dst_heads) % src_heads
    if src_full is None and dst_full is None:
        layer = (np.arange(dst_layers) * src_layers) // dst_layers
    else:
        sf = list(range(src_layers)) if src_full is None else list(src_full)
        df = list(range(dst_layers)) if dst_full is None else list(dst_full)
        layer = np.full(dst_layers, sf[0], dtype=np.int64)
        for j, dl in enumerate(df):
            layer[dl] = sf[(j * len(sf)) // len(df)]
    return np.repeat(layer[:, None], dst_heads, 1), np.repeat(head[None, :], dst_layers, 0)


def sliding_mask(header: TraceHeader) -> np.ndarray:
    """[L, 1, 1] 1.0 on full-attention layers, 0.0 on sliding ones (no sparse stage there)."""
    m = np.array([header.layer_type(i) == "full" for i in range(header.layers)], dtype=np.float64)
    return m[:, None, None]


def _maps(src: dict[str, Any], header: TraceHeader) -> tuple[np.ndarray, np.ndarray]:
    full = src.get("source_full_layers")
    return head_map(
        src["source_layers"],
        src["source_kv_heads"],
        header.layers,
        header.kv_heads,
        full,
        header.full_layers if (full is not None or header.layer_types is not None) else None,
    )


def mapped(fit: SurvivalFit, ls: np.ndarray, hs: np.ndarray) -> SurvivalFit:
    """The fit re-indexed onto the target heads."""
    kw = {
        f.name: (
            getattr(fit, f.name)[ls, hs]
            if isinstance(getattr(fit, f.name), np.ndarray)
            else getattr(fit, f.name)
        )
        for f in dataclasses.fields(fit)
    }
    return SurvivalFit(**kw)


def expected_survivors(
    fit: SurvivalFit, header: TraceHeader, context_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Expected survivors [L, H] at ``context_len`` for a fit already on the target heads, and its standard
    error from the fit covariance (delta method)."""
    window = min(header.window, context_len)
    sinks = min(header.sinks, context_len - window)
    keys = sparse_keys_per_block(context_len, header, window, sinks)
    early_keys = np.minimum(
        sparse_keys_per_block(context_len, header, max(context_len - sinks - fit.early_tokens, 0), sinks),
        keys,
    )
    rest = keys - early_keys
    dist = block_distance(context_len, header, keys, max(window, 1), sinks)
    p = fit.p(dist) * sliding_mask(header)
    e = (p * rest).sum(-1) + fit.early_fraction * early_keys.sum() * sliding_mask(header)[..., 0]
    x = np.log(np.maximum(dist, 1.0) / max(fit.window, 1))
    live = (p < 1) * rest * p
    ga = live.sum(-1)
    gb = -(live * x).sum(-1)
    with np.errstate(invalid="ignore"):  # sliding layers: 0 x inf (no fit there)
        var = ga**2 * fit.var_log_a + gb**2 * fit.var_beta + 2 * ga * gb * fit.cov
    se = np.sqrt(np.where(np.isfinite(var), var, np.inf))
    return e, np.where(sliding_mask(header)[..., 0] > 0, se, 0.0)


def same_geometry(h: TraceHeader) -> ModelGeometry:
    """The source's own attention shape (projection to a longer context only)."""
    return ModelGeometry(
        name=h.model,
        layers=h.layers,
        hidden=h.q_heads * h.head_dim,
        q_heads=h.q_heads,
        kv_heads=h.kv_heads,
        head_dim=h.head_dim,
        intermediate=1,
        vocab=1,
    )


def trained_positions(src: TraceHeader) -> int | None:
    """Positions the source model was trained on: as its capture recorded them, else (captures made before
    cemsim recorded it) its geometry preset's; None for synthetic traces, which measure no model."""
    n = src.extra.get("model_max_positions")
    if n:
        return int(n)
    if "prompt_tokens" not in src.extra:  # not a capture
        return None
    try:
        return geometry(src.model).max_positions
    except CemsimError:
        return None


def extrapolation_check(src: TraceHeader, context: int, allow: bool) -> dict[str, Any]:
    """What the header records about extrapolation; a CemsimError past MAX_EXTRAPOLATION unless ``allow``."""
    trained = trained_positions(src)
    factor = None if not trained else context / trained
    beyond = factor is not None and factor > MAX_EXTRAPOLATION
    if beyond and not allow:
        raise CemsimError(
            f"--context {context:,} is {factor:.1f}x the {trained:,} positions {src.model} was trained on; the "
            f"survival law is fitted inside the trained range and projection is refused past "
            f"{MAX_EXTRAPOLATION:g}x it (a model run past its positions filters very differently: SmolLM2's "
            "real 1M capture filters 1.7x where the 4K law says ~500x, docs/projection.md). Capture a model "
            "trained for that context, or pass --allow-extrapolation to project anyway (the trace header and "
            "the output then say so)",
            where="--context",
        )
    return {
        "source_trained_positions": trained,
        "target_context": context,
        "factor": None if factor is None else round(factor, 3),
        "max_factor": MAX_EXTRAPOLATION,
        "beyond_trained_positions": beyond,
        "allowed_by_override": bool(beyond and allow),
    }


def projected_header(
    src: TraceHeader,
    fit: SurvivalFit,
    target: ModelGeometry,
    *,
    context: int,
    k: int,
    seed: int,
    extrapolation: dict[str, Any] | None = None,
) -> TraceHeader:
    same = target.name == src.model and target.layers == src.layers
    if same:
        layer_types, local_window = src.layer_types, src.local_window
    else:
        layer_types = None if target.layer_types is None else list(target.layer_types)
        local_window = target.local_window if layer_types is not None and "sliding" in layer_types else None
    dst = dataclasses.replace(
        src,
        schema_version=SCHEMA_VERSION,
        layer_types=layer_types,
        local_window=local_window,
        model=target.name,
        layers=target.layers,
        q_heads=target.q_heads,
        kv_heads=target.kv_heads,
        head_dim=target.head_dim,
        k=k,
        thresholds=None if target.name != src.model else src.thresholds,
        cemsim_version=__version__,
        projected=True,
    )
    src_full = src.full_layers if src.layer_types is not None else None
    ls, hs = head_map(
        src.layers,
        src.kv_heads,
        target.layers,
        target.kv_heads,
        src_full,
        dst.full_layers if (src_full is not None or dst.layer_types is not None) else None,
    )
    tfit = mapped(fit, ls, hs)
    e, se = expected_survivors(tfit, dst, context)
    rel = np.divide(se, e, out=np.zeros_like(e), where=e > 0)
    full = dst.full_layers
    window = min(dst.window, context)
    considered = float(sparse_keys_per_block(context, dst, window, min(dst.sinks, context - window)).sum())
    e_full, se_total = float(e[full].sum()), float(np.sqrt((se[full] ** 2).sum()))
    projection = {
        "model": MODEL_NAME,
        "formula": "p(d) = min(1, a * (d / W) ** -beta), d = distance from the query; beta-binomial blocks",
        "source_model": src.model,
        "source_layers": src.layers,
        "source_kv_heads": src.kv_heads,
        "source_full_layers": src_full,
        "head_mapping": "dst layer l <- src layer floor(l * L_src / L_dst); dst KV head h <- src head h mod H_src"
        + (
            "; full layers map onto full layers by relative depth, sliding layers have no sparse stage"
            if src_full is not None or dst.layer_types is not None
            else ""
        ),
        "target_context": context,
        "k": k,
        "seed": seed,
        "fit": fit.to_dict(),
        "expected_survivors_at_target": {
            "total": float(e.sum()),
            "mean_per_head": float(e.mean()),
            "rel_se_median": float(np.median(rel)) if rel.size else 0.0,
            "rel_se_max": float(rel.max()) if rel.size else 0.0,
            # The fit's uncertainty per (layer, KV head): expected survivors and their standard error
            # (delta method on the fit covariance); sliding layers hold 0.
            "per_head": np.round(e, 3).tolist(),
            "se_per_head": np.round(se, 3).tolist(),
            "keys_considered_per_head": considered,
            # Filter ratio of the full layers together, with the interval from +-1 s.e. of the total
            # (heads' errors taken as independent).
            "filter_ratio": considered * len(full) * dst.kv_heads / e_full if e_full > 0 else None,
            "filter_ratio_1se": [
                considered * len(full) * dst.kv_heads / (e_full + se_total) if e_full > 0 else None,
                considered * len(full) * dst.kv_heads / (e_full - se_total) if e_full > se_total else None,
            ],
        },
        "extrapolation": extrapolation,
    }
    return dataclasses.replace(dst, projection=projection, extra={**src.extra, "projected_from": src.model})


def project_steps(
    header: TraceHeader, fit: SurvivalFit, *, context: int, steps: int, seed: int = 0
) -> Iterator[StepRecord]:
    """Projected decode steps for a header from ``projected_header`` (fit still on the source heads)."""
    src = header.projection or {}
    ls, hs = _maps(src, header)
    tfit = mapped(fit, ls, hs)
    local = sliding_mask(header)[..., 0] == 0  # [L, 1]: layers without a sparse stage
    G, k = header.group_size, header.k
    sparse = header.policy not in NO_SPARSE_POLICIES
    for s in range(steps):
        rng = np.random.default_rng([seed, 7, s])
        ctx = context + s
        dense = header.policy == "dense"
        window = ctx if dense else min(header.window, ctx)
        sinks = 0 if dense else min(header.sinks, ctx - window)
        keys = sparse_keys_per_block(ctx, header, window, sinks)
        if not sparse:
            keys = np.zeros_like(keys)
        early_keys = np.minimum(
            sparse_keys_per_block(ctx, header, max(ctx - sinks - tfit.early_tokens, 0), sinks), keys
        )
        dist = block_distance(ctx, header, keys, max(window, 1), sinks)
        p = tfit.p(dist)
        if tfit.early_tokens:
            share = np.divide(early_keys, keys, out=np.zeros(keys.shape), where=keys > 0)
            p = p * (1 - share) + tfit.early_fraction[..., None] * share
        p = p * sliding_mask(header)
        blocks = _draw(rng, p, keys, tfit.rho)
        survivors = blocks.sum(-1, dtype=np.int64)
        fetched = np.minimum(survivors, np.round(tfit.union_share * G * k).astype(np.int64))
        considered = np.full((header.layers, header.kv_heads), int(keys.sum()), dtype=np.int64)
        considered[np.broadcast_to(local, considered.shape)] = 0
        yield StepRecord(
            step=s,
            context_len=ctx,
            keys_considered=considered,
            survivors=survivors,
            survivor_blocks=blocks,
            values_fetched=fetched,
            window=window,
            sinks=sinks,
        )


def _draw(rng: np.random.Generator, p: np.ndarray, keys: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Beta-binomial per head with its own rho (heads grouped by rho value to stay vectorised)."""
    out = np.empty(p.shape, dtype=np.uint16)
    for r in np.unique(rho):
        m = rho == r
        out[m] = draw_blocks(rng, p[m], keys[None, :], float(r))
    return out


def project_file(
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    context: int,
    target: str | ModelGeometry | None = None,
    steps: int | None = None,
    k: int | None = None,
    early_tokens: int = 0,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    allow_extrapolation: bool = False,
) -> TraceHeader:
    """Fit ``sources`` and write a projected trace to ``out``. Returns its header. Past MAX_EXTRAPOLATION
    times the source model's trained positions, a CemsimError unless ``allow_extrapolation``."""
    if context < 1:
        raise CemsimError(f"--context must be a positive token count, got {context}")
    src0 = TraceReader(sources[0]).header if sources else None
    extrapolation = extrapolation_check(src0, context, allow_extrapolation) if src0 is not None else None
    fit, src = fit_traces(sources, early_tokens=early_tokens)
    geom = geometry(target) if target is not None else same_geometry(src)
    if steps is None:
        steps = max(1, min(TraceReader(sources[0], verify=False).num_steps, 32))
    header = projected_header(
        src, fit, geom, context=context, k=k or src.k, seed=seed, extrapolation=extrapolation
    )
    with TraceWriter(Path(out), header) as w:
        for i, rec in enumerate(project_steps(header, fit, context=context, steps=steps, seed=seed)):
            w.write(rec)
            if progress:
                progress("project", i + 1, steps)
    return header
