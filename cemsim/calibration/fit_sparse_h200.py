"""Fit ``gpu.sparse_pipeline_latency`` and ``gpu.sparse_time_per_survivor`` of ``hwconfigs/h200-sparse-hbm.yaml``
to the fused GPU LongSight pipeline measured per layer on an H200 (issue 18), and check them on points they
were not fitted to.

Measurement: ``h200-sparse-layer-v7-2026-12-03.json`` here, written by ``benchmarks/gpu/bench_fused.py
--graph-layers 8`` on the lent H200 (issue 18's seventh version of the kernels: the sixth's with the band's
query heads scored as independent chains and summed through one reduction; the sixth had the fan top-k,
two blocks a head selecting the same picks from linear bins and attending over half of them each; the fifth
had the top-k block issue its picks' value rows before their weights and merge its head at once when every
other partial is in; the fourth added the spread top-k over a cluster of two, the band beside the top-k and
ls_select2_r16, the survivors' scores on the tensor cores; each combination timed and the fastest kept per
point, then timed again as 8 layers in one CUDA graph, as a decode step runs them, which is the time the fit
uses: :data:`PRESET_MEASURE`): one layer
of Llama-3-8B geometry (8 KV heads x 4 query heads, D = 128, window 1,024, sinks 16, LongSight's k schedule),
batch 1 and 8, contexts 4K-1M, survival targets 1-10 % on random signs plus exactly 5 % planted. The sixth
version's measurement is ``h200-sparse-layer-v6-2026-12-03.json`` (:data:`PREVIOUS`), the fifth's
``h200-sparse-layer-v5-2026-12-03.json`` (measured again with
graphs of layers in ``h200-sparse-layer-v5-graph8-2026-12-03.json``, :data:`GRAPH8`), the fourth's
``h200-sparse-layer-v4-2026-12-03.json``, the third's ``h200-sparse-layer-v3-2026-12-02.json``, the second's
``h200-sparse-layer-2026-12-02.json``; the first version's, ``h200-sparse-fused-2026-12-02.json``, keeps the
filter table (:func:`filter_table`).

The simulator charges GPU-side sparse attention as the roofline of the bytes it reads (band, signs of every
region key, survivors' keys, picks' values) plus a fixed cost and a cost per unit of each stage's work:
requests (user x KV head: its top-k select and attention row), keys the filter scans, survivors, picked
values (cemsim/sim/plan.py). Each measured point is replayed through the discrete-event model (one decode
step of ``h200-sparse-hbm`` with every (layer, KV head) holding the measured survivors, as
:mod:`cemsim.calibration.validate` does for the H100), and the five constants are fitted by least squares on
relative error over the contexts in :data:`FIT_CONTEXTS`; the rest are held out. :func:`cross_validation`
also leaves each context out in turn (fitted on the other five), so the check does not hang on one split.
The first version had the fixed and per-survivor terms only: 18.4 % mean / 39.4 % worst held out, with batch
8 under-predicted by ~30 % at every context (no per-request term) and 128K-1M under-predicted at low survival
(no per-key or per-pick term).
``python -m cemsim.calibration.fit_sparse_h200`` prints the tables of docs/gpu-kernels.md;
tests/calibration/test_sparse_h200_fit.py replays them in CI.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from cemsim.calibration import CALIBRATION_DIR, load_calibration
from cemsim.calibration.validate import _uniform_step
from cemsim.config.loader import load_system
from cemsim.errors import CemsimError
from cemsim.paths import repo_root
from cemsim.sim import prepare, simulate
from cemsim.trace.synthetic import synthetic_header

FUSED = CALIBRATION_DIR / "h200-sparse-layer-v8-2026-12-04.json"
PREVIOUS = CALIBRATION_DIR / "h200-sparse-layer-v7-2026-12-03.json"  # the seventh version of the kernels
V6 = CALIBRATION_DIR / "h200-sparse-layer-v6-2026-12-03.json"  # the sixth version
# the fifth version's kernels measured again, each point's chosen kernels also as 8 layers in one CUDA graph
GRAPH8 = CALIBRATION_DIR / "h200-sparse-layer-v5-graph8-2026-12-03.json"
V5 = CALIBRATION_DIR / "h200-sparse-layer-v5-2026-12-03.json"  # the fifth version, one graph a layer only
# what a point's measured time is: one graph a layer replayed back to back, or per layer of a graph of several
# layers (a decode step's graph, which pays one graph launch for all of them), or the same with each layer's
# select launched programmatically after the kernels ahead of it (Config.chain, as choose_config launches it from
# the eighth version on: what the preset's fit uses, since the simulator's step is one such graph)
MEASURES = {
    "one graph a layer": "fused_b2b_us",
    "in a graph of layers": "graph_layers_b2b_us_per_layer",
    "in a graph of chained layers": "graph_layers_chain_b2b_us_per_layer",
}
PRESET_MEASURE = "in a graph of chained layers"
FILTERS = CALIBRATION_DIR / "h200-sparse-fused-2026-12-02.json"  # the first version's run, with the filters
SYSTEM = "h200-sparse-hbm"
LATENCY = "gpu.sparse_pipeline_latency"
PER_REQUEST = "gpu.sparse_time_per_request"
PER_KEY = "gpu.sparse_time_per_key"
PER_SURVIVOR = "gpu.sparse_time_per_survivor"
PER_PICK = "gpu.sparse_time_per_pick"
NAMES = (LATENCY, PER_REQUEST, PER_KEY, PER_SURVIVOR, PER_PICK)
UNITS = (1e-6, 1e-9, 1e-12, 1e-9, 1e-9)  # a unit step of each constant for the slopes: us, ns, ps, ns, ns
FIT_CONTEXTS = (4096, 32768, 524288)  # held out: 8K, 128K, 1M


@dataclass(frozen=True)
class Point:
    users: int
    context: int
    k: int
    window: int
    sinks: int
    kv_heads: int
    survivors: int  # per layer, all users and KV heads
    survival: float
    measured_s: float
    floor_s: float

    @property
    def fitted(self) -> bool:
        return self.context in FIT_CONTEXTS


def points(path=FUSED, measure: str = PRESET_MEASURE) -> list[Point]:
    """Every measured layer of the fused pipeline that ran and passed its reference check (and, in a graph of
    layers, that graph's check too), timed as ``measure`` (a key of :data:`MEASURES`)."""
    if measure not in MEASURES:
        raise CemsimError(f"measure must be one of {list(MEASURES)}, got {measure!r}")
    field = MEASURES[measure]
    out = []
    for r in load_calibration(path)["layers"]:
        if "error" in r or not r.get("row0_checked"):
            continue
        if field not in r:
            raise CemsimError(
                f"{path}: the layer at batch {r['users']}, context {r['context']} has no {field}"
            )
        if field.startswith("graph_layers") and not r.get(field.replace("b2b_us_per_layer", "row0_checked")):
            continue
        out.append(
            Point(
                int(r["users"]),
                int(r["context"]),
                int(r["k"]),
                int(r["window"]),
                int(r["sinks"]),
                int(r["kv_heads"]),
                int(r["survivors_per_layer"]),
                float(r["survival"]),
                r[field] * 1e-6,
                r["floor_us"] * 1e-6,
            )
        )
    if not out:
        raise CemsimError(f"no checked fused-pipeline layers in {path}")
    return out


def _hwconfig():
    root = repo_root()
    if root is None:
        raise FileNotFoundError("the sparse fit needs the repo's hwconfigs/ folder")
    return root / "hwconfigs" / f"{SYSTEM}.yaml"


@cache
def _replay(p: Point, constants: tuple[float, ...] | None) -> float:
    """Attention time per layer of one decode step of h200-sparse-hbm at ``p`` (constants None: the file's,
    else one value per name in NAMES, seconds)."""
    overrides: dict[str, object] = {
        "workload.context": p.context,
        "workload.batch": p.users,
        "workload.attention.k": p.k,
        "gpu.hbm.capacity": "100 TB",  # one layer was measured: whether 32 layers' KV fit is not the question
    }
    if constants is not None:
        overrides |= {name: f"{value!r} s" for name, value in zip(NAMES, constants, strict=True)}
    system = load_system(_hwconfig(), overrides).system
    header = synthetic_header("llama3-8b", policy="longsight", k=p.k, window=p.window, sinks=p.sinks)
    step = _uniform_step(header, p.context, p.survivors // (p.users * p.kv_heads))
    res = simulate(prepare(system, header, [step]))
    return res.time_breakdown_s["attention_gpu"] / system.geometry.layers


def predict(pts: list[Point], constants: tuple[float, ...] | None = None) -> np.ndarray:
    return np.array([_replay(p, constants) for p in pts])


def fit(pts: list[Point]) -> tuple[float, ...]:
    """Least squares on relative error; the prediction is affine in every constant, so the slopes from the
    replay at zero and at a unit step of each one alone are exact."""
    measured = np.array([p.measured_s for p in pts])
    zero = (0.0,) * len(NAMES)
    base = predict(pts, zero)
    slopes = []
    for i, unit in enumerate(UNITS):
        step = tuple(unit if j == i else 0.0 for j in range(len(NAMES)))
        slopes.append((predict(pts, step) - base) / unit)
    a = np.stack(slopes, axis=1)
    x = np.linalg.lstsq(a / measured[:, None], 1.0 - base / measured, rcond=None)[0]
    return tuple(float(v) for v in x)


def table(path=FUSED, measure: str = PRESET_MEASURE) -> tuple[tuple[float, ...], list[dict]]:
    """The fit on the fitted split and every point's prediction with it (the held-out ones are the check)."""
    pts = points(path, measure)
    constants = fit([p for p in pts if p.fitted])
    pred = predict(pts, constants)
    rows = [
        {
            "users": p.users,
            "context": p.context,
            "survival": p.survival,
            "split": "fit" if p.fitted else "held out",
            "measured_us": p.measured_s * 1e6,
            "predicted_us": q * 1e6,
            "error": (q - p.measured_s) / p.measured_s,
        }
        for p, q in zip(pts, pred, strict=True)
    ]
    return constants, rows


def cross_validation(path=FUSED, measure: str = PRESET_MEASURE) -> list[dict]:
    """Leave one context out: for each measured context, the five constants fitted on every other context (both
    batches, every survival) and that context's ten points predicted with them. A check of the model's form that
    does not rest on one choice of held-out contexts: each context is predicted by a fit that never saw it."""
    pts = points(path, measure)
    out = []
    for c in sorted({p.context for p in pts}):
        constants = fit([p for p in pts if p.context != c])
        left = [p for p in pts if p.context == c]
        err = np.array(
            [(q - p.measured_s) / p.measured_s for p, q in zip(left, predict(left, constants), strict=True)]
        )
        worst = int(np.argmax(np.abs(err)))
        out.append(
            {
                "context": c,
                "constants": constants,
                "errors": err,
                "worst": left[worst],
                "worst_error": err[worst],
            }
        )
    return out


def cv_table(path=FUSED) -> str:
    """docs/gpu-kernels.md's leave-one-context-out table."""
    out = [
        "| context left out | fitted on the others: fixed, request, key, survivor, pick | its 10 points: mean absolute "
        "error | worst, signed (point) |",
        "|---|---|---|---|",
    ]
    every = []
    for r in cross_validation(path):
        e, w = np.abs(r["errors"]), r["worst"]
        every.extend(e)
        shown = ", ".join(_time(v) for v in r["constants"])
        out.append(
            f"| {_ctx(r['context'])} | {shown} | {e.mean():.1%} | {r['worst_error']:+.1%} (batch {w.users}, "
            f"{w.survival:.2%}) |"
        )
    out.append(f"| all | | {np.mean(every):.1%} | {np.max(every):.1%} |")
    return "\n".join(out)


def _ctx(tokens: int) -> str:
    return f"{tokens // 2**20}M" if tokens >= 2**20 else f"{tokens // 1024}K"


def _layers(path=FUSED) -> list[dict]:
    return load_calibration(path)["layers"]


def _label(r: dict) -> str:
    return "planted 5%" if r.get("planted") else f"target {r['survival_target']:.0%}"


def layer_table(
    path=FUSED, survival: float = 0.05, planted: bool = True, first=FILTERS, previous=PREVIOUS
) -> str:
    """Markdown: today's pipeline (timed in this run or, where this run did not time it, in ``previous``'s on the
    same inputs), the fused pipeline's first version (``first``, random-sign points only), its previous version
    (``previous``, with its multiple of its own run's floor) and this one per layer at one survival point, one
    graph a layer and in a decode step's graph of layers as the preset's fit times it, with the floor."""

    def times(p) -> dict:
        return {
            (r["users"], r["context"], r["survival_target"], bool(r.get("planted"))): r
            for r in _layers(p)
            if "error" not in r
        }

    v1, vp = times(first), times(previous)
    field = MEASURES[PRESET_MEASURE]
    out = [
        "| batch | context | survivors | today's pipeline (us) | first version (us) | previous version (us) "
        f"| fused (us) | speed-up | fused / floor | {PRESET_MEASURE} (us) | floor (us) | in a graph / floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in _layers(path):
        if r["survival_target"] != survival or bool(r.get("planted")) != planted:
            continue
        key = (r["users"], r["context"], survival, planted)
        a, b = v1.get(key), vp.get(key)
        old_us = r.get("old_b2b_us", (b or {}).get("old_b2b_us"))
        old = "-" if old_us is None else f"{old_us:,.1f}"
        up = "-" if old_us is None else f"{old_us / r['fused_b2b_us']:.1f}x"
        one = "-" if a is None else f"{a['fused_b2b_us']:,.1f}"
        two = "-" if b is None else f"{b['fused_b2b_us']:,.1f} ({b['fused_b2b_us'] / b['floor_us']:.2f}x)"
        g, f = r[field], r["floor_us"]
        out.append(
            f"| {r['users']} | {_ctx(r['context'])} | {r['survival']:.2%} | {old} | {one} | {two} | "
            f"{r['fused_b2b_us']:,.1f} | {up} | {r['fused_b2b_us'] / f:.2f}x | {g:,.1f} | {f:,.1f} | {g / f:.2f}x |"
        )
    return "\n".join(out)


def grid_table(path=FUSED) -> str:
    """Markdown: the fused layer (back to back, us) and its multiple of the floor at every measured point."""
    rows = _layers(path)
    points = sorted({(bool(r.get("planted")), r["survival_target"]) for r in rows})
    labels = [_label({"planted": p, "survival_target": t}) for p, t in points]
    out = [
        "| batch | context | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(points),
    ]
    for users, ctx in sorted({(r["users"], r["context"]) for r in rows}):
        cells = []
        for p, t in points:
            r = next(
                (
                    x
                    for x in rows
                    if (x["users"], x["context"], x["survival_target"], bool(x.get("planted")))
                    == (users, ctx, t, p)
                ),
                None,
            )
            cells.append(
                "-" if r is None else f"{r['fused_b2b_us']:,.1f} ({r['fused_b2b_us'] / r['floor_us']:.1f}x)"
            )
        out.append(f"| {users} | {_ctx(ctx)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def stage_table(path=FUSED, survival: float = 0.05, planted: bool = True) -> str:
    """Markdown: each stage alone, back to back (us), at one survival point, and the kernels the layer used."""
    out = [
        "| batch | context | select (reset + filter, compaction, scores) | top-k | attention (band, then picks) "
        "| whole layer | kernels |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in _layers(path):
        if r["survival_target"] != survival or bool(r.get("planted")) != planted:
            continue
        st, c = r["stage_b2b_us"], r["config"]
        out.append(
            f"| {r['users']} | {_ctx(r['context'])} | {st['reset+select']:.1f} | {st['topk']:.1f} | "
            f"{st['attention']:.1f} | {r['fused_b2b_us']:.1f} | {_kernels(c)} |"
        )
    return "\n".join(out)


def _kernels(c: dict) -> str:
    """The chosen configuration in words: select form (select2 with its rows in registers; select2 MMA: their
    scores on the tensor cores), top-k, chunk, where the picks' attention ran, pdl, the band beside the top-k."""
    rows = c.get("rows") if c["select"] == "fused" else 0
    sel = {0: c["select"], 16: "select2 MMA"}.get(rows, "select2")
    where = "fold" if c.get("fold", True) else "apart"
    flags = (", pdl" if c.get("pdl") else "") + (", band late" if c.get("band_late") else "")
    return f"{sel}, {c['topk']}, chunk {c['chunk']}, {where}" + flags


def filter_table(path=FILTERS, n: int = 1 << 24) -> str:
    """Markdown: the SCF filter alone at ``n`` keys, fraction of copy bandwidth per variant and group size."""
    rows = [r for r in load_calibration(path)["filters"] if r["N"] == n]
    variants = ["popc", "mma", "mmax", "issue7_bitmap"]
    out = [
        "| D | G | " + " | ".join(variants) + " |",
        "|---|---|" + "---|" * len(variants),
    ]
    for d in sorted({r["D"] for r in rows}, reverse=True):
        for g in sorted({r["G"] for r in rows}):
            cells = []
            for v in variants:
                r = next(x for x in rows if (x["D"], x["G"], x["variant"]) == (d, g, v))
                cells.append(f"{r['median_us']:.1f} us ({r['fraction_of_copy_bw']:.0%})")
            out.append(f"| {d} | {g} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _time(seconds: float) -> str:
    for unit, scale in (("us", 1e-6), ("ns", 1e-9), ("ps", 1e-12)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-12:.3g} ps"


def fit_table(path=FUSED) -> str:
    constants, rows = table(path)
    shown = ", ".join(f"{name} = {_time(value)}" for name, value in zip(NAMES, constants, strict=True))
    out = [
        f"Fit on {', '.join(f'{c // 1024}K' for c in FIT_CONTEXTS)} (both batches, every survival): {shown}.",
        "",
        "| split | points | mean absolute error | worst |",
        "|---|---|---|---|",
    ]
    for split, e in _split_errors(rows).items():
        out.append(f"| {split} | {len(e)} | {e.mean():.1%} | {e.max():.1%} |")
    return "\n".join(out)


def _split_errors(rows: list[dict]) -> dict[str, np.ndarray]:
    """:func:`table`'s absolute relative errors, fitted and held-out points apart."""
    return {split: np.abs([r["error"] for r in rows if r["split"] == split]) for split in ("fit", "held out")}


def graph_table(path=GRAPH8) -> str:
    """Markdown: per (batch, context), the layer one graph a layer and in a graph of layers (means over the
    survival points, us), and the five constants fitted on each with their fitted and held-out errors."""
    rows = [r for r in _layers(path) if "error" not in r]
    n = {r["graph_layers"] for r in rows}
    out = [
        f"| batch | context | one graph a layer (us) | in a graph of {'/'.join(map(str, sorted(n)))} (us) "
        "| difference (us) |",
        "|---|---|---|---|---|",
    ]
    for users, ctx in sorted({(r["users"], r["context"]) for r in rows}):
        at = [r for r in rows if (r["users"], r["context"]) == (users, ctx)]
        one = float(np.mean([r["fused_b2b_us"] for r in at]))
        many = float(np.mean([r["graph_layers_b2b_us_per_layer"] for r in at]))
        out.append(f"| {users} | {_ctx(ctx)} | {one:,.1f} | {many:,.1f} | {many - one:+.1f} |")
    out += [
        "",
        "| times | fitted: fixed, request, key, survivor, pick | fitted: mean / worst | held out: mean / worst |",
        "|---|---|---|---|",
    ]
    for measure in (m for m, field in MEASURES.items() if all(field in r for r in rows)):
        constants, fitted = table(path, measure)
        err = _split_errors(fitted)
        out.append(
            f"| {measure} | {', '.join(_time(v) for v in constants)} | {err['fit'].mean():.1%} / "
            f"{err['fit'].max():.1%} | {err['held out'].mean():.1%} / {err['held out'].max():.1%} |"
        )
    return "\n".join(out)


def repeat_summary(path=GRAPH8, previous=V5) -> str:
    """One sentence: the same kernels measured twice (one graph a layer), point by point."""
    old = {(r["users"], r["context"], r["survival_target"], r["planted"]): r for r in _layers(previous)}
    rel, same = [], 0
    for r in _layers(path):
        o = old[(r["users"], r["context"], r["survival_target"], r["planted"])]
        rel.append(r["fused_b2b_us"] / o["fused_b2b_us"] - 1.0)
        same += r["config"] == o["config"]
    a = np.abs(rel)
    worst = rel[int(np.argmax(a))]
    return (
        f"Measured again, one graph a layer, the {len(rel)} points moved by {np.median(a):.1%} at the median "
        f"and {worst:+.1%} at worst, {same} of them with the same kernels chosen."
    )


def main() -> None:
    """Print the tables of docs/gpu-kernels.md."""
    print(layer_table(), "\n")
    print(layer_table(planted=False), "\n")
    print(grid_table(), "\n")
    print(stage_table(), "\n")
    print(filter_table(), "\n")
    print(fit_table(), "\n")
    print(cv_table(), "\n")
    print(graph_table(), "\n")
    print(repeat_summary(), "\n")
    _, rows = table()
    print(
        "| batch | context | survival | split | measured (us) | predicted (us) | error |\n|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['users']} | {_ctx(r['context'])} | {r['survival']:.2%} | {r['split']} | {r['measured_us']:.1f} | "
            f"{r['predicted_us']:.1f} | {r['error']:+.1%} |"
        )


if __name__ == "__main__":
    main()
