"""The fused GPU LongSight pipeline (kernels/longsight_fused.cu) against its NumPy reference, stage by stage:
survivors bit-identical, scores to fp32 rounding, top-k sets up to ties, outputs to well under bf16 tolerance;
the standalone bitmap filters (popc and b1 MMA) bit-identical. Needs CuPy and a CUDA device (marker ``gpu``);
the reference's own checks run everywhere."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cemsim import kernels
from cemsim.errors import CemsimError
from cemsim.gpu import reference as ref
from cemsim.gpu.fused import Config, Shape, TopkVariant
from cemsim.gpu.sign_layout import to_frag

needs_gpu = pytest.mark.skipif(not kernels.cupy_available(), reason="no CUDA device / CuPy")


def make_inputs(rng: np.random.Generator, s: Shape, survival: float) -> dict[str, np.ndarray]:
    w = s.words
    keys = ref.bf16_bits(rng.standard_normal((s.rows, s.ctx, s.head_dim)).astype(np.float32))
    vals = ref.bf16_bits(rng.standard_normal((s.rows, s.ctx, s.head_dim)).astype(np.float32))
    q = (rng.standard_normal((s.rows, s.group, s.head_dim)) / np.sqrt(s.head_dim)).astype(np.float32)
    ksig = rng.integers(0, 2**64, size=(s.rows, s.ctx, w), dtype=np.uint64)
    qsig = rng.integers(0, 2**64, size=(s.rows, s.group, w), dtype=np.uint64)
    t = ref.survival_threshold(s.head_dim, s.group, survival)
    thresholds = (t + rng.integers(-1, 2, size=s.rows)).astype(np.int32)  # rows differ
    return {"ksig": ksig, "qsig": qsig, "thresholds": thresholds, "q": q, "keys": keys, "vals": vals}


def run_gpu(
    s: Shape, x: dict[str, np.ndarray], method: str, config: Config, candidates: int | None = None
) -> dict[str, np.ndarray]:
    import cupy as cp

    from cemsim.gpu.fused import FusedLongSight

    p = FusedLongSight(s, method=method, config=config)  # type: ignore[arg-type]
    if candidates is not None:  # ls_topk_sample's buffer: small ones reach its sampling and fallback paths
        p.candidates = candidates
    dev = {n: cp.asarray(x[n]) for n in ("ksig", "qsig", "thresholds", "q", "keys", "vals")}
    if method == "frag":
        dev["ksig"] = to_frag(dev["ksig"])
    p.run(*(dev[n] for n in ("ksig", "qsig", "thresholds", "q", "keys", "vals")))
    cp.cuda.Device().synchronize()
    return p.results()


shapes = st.builds(
    lambda users, heads, group, d, region, sinks, window, k: Shape(
        users, heads, group, d, region + sinks + window, window, sinks, k, cap=max(1, region)
    ),
    users=st.integers(1, 2),
    heads=st.integers(1, 3),
    group=st.sampled_from([1, 2, 4, 8]),
    d=st.sampled_from([64, 128]),
    region=st.integers(0, 6000),
    sinks=st.integers(0, 16),
    window=st.integers(1, 300),
    k=st.sampled_from([1, 7, 64, 256, 1024]),
)


@pytest.mark.gpu
@needs_gpu
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    s=shapes,
    survival=st.sampled_from([0.01, 0.05, 0.2, 0.6, 0.99]),
    seed=st.integers(0, 2**31 - 1),
    candidates=st.sampled_from([4096, 1024, 256, 64]),
)
def test_fused_pipeline_matches_reference(s: Shape, survival: float, seed: int, candidates: int) -> None:
    rng = np.random.default_rng(seed)
    x = make_inputs(rng, s, survival)
    # every filter method, select form (ls_select, ls_select2 with rows in registers or by cp.async, split),
    # top-k kernel
    # (and histogram mode; the sample top-k with a candidate buffer from 64 entries, which sends long rows
    # through its sampled threshold or its fallback), attention chunk, and the picks' attention in the top-k
    # blocks (fold) or a launch of its own
    for method, config in (
        ("popc", Config("split", "atomic", 64, True)),
        ("mma", Config("fused", "match", 128, False)),
        ("mmax", Config("split", "cluster", 128, True)),
        ("popc", Config("fused", "cluster", 64, False)),
        ("frag", Config("fused", "match", 64, True)),
        ("frag", Config("split", "atomic", 128, False)),
        ("popc", Config("fused", "sample", 64, True, 4, True)),
        ("frag", Config("fused", "sample", 128, False, 4)),
        ("mma", Config("fused", "atomic", 64, True, 4)),
        ("mmax", Config("fused", "sample", 64, True, 4)),
        ("frag", Config("fused", "cluster", 64, False, 4, True)),
        ("popc", Config("split", "sample", 128, False)),
        ("popc", Config("fused", "spread", 64, True, 4, True)),
        ("frag", Config("fused", "spread", 128, True)),
        ("mmax", Config("split", "spread", 64, False)),
        ("mma", Config("fused", "spreadc", 64, True, 4, True)),
        ("popc", Config("split", "spreadc", 128, True)),
        ("popc", Config("fused", "sample", 64, True, 16, True)),  # ls_select2, rows' scores by MMA
        ("frag", Config("fused", "spreadc", 128, False, 16)),
        ("mmax", Config("fused", "atomic", 64, True, 16)),
        ("popc", Config("async", "sample", 64, True, 0, True)),  # ls_select2, rows by cp.async
        ("frag", Config("async", "spreadc", 128, True)),
        ("mma", Config("async", "atomic", 64, False)),
        # fan2: two blocks a head, the same linear-bin picks
        ("popc", Config("fused", "fan2", 64, True, 16, True)),
        ("frag", Config("fused", "fan2", 128, True, 4)),
        ("mmax", Config("fused", "fan2", 64, True, 0, True, band_late=True)),
        # fan2s: fan2's selection split over a cluster of two
        ("popc", Config("fused", "fan2s", 64, True, 16, True, band_late=True)),
        ("frag", Config("fused", "fan2s", 128, True, 4)),
        ("popc", Config(layer=True)),  # ls_layer, as many blocks per row as fit at once
        ("popc", Config(layer=True, ctas=3)),
        ("popc", Config(layer=True, ctas=1)),
    ):
        ref.check_pipeline(s, x, run_gpu(s, x, method, config, candidates))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("k", [7, 256])
@pytest.mark.parametrize("candidates", [4096, 300])
@pytest.mark.parametrize(
    "topk", ["atomic", "cluster", "sample", "spread", "spreadc", "fan2", "fan2s", "layer", "layer5"]
)
def test_topk_with_every_score_tied(topk: str, candidates: int, k: int) -> None:
    """A zero query gives every survivor the same score: any k of them are a top-k. The sample top-k with room
    for every survivor takes them all as candidates, which share all 32 bits (no radix pass); with 300 it
    samples a threshold that every survivor reaches (k = 7: the candidates overflow, so it falls back) or
    goes straight to its fallback (k = 256). ls_layer (auto and 5 blocks a row) runs all four radix passes and
    splits the tied value among its blocks by rank."""
    rng = np.random.default_rng(9)
    s = Shape(1, 2, 4, 128, 9000, 64, 4, k, cap=9000)
    x = make_inputs(rng, s, 0.3)
    x["q"][:] = 0.0
    config = (
        Config(layer=True, ctas=5 if topk == "layer5" else 0)
        if topk.startswith("layer")
        else Config("fused", topk, 64, True, 4)  # type: ignore[arg-type]
    )
    ref.check_pipeline(s, x, run_gpu(s, x, "popc", config, candidates))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize(
    "config",
    [
        Config("fused", "atomic", 64, True),
        Config("split", "cluster", 128, False),
        Config("fused", "sample", 64, True, 4, True),
        Config("fused", "sample", 128, False, 4),
        Config("fused", "spread", 64, True, 4, True),
        Config("fused", "spreadc", 64, True, 4, True),
        Config("async", "spreadc", 64, True, 0, True),
        Config("fused", "fan2", 64, True, 16, True, band_late=True),
        Config("fused", "fan2s", 64, True, 16, True, band_late=True),
        Config("fused", "sample", 64, True, 0, True, band_late=True),
        Config("split", "atomic", 128, False, band_late=True),
        Config(layer=True),
    ],
    ids=[
        "fold",
        "apart",
        "sample-fold-rows4-pdl",
        "sample-apart-rows4",
        "spread-fold-rows4-pdl",
        "spreadc-fold-pdl",
        "async-spreadc-fold-pdl",
        "fan2-fold-pdl-band-late",
        "fan2s-fold-pdl-band-late",
        "sample-fold-pdl-band-late",
        "split-apart-band-late",
        "layer",
    ],
)
def test_fused_pipeline_at_scale_and_in_a_graph(config: Config) -> None:
    """Llama-3-8B geometry at 64K tokens, two users: eager run checked, then a CUDA graph (the band's attention
    on a branch of its own) replayed after the thresholds change in place gives the reference's answer for the
    new thresholds, twice in a row (nothing is left to reset between launches)."""
    import cupy as cp

    from cemsim.gpu.fused import FusedLongSight

    rng = np.random.default_rng(3)
    s = Shape(2, 8, 4, 128, 65536, 1024, 16, 1024, cap=8192)
    x = make_inputs(rng, s, 0.05)
    dev = {n: cp.asarray(v) for n, v in x.items()}
    p = FusedLongSight(s, config=config)
    p.run(*(dev[n] for n in ("ksig", "qsig", "thresholds", "q", "keys", "vals")))
    ref.check_pipeline(s, x, p.results())
    # the merges left the survivor tally and their own counters zeroed for the next launch
    assert int(p.tally.max()) == 0 and int(p.done.max()) == 0
    stream = cp.cuda.Stream(non_blocking=True)
    graph = p.capture(*(dev[n] for n in ("ksig", "qsig", "thresholds", "q", "keys", "vals")), stream=stream)
    x["thresholds"] = x["thresholds"] + 1  # fewer survivors
    dev["thresholds"][...] = cp.asarray(x["thresholds"])
    cp.cuda.Device().synchronize()
    for _ in range(2):
        p.out.fill(np.nan)  # poison: the replay must write every output
        p.count.fill(0)
        graph.launch(stream)
        stream.synchronize()
        assert not p.overflowed()
        ref.check_pipeline(s, x, p.results())


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("k", [1024, 97])
@pytest.mark.parametrize(("topk", "rows"), [("fan2", 16), ("fan2", 4), ("fan2s", 16), ("fan2s", 4)])
def test_fan_topk_on_rows_its_linear_bins_take(topk: TopkVariant, rows: int, k: int) -> None:
    """Rows of ~7K survivors, as at 128K batch 1, within the fan top-k's linear-bin reach (8 x 1,024): every block
    of a head selects the same picks and attends over its share (the fallback is what the tied and long-row
    tests reach). Random scores, odd cap and k, so the share boundaries fall mid-warp."""
    rng = np.random.default_rng(23)
    s = Shape(1, 3, 4, 128, 24000, 64, 4, k, cap=23999)
    x = make_inputs(rng, s, 0.3)
    ref.check_pipeline(s, x, run_gpu(s, x, "popc", Config("fused", topk, 64, True, rows, True), 4096))


def check_fan_on_one_dimension(
    topk: TopkVariant, seed: int, dim0: Callable[[np.random.Generator, tuple], np.ndarray]
) -> None:
    """A fan top-k on 4-8K survivors a row whose scores are the keys' first dimension alone (the query one-hot
    there), that dimension drawn by ``dim0(rng, (rows, ctx))``, against the reference."""
    rng = np.random.default_rng(seed)
    s = Shape(1, 3, 4, 128, 24000, 64, 4, 1024, cap=23999)
    x = make_inputs(rng, s, 0.3)
    keys = rng.standard_normal((s.rows, s.ctx, s.head_dim)).astype(np.float32)
    keys[:, :, 0] = dim0(rng, (s.rows, s.ctx))
    x["keys"] = ref.bf16_bits(keys)
    x["q"][:] = 0.0
    x["q"][:, :, 0] = 1.0
    ref.check_pipeline(s, x, run_gpu(s, x, "popc", Config("fused", topk, 64, True, 16, True), 4096))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("levels", [64, 8])
@pytest.mark.parametrize("topk", ["fan2", "fan2s"])
def test_fan_topk_with_quantized_scores(topk: TopkVariant, levels: int) -> None:
    """Scores on a few levels (integers below ``levels``): with 64 levels the k-th largest's linear bin holds 60-106
    exactly tied scores, spread over both blocks of fan2s, which rank them alike; with 8 it holds 540-943, past the
    bin's 512, so every block of a head takes the sample top-k's path instead (bin counts of these rows by a NumPy
    model of the linear bins)."""
    check_fan_on_one_dimension(topk, 29, lambda rng, shape: rng.integers(0, levels, size=shape))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("topk", ["fan2", "fan2s"])
def test_fan_topk_with_outlying_scores(topk: TopkVariant) -> None:
    """Scores N(0, 1) but for a few a row 1,000 times larger, of either sign: the surviving outliers stretch the
    linear bins' range so far that the k-th largest's bin holds 1,119-5,652 scores (a NumPy model of the bins on
    these rows), past its 512, so every head goes to the sample top-k's path (fan2s: the decision taken alike in
    both blocks of the pair)."""
    check_fan_on_one_dimension(
        topk,
        31,
        lambda rng, shape: rng.standard_normal(shape) * np.where(rng.random(shape) < 3e-4, 1000.0, 1.0),
    )


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize(("k", "candidates"), [(1024, 4096), (256, 1000), (1024, 700)])
@pytest.mark.parametrize(
    ("topk", "fold"),
    [
        ("sample", True),
        ("sample", False),
        ("spread", True),
        ("spreadc", True),
        ("fan2", True),
        ("fan2s", True),
        ("layer", True),
        ("async", True),
    ],
)
def test_sample_topk_on_long_rows(topk: str, fold: bool, k: int, candidates: int) -> None:
    """Rows of ~27K survivors (odd cap, so score rows start off 16-byte boundaries): the sample top-k's candidate
    pass runs over several chunks with unaligned heads and tails; with 1,000 slots for k = 256 the sampled
    threshold leaves about 700 candidates (or overflows: then the fallback); 700 slots for k = 1,024 cannot
    hold what the sample would leave, so it goes straight to its fallback over the whole list. ls_layer: ~27K
    survivors over its blocks' lists (D = 64), many tiles a block."""
    rng = np.random.default_rng(17)
    s = Shape(1, 2, 4, 64, 90000, 64, 4, k, cap=89931)
    x = make_inputs(rng, s, 0.3)
    if topk == "layer":
        config = Config(layer=True)
    elif (
        topk == "async"
    ):  # the sample top-k after the async select: ~614 rows a select block, 5 chunks of rows
        config = Config("async", "sample", 64, fold)
    else:
        config = Config("fused", topk, 64, fold, 4)  # type: ignore[arg-type]
    ref.check_pipeline(s, x, run_gpu(s, x, "popc", config, candidates))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize(
    "config",
    [
        Config("fused", "sample", 64, True, 4, True),
        Config("fused", "atomic", 128, False, 4, True),
        Config("fused", "cluster", 64, False, 0, True),
        Config("split", "match", 64, True, 0, True),
        Config("fused", "spread", 128, True, 4, True),
        Config("fused", "spreadc", 128, True, 4, True),
        Config("fused", "fan2", 128, True, 16, True),
        Config("fused", "fan2s", 64, True, 16, True, band_late=True),
        Config("fused", "sample", 64, False, 4, True, band_late=True),
        Config(layer=True, ctas=2),
    ],
    ids=[
        "sample-fold",
        "atomic-apart",
        "cluster-apart",
        "split-match-fold",
        "spread-fold",
        "spreadc-fold",
        "fan2-fold",
        "fan2s-fold-band-late",
        "sample-apart-band-late",
        "layer-2",
    ],
)
def test_programmatic_launch_matches_reference(config: Config) -> None:
    """The top-k (and the picks' attention when apart) launched with programmatic stream serialization: the
    same answer eagerly and from a CUDA graph replayed twice after the thresholds change in place."""
    import cupy as cp

    from cemsim.gpu.fused import FusedLongSight

    rng = np.random.default_rng(21)
    s = Shape(2, 3, 4, 128, 24000, 256, 8, 256, cap=24000)
    x = make_inputs(rng, s, 0.3)  # ~7K survivors a row: the sample top-k samples its threshold
    dev = {n: cp.asarray(v) for n, v in x.items()}
    names = ("ksig", "qsig", "thresholds", "q", "keys", "vals")
    p = FusedLongSight(s, config=config)
    p.run(*(dev[n] for n in names))
    ref.check_pipeline(s, x, p.results())
    stream = cp.cuda.Stream(non_blocking=True)
    graph = p.capture(*(dev[n] for n in names), stream=stream)
    x["thresholds"] = x["thresholds"] - 1  # more survivors
    dev["thresholds"][...] = cp.asarray(x["thresholds"])
    cp.cuda.Device().synchronize()
    for _ in range(2):
        p.out.fill(np.nan)
        graph.launch(stream)
        stream.synchronize()
        ref.check_pipeline(s, x, p.results())
    assert int(p.tally.max()) == 0 and int(p.done.max()) == 0


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize(
    "config",
    [
        Config("fused", "fan2s", 64, True, 16, True, chain=True),
        Config("fused", "fan2", 64, True, 16, True, band_late=True, chain=True),
        Config("split", "sample", 64, True, 0, True, chain=True),
        Config("fused", "atomic", 64, False, 4, chain=True),
    ],
    ids=["fan2s-chain", "fan2-late-chain", "split-sample-chain", "atomic-apart-chain"],
)
def test_chained_layers_in_one_graph(config: Config) -> None:
    """Layers recorded one after another into one graph (a decode step's), each layer's first launch programmatic
    (Config.chain): the second of two pipelines runs twice, so its second select starts while its own first
    top-k and merges may still run and would count into a tally they have not zeroed yet, unless it waits for
    them. Every layer's answer is the reference's, replayed twice after the thresholds change in place. (With the
    select's wait taken out, fan2s and the split form failed here on the H200, "row 0: 0 survivors", and fan2 and
    the atomic top-k apart passed: a late band, joined to the next select by a full edge and often the last to
    merge, and a picks' launch that never lets its dependents start early leave nothing to race.)"""
    import cupy as cp

    from cemsim.gpu.fused import FusedLongSight

    rng = np.random.default_rng(33)
    s = Shape(1, 8, 4, 128, 40000, 1024, 16, 1024, cap=8192)
    names = ("ksig", "qsig", "thresholds", "q", "keys", "vals")
    xs = [make_inputs(rng, s, 0.05) for _ in range(2)]
    devs = [{n: cp.asarray(v) for n, v in x.items()} for x in xs]
    pipes = [FusedLongSight(s, config=config) for _ in xs]
    stream = cp.cuda.Stream(non_blocking=True)
    order = [0, 1, 1]  # pipeline 1 after itself: its buffers reused by the next launch
    with stream:
        stream.begin_capture()
        try:
            for i in order:
                pipes[i].record(*(devs[i][n] for n in names), stream=stream)
        finally:
            graph = stream.end_capture()
    for x, dev in zip(xs, devs, strict=True):
        x["thresholds"] = x["thresholds"] + 1
        dev["thresholds"][...] = cp.asarray(x["thresholds"])
    cp.cuda.Device().synchronize()
    for _ in range(2):
        for p in pipes:
            p.out.fill(np.nan)
            p.count.fill(0)
        graph.launch(stream)
        stream.synchronize()
        for p, x in zip(pipes, xs, strict=True):
            assert not p.overflowed()
            ref.check_pipeline(s, x, p.results())
            assert int(p.tally.max()) == 0 and int(p.done.max()) == 0


@pytest.mark.gpu
@needs_gpu
def test_overflow_is_reported_and_counts_stay_exact() -> None:
    import cupy as cp

    from cemsim.gpu.fused import FusedLongSight

    rng = np.random.default_rng(5)
    s = Shape(1, 2, 4, 128, 20000, 64, 4, 32, cap=100)
    x = make_inputs(rng, s, 0.5)
    rows = ref.survivors(x["ksig"], x["qsig"], x["thresholds"], s.start, s.region)
    for form, in_flight in (("fused", 0), ("split", 0), ("fused", 4), ("async", 0), ("layer", 0)):
        config = Config(layer=True)
        if form != "layer":
            config = Config(form, "atomic", 64, True, in_flight)  # type: ignore[arg-type]
        p = FusedLongSight(s, method="popc", config=config)
        p.run(*(cp.asarray(x[n]) for n in ("ksig", "qsig", "thresholds", "q", "keys", "vals")))
        assert p.overflowed()
        np.testing.assert_array_equal(p.results()["count"], [len(r) for r in rows])


@pytest.mark.gpu
@needs_gpu
def test_layer_list_overflow_is_reported() -> None:
    """ls_layer with room for 300 survivors a block (a row of ~10K over 3 blocks): overflowed() says so, the
    counts stay exact; with room enough the same rows check against the reference."""
    import cupy as cp

    from cemsim.gpu.fused import FusedLongSight

    rng = np.random.default_rng(6)
    s = Shape(1, 2, 4, 128, 20000, 64, 4, 64, cap=20000)
    x = make_inputs(rng, s, 0.5)
    rows = ref.survivors(x["ksig"], x["qsig"], x["thresholds"], s.start, s.region)
    dev = [cp.asarray(x[n]) for n in ("ksig", "qsig", "thresholds", "q", "keys", "vals")]
    p = FusedLongSight(s, method="popc", config=Config(layer=True, ctas=3))
    p.layer_list = 300
    p.run(*dev)
    assert p.overflowed() and int(p.lost.min()) > 0
    np.testing.assert_array_equal(p.results()["count"], [len(r) for r in rows])
    p.layer_list = None
    p.run(*dev)
    assert not p.overflowed()
    ref.check_pipeline(s, x, p.results())


def _signs_with_extremes(seed: int, n: int, g: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Random packed signs of n keys and g queries (w words each), with both ends of the match count planted."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 2**64, size=(n, w), dtype=np.uint64)
    q = rng.integers(0, 2**64, size=(g, w), dtype=np.uint64)
    if n > 3:
        k[:3] = q[0]  # exact copies: matches = D
        k[3] = ~q[-1]  # complement: matches = 0
    return k, q


@pytest.mark.gpu
@needs_gpu
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    d=st.sampled_from([64, 128]),
    g=st.integers(1, 16),
    n=st.integers(1, 20000),
    t_frac=st.floats(0.3, 1.0),
)
def test_bitmap_filters_bit_identical(seed: int, d: int, g: int, n: int, t_frac: float) -> None:
    import cupy as cp

    from cemsim.gpu.fused import bitmap_filter

    w = d // 64
    k, q = _signs_with_extremes(seed, n, g, w)
    t = round(t_frac * (d + 1))
    want = ref.bitmap(k, q, t)
    kd, qd = cp.asarray(k), cp.asarray(q)
    for method in ("popc", "mma", "mmax"):
        out = cp.full(len(want), 0xDEADBEEF, dtype=cp.uint32)  # poison
        grid = (-(-len(want) // 64),)
        bitmap_filter(method, w)(
            grid, (256,), (qd, kd, np.int64(n), np.int32(g), np.int32(d), np.int32(t), out)
        )
        np.testing.assert_array_equal(out.get(), want, err_msg=f"{method} D={d} G={g} N={n} T={t}")


@pytest.mark.gpu
@needs_gpu
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    d=st.sampled_from([64, 128]),
    g=st.integers(1, 16),
    n=st.integers(1, 20000),
    t_frac=st.floats(-0.05, 1.05),
)
def test_frag_filters_bit_identical(seed: int, d: int, g: int, n: int, t_frac: float) -> None:
    """The frag-layout b1-MMA filter (both query-block counts, both D) gives the reference's bitmap, thresholds
    past both ends included."""
    import cupy as cp

    from cemsim.gpu.fused import FragFilterKernel

    w = d // 64
    k, q = _signs_with_extremes(seed, n, g, w)
    t = round(t_frac * (d + 1))  # -3 .. D + 2: every key and no key survive at the ends
    want = ref.bitmap(k, q, t)
    kd, qd = cp.asarray(to_frag(k)), cp.asarray(q)
    out = cp.full(len(want), 0xDEADBEEF, dtype=cp.uint32)  # poison
    FragFilterKernel(w, g)(qd, kd, n, g, t, out)
    np.testing.assert_array_equal(out.get(), want, err_msg=f"frag D={d} G={g} N={n} T={t}")


# --------------------------------------------------------------------------- the reference itself (CPU)


def test_reference_survivors_match_cemsim_kernels() -> None:
    """The reference's filter equals cemsim's SCF kernels (the CPU ones every other test pins)."""
    rng = np.random.default_rng(11)
    k = rng.integers(0, 2**64, size=(1, 5000, 2), dtype=np.uint64)
    q = rng.integers(0, 2**64, size=(1, 4, 2), dtype=np.uint64)
    got = ref.survivors(k, q, np.array([76]), 100, 4000)[0]
    res = kernels.scf_filter_rows(q, k[0, 100:4100], 128, 76, backend="numpy", return_matches=False)
    np.testing.assert_array_equal(got, 100 + np.flatnonzero(res.survivors[0]))
    bm = np.unpackbits(ref.bitmap(k[0], q[0], 76).view(np.uint8), bitorder="little")[:5000]
    np.testing.assert_array_equal(
        bm.astype(bool), kernels.scf_filter_rows(q, k[0], 128, 76, backend="numpy").survivors[0]
    )


def test_reference_bf16_round_trip_and_rounding() -> None:
    x = np.array([1.0, -2.5, 3.0e-3, 1.00390625, 1.01171875], dtype=np.float32)  # the last two tie
    back = ref.bf16_to_float(ref.bf16_bits(x))
    np.testing.assert_array_equal(back[:3], ref.bf16_to_float(ref.bf16_bits(back[:3])))
    assert back[3] == 1.0 and back[4] == 1.015625  # ties to even


def test_reference_topk_check_catches_a_wrong_pick() -> None:
    pos = np.arange(10, 20)
    sc = np.arange(10, dtype=np.float64)
    assert ref.check_topk(np.array([19, 18, 17]), pos, sc, 3, 0.0).ok
    assert not ref.check_topk(np.array([19, 18, 10]), pos, sc, 3, 0.0).ok
    assert not ref.check_topk(np.array([19, 18]), pos, sc, 3, 0.0).ok
    assert not ref.check_topk(np.array([19, 19, 18]), pos, sc, 3, 0.0).ok
    assert not ref.check_topk(np.array([19, 18, 5]), pos, sc, 3, 0.0).ok


def test_survival_threshold_dials_random_survival() -> None:
    rng = np.random.default_rng(2)
    k = rng.integers(0, 2**64, size=(1, 200_000, 2), dtype=np.uint64)
    q = rng.integers(0, 2**64, size=(1, 4, 2), dtype=np.uint64)
    for target in (0.01, 0.05, 0.10):
        t = ref.survival_threshold(128, 4, target)
        frac = len(ref.survivors(k, q, np.array([t]), 0, 200_000)[0]) / 200_000
        assert frac <= target * 1.1 and frac >= target / 3, (target, t, frac)


def test_shape_rejects_what_the_kernels_cannot_run() -> None:
    with pytest.raises(CemsimError, match="head dim"):
        Shape(1, 8, 4, 256, 4096, 1024, 16, 256, cap=4096)
    with pytest.raises(CemsimError, match="query heads"):
        Shape(1, 8, 16, 128, 4096, 1024, 16, 256, cap=4096)
    with pytest.raises(CemsimError, match="k must"):
        Shape(1, 8, 4, 128, 4096, 1024, 16, 2048, cap=4096)
    with pytest.raises(CemsimError, match="fit in the context"):
        Shape(1, 8, 4, 128, 1000, 1024, 16, 256, cap=4096)
    s = Shape(1, 8, 4, 128, 1 << 20, 1024, 16, 1024, cap=65536)
    # signs of every region key, survivor keys, picked values, band K and V, queries
    assert s.floor_bytes(0, 0) == 8 * (s.region * 16 + 2 * 1040 * 256 + 4 * 128 * 4)
    assert s.floor_bytes(10, 3) - s.floor_bytes(0, 0) == 13 * 256
    # attention work items: the band's 1,040 keys in chunks, then 4 heads x k = 1,024 picks in chunks
    assert (s.band_items(64), s.items_for(64)) == (17, 17 + 4 * 16)
    assert (s.band_items(128), s.items_for(128)) == (9, 9 + 4 * 8)
    with pytest.raises(CemsimError, match="attention chunks"):  # 129 band chunks + 8 heads x 16 pick chunks
        Shape(1, 8, 8, 128, 16384, 8192, 16, 1024, cap=4096)


def test_choose_config_follows_the_h200_measurement() -> None:
    """The default kernels follow bench_fused.py's measurement (h200-sparse-layer-v8-2026-12-04.json): ls_select2
    with its survivors' scores on the tensor cores where rows hold slots for ~3 % survival, else ls_select; the
    sample top-k once rows can hold 8K survivors, else the single-block one; at batch 1 with k = 1,024 fan2s on
    rows whose expected survivors fit its linear bins; the picks' attention folded; programmatic launch from 4K
    slots; chunk 64; from 32K slots spreadc where its clusters of two fit on the GPU at once (gpuattn2 run 8,
    batch 1); the band beside the top-k at batch 1 from 4K slots, with the programmatic launch; the select
    launched programmatically after the kernels ahead of it (chain) everywhere."""
    from cemsim.gpu.fused import choose_config

    long1 = Shape(1, 8, 4, 128, 1 << 20, 1024, 16, 1024, cap=70000)  # bench_fused's rows at 5 %
    assert choose_config(long1) == Config("fused", "spreadc", 64, True, 16, True, band_late=True, chain=True)
    # at 1 %: 20-40 survivors a select block
    sparse1 = Shape(1, 8, 4, 128, 1 << 20, 1024, 16, 1024, cap=15665)
    assert choose_config(sparse1) == Config("fused", "sample", 64, True, 0, True, band_late=True, chain=True)
    edge = 2048 + int(0.039 * ((1 << 20) - 1040))  # the MMA select from 3 % survival with 1.3x headroom
    assert choose_config(Shape(1, 8, 4, 128, 1 << 20, 1024, 16, 1024, cap=edge + 1)).rows == 16
    assert choose_config(Shape(1, 8, 4, 128, 1 << 20, 1024, 16, 1024, cap=edge - 1)).rows == 0
    long8 = Shape(8, 8, 4, 128, 1 << 19, 1024, 16, 1024, cap=36059)
    assert choose_config(long8) == Config("fused", "sample", 64, True, 16, True, chain=True)
    mid1 = Shape(1, 8, 4, 128, 1 << 17, 1024, 16, 1024, cap=10500)  # 128K at 5 %: ~6.5K survivors a row
    assert choose_config(mid1) == Config("fused", "fan2s", 64, True, 16, True, band_late=True, chain=True)
    # the linear bins' reach: 8,192 survivors a row, 8,192 x 1.3 + 2,048 slots
    assert choose_config(Shape(1, 8, 4, 128, 1 << 17, 1024, 16, 1024, cap=12697)).topk == "fan2s"
    assert choose_config(Shape(1, 8, 4, 128, 1 << 17, 1024, 16, 1024, cap=12698)).topk == "sample"
    # 128K at 10 %, k = 256 (32K) and batch 8 keep the sample top-k
    assert choose_config(Shape(1, 8, 4, 128, 1 << 17, 1024, 16, 1024, cap=19107)).topk == "sample"
    assert choose_config(Shape(1, 8, 4, 128, 1 << 17, 1024, 16, 256, cap=10500)).topk == "sample"
    assert choose_config(Shape(8, 8, 4, 128, 1 << 17, 1024, 16, 1024, cap=10500)).topk == "sample"
    short1 = Shape(1, 8, 4, 128, 1 << 15, 1024, 16, 256, cap=4110)  # the band beside the top-k from 4K slots
    assert choose_config(short1) == Config("fused", "atomic", 64, True, 16, True, band_late=True, chain=True)
    # below 4K slots no programmatic launch, so the band stays beside the select
    below = Shape(1, 8, 4, 128, 1 << 12, 1024, 16, 256, cap=2246)
    assert choose_config(below) == Config("fused", "atomic", 64, True, 16, False, chain=True)
    short8 = Shape(8, 8, 4, 128, 1 << 15, 1024, 16, 256, cap=4110)
    assert choose_config(short8) == Config("fused", "atomic", 64, True, 16, True, chain=True)
    tiny8 = Shape(8, 8, 4, 128, 1 << 12, 1024, 16, 256, cap=2246)
    assert choose_config(tiny8) == Config("fused", "atomic", 64, True, 16, False, chain=True)


def test_build_options_add_line_tables_only_when_asked() -> None:
    """The shipped build's NVRTC options are what they were before ``lineinfo`` existed (so its cubin is the one
    measured); ``lineinfo`` (profile_layer.py --lineinfo, for Nsight Compute's source page) only appends
    -lineinfo, which leaves the code alone: nvcc's PTX for kernels/longsight_fused.cu differs only in its line
    tables and ptxas reports the same registers, stack and shared memory for all 74 entries (lead session 10)."""
    from cemsim.gpu.fused import build_options
    from cemsim.kernels import KERNEL_DIR

    assert build_options() == ("-std=c++17", f"-I{KERNEL_DIR}")
    assert build_options("LS_TRACE", "LAYER_KPT=2") == (
        "-std=c++17",
        f"-I{KERNEL_DIR}",
        "-DLS_TRACE",
        "-DLAYER_KPT=2",
    )
    assert build_options("LS_TRACE", lineinfo=True) == (
        "-std=c++17",
        f"-I{KERNEL_DIR}",
        "-DLS_TRACE",
        "-lineinfo",
    )


def test_layer_shared_memory_words_by_hand() -> None:
    """ls_layer's dynamic shared memory (kernels/ls_layer.cuh LayerSmem), counted by hand for G = 4, D = 128, a
    band share of 87 keys, k = 1,024 and 1,000 list entries: query 512 + band scores 348 + histograms 8,192 +
    exchange 2 x 1,024 + totals 1,024 + picks 2,048 (16-bit) + positions 1,000 + scores 4,000 words."""
    from cemsim.gpu.fused import layer_smem_words

    assert layer_smem_words(4, 128, 87, 1024, 1000) == 512 + 348 + 8192 + 3072 + 2048 + 1000 + 4000
    # every region starts on a 16-byte boundary: odd sizes round up to whole 4-word groups
    assert layer_smem_words(3, 64, 5, 7, 9) == 192 + 16 + 8192 + 2304 + 12 + 12 + 27


def test_pipeline_without_a_gpu_is_a_clear_error() -> None:
    if kernels.cupy_available():
        pytest.skip("a GPU is present")
    from cemsim.gpu.fused import FusedLongSight

    with pytest.raises(CemsimError, match="CuPy and a CUDA device"):
        FusedLongSight(Shape(1, 8, 4, 128, 4096, 1024, 16, 256, cap=4096))
