"""The analytic model (cemsim/sim/analytic.py) as an independent second opinion on the DES.

Where the two must agree: one user (nothing to contend with), every shipped hwconfig, within a tolerance
stated and derived below. Where they must differ: under contention the DES is higher than the analytic
estimate (which serves each user as if alone) by at least a margin derived from the requests each NMA or
host stream must serve one after another. Always: the DES lies within the analytic [lower, upper] bounds.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cemsim.sim.analytic import DrexRates, StepModel, analytic, analytic_bounds, fifo_makespan, link_seconds
from cemsim.sim.simulate import Prepared, prepare, simulate
from tests.sim.conftest import HWCONFIGS, REPO, load, make_header, make_step

ANALYTIC_SOURCE = REPO / "cemsim" / "sim" / "analytic.py"
DREX = REPO / "hwconfigs" / "h100-drex.yaml"
FP = 1e-9  # floating-point slack: sums taken in a different order


def prepared(hw: Path | str, context: int, batch: int, steps: int = 2, **overrides: object) -> Prepared:
    system = load(hw, **overrides)
    header = make_header(system.geometry)
    return prepare(system, header, [make_step(header, context, step=i) for i in range(steps)], batch=batch)


def drex_slack(prep: Prepared) -> tuple[float, float]:
    """Seconds per step by which the DES may fall below / exceed the estimate at batch 1 on a DReX system,
    from the two things the trace's counts and the DRAM timings leave open:

    Value rows (above). The trace gives how many top-k values a request fetches, not which rows they sit
    in. Values are a subset of the survivors; placed uniformly at random (the estimate) they open the
    occupancy expectation of rows, and at most they open one row each (min(values, rows spanned)). A model
    may land anywhere in that range, and each row more costs what the estimate charges a row miss
    (DrexRates.row_miss_cost). The formula DES thins each row's no-survivor probability P^t for the values,
    which lands near the pessimistic end when rows are as large as Key Blocks.
    Refresh (below). Where the DRAM preset gives tRFC and tREFI the estimate stretches every fetch by the
    reads' pause for an all-bank refresh (tRTP + tRPab + tRFC + tRCD out of every tREFI: that share of the
    time); a fetch shorter than tREFI may fall between two refreshes (the DRAM-engine DES restarts the refresh schedule with each phase), so up to that share of
    the estimate's fetch time may be absent.
    Column spacing (both ways). Where the NMA keeps keys in flight (the DRAM-engine DReX), whether
    consecutive reads of one opened row go tCCD_L apart in their bank group or interleave with other rows'
    reads tCCD_S apart is the controller's order, which the timings do not fix: the estimate takes the
    middle of the two ends (DrexRates.column_spacing), so half their distance either way.
    Requests of a layer run in parallel on different NMAs: the slowest sets the layer, so per layer the
    largest range counts, summed over layers, averaged over the steps.
    """
    if prep.kind != "cem":
        return 0.0, 0.0
    cem, geo = prep.system.cem, prep.system.geometry
    rates = DrexRates(cem, geo.head_dim, geo.group_size, geo.head_dim * prep.system.workload.dtype_bytes)
    miss, refresh = rates.row_miss_cost(), rates.dram.refresh / (1 + rates.dram.refresh)
    below = above = 0.0
    for w in prep.works:
        for layer in range(geo.layers):
            rows = refreshed = column = 0.0
            for head in range(geo.kv_heads):
                n, s, v = (float(x[layer, head]) for x in (w.considered, w.survivors, w.values))
                spanned = math.ceil(n / rates.keys_per_row)
                rows = max(rows, min(v, spanned) - rates.expected_rows(v, n))
                epochs = math.ceil(n / rates.slice_keys)
                fetch = rates.fetch(s, n, rates.phases(epochs, s)) + rates.fetch(v, n, (1, 1.0, 1))
                refreshed = max(refreshed, fetch.estimate * refresh)
                if rates.outstanding:
                    spread = 0.0
                    for keys in (s, v):
                        fast, slow = rates.column_spacing(keys, rates.expected_rows(keys, n))
                        spread += (slow - fast) / 2 * (1 + rates.dram.refresh)
                    column = max(column, spread)
            above += rows * miss + column
            below += refreshed + column
    return below / len(prep.works), above / len(prep.works)


def agreement_failures(prep: Prepared) -> list[str]:
    """Every way the DES and the analytic model disagree at batch 1 beyond the stated tolerance."""
    assert prep.batch == 1
    des, est = simulate(prep), analytic(prep)
    if not des.fits or not est.fits:
        return [] if des.fits == est.fits else [f"fits: DES {des.fits}, analytic {est.fits}"]
    out = []
    d, e = des.latency_per_token_s, est.latency_per_token_s
    assert d is not None and e is not None
    # GPU, link and host memory are the same physics written twice (roofline, occupancy + flight, ring
    # all-reduce): they must agree to floating point. On DReX what the counts leave open is the value rows
    # and refresh (drex_slack), plus 1% of the offload for the survivor rows: the synthetic traces draw
    # survivors binomially per 128-key block at one rate per head, so the DES's per-block occupancy and the
    # estimate's uniform occupancy are the same law up to the blocks' sampling noise (0.3% of rows measured).
    noise = 0.01 * est.time_breakdown_s.get("attention_wait", 0.0)
    refresh, value_rows = drex_slack(prep)
    below, above = refresh + noise + FP * e, value_rows + noise + FP * e
    if not (-below <= d - e <= above):
        out.append(
            f"latency: DES {d * 1e3:.4f} ms, analytic {e * 1e3:.4f} ms (DES - analytic allowed in "
            f"[{-below * 1e3:.4f}, {above * 1e3:.4f}] ms)"
        )
    for phase in set(des.time_breakdown_s) | set(est.time_breakdown_s):
        dp, ep = des.time_breakdown_s.get(phase, 0.0), est.time_breakdown_s.get(phase, 0.0)
        lo, hi = (below, above) if phase == "attention_wait" else (FP * e, FP * e)
        if not (-lo <= dp - ep <= hi):
            out.append(f"phase {phase}: DES {dp * 1e3:.4f} ms, analytic {ep * 1e3:.4f} ms")
    # energy: the same bytes and operations counted independently; static power follows the latency
    de, ee = des.energy_per_token_j, est.energy_per_token_j
    assert de is not None and ee is not None
    static = sum(v for k, v in est.energy_breakdown_j.items() if k.endswith("static"))
    if abs(de - ee) > static * above / e + FP * ee:
        out.append(f"energy: DES {de:.6g} J, analytic {ee:.6g} J")
    for key in set(des.bytes_moved) | set(est.bytes_moved):
        if des.bytes_moved.get(key, 0.0) != pytest.approx(est.bytes_moved.get(key, 0.0), rel=FP):
            out.append(f"bytes {key}: DES {des.bytes_moved.get(key)}, analytic {est.bytes_moved.get(key)}")
    out += bounds_failures(prep, d)
    return out


def bounds_failures(prep: Prepared, des_latency: float) -> list[str]:
    mean = analytic_bounds(prep).mean()
    if not (mean.lower * (1 - FP) <= des_latency <= mean.upper * (1 + FP)):
        return [f"DES {des_latency * 1e3:.4f} ms outside [{mean.lower * 1e3:.4f}, {mean.upper * 1e3:.4f}] ms"]
    return []


CASES = [(hw, ctx) for hw in HWCONFIGS for ctx in (4096, 65536)] + [(DREX, 1 << 20)]


@pytest.mark.parametrize("hw, context", CASES, ids=[f"{hw.stem}-{ctx}" for hw, ctx in CASES])
def test_des_agrees_with_the_analytic_model_at_batch_1(hw, context):
    prep = prepared(hw, context, batch=1)
    assert agreement_failures(prep) == []


POLICIES = [
    (hw, policy)
    for hw in ("h100-sparse-hbm", "h100-host-offload-sparse", "h100-drex")
    for policy in ("window", "oracle-topk", "quest")
    if not (hw == "h100-drex" and policy == "quest")  # DReX has no Quest unit: refused (settings.py)
] + [("h100-drex", "dense")]  # every key and value out of the CEM device over CXL


@pytest.mark.parametrize("hw, policy", POLICIES, ids=[f"{hw}-{p}" for hw, p in POLICIES])
def test_agreement_under_every_attention_policy(hw, policy):
    """What each policy reads (window only; the oracle's exact top-k, no selection cost; Quest's page bounds
    of 2 x D x 2 B per 16-key page; dense on the CEM device: the whole KV over CXL) is written in both
    models: they agree as above."""
    system = load(REPO / "hwconfigs" / f"{hw}.yaml", **{"workload.attention.policy": policy})
    header = make_header(system.geometry, policy=policy)
    prep = prepare(system, header, [make_step(header, 16384, step=i) for i in range(2)], batch=1)
    assert agreement_failures(prep) == []


def scratchpad_cases() -> tuple[Prepared, Prepared]:
    # a 64 KiB scratchpad holds 16K addresses: 30% survival at 1M tokens fills it every epoch
    over = {"cem.nma.address_scratchpad": "64 KiB", "workload.model": "llama3-1b"}
    system = load(DREX, **over)
    header = make_header(system.geometry)
    step = [make_step(header, 1 << 20, survival=0.3)]
    small = prepare(system, header, step, batch=1)
    roomy = prepare(load(DREX, **{"workload.model": "llama3-1b"}), header, step, batch=1)
    return small, roomy


def test_alternating_filter_and_scoring_is_slower_in_both_models():
    small, roomy = scratchpad_cases()
    # alternating filter and scoring re-fills the epoch pipeline: slower, in both models
    assert simulate(small).latency_per_token_s > simulate(roomy).latency_per_token_s
    assert analytic(small).latency_per_token_s > analytic(roomy).latency_per_token_s
    assert bounds_failures(small, simulate(small).latency_per_token_s) == []


def test_agreement_when_the_scratchpad_forces_alternation():
    """30 % survival: 21.7 reads per row, too many for the reads in flight to reach another bank group of
    the same rank, so every read goes 4 CK apart (tCCD_L in a row, nBL + nRTRS to the next row's rank); the
    estimate's column spacing says so (docs/validation.md, section 3)."""
    small, _ = scratchpad_cases()
    assert agreement_failures(small) == []


@pytest.mark.parametrize("hw", HWCONFIGS, ids=[p.stem for p in HWCONFIGS])
@pytest.mark.parametrize("batch", [4, 16])
def test_des_within_the_analytic_bounds_under_contention(hw, batch):
    prep = prepared(hw, 16384, batch=batch)
    des = simulate(prep)
    assert des.fits == analytic(prep).fits
    if des.fits:
        assert bounds_failures(prep, des.latency_per_token_s) == []


def contention_margin(prep: Prepared) -> float:
    """Seconds per step the DES must add over the uncontended estimate at this batch.

    DReX: each NMA serves the requests that land on it one after another, where a lone user puts one request
    on each. The estimate's layer ends with its slowest request; the DES's cannot end before the package
    holding that request has served all n of its requests, i.e. (n - 1) x its shortest one later. The
    estimate also charges the user's responses draining over the link, which the DES may overlap: they are
    taken off. Host memory: each user's streams hold host DDR and PCIe, so users' streams follow one another:
    (batch - 1) x the shortest user's data time (its latencies overlap). Services are the estimate's: at
    batch 1 the DES matches them within the value-row range (drex_slack), also taken off.
    """
    model = StepModel(prep)
    users = list(range(prep.batch))
    layers, steps = prep.system.geometry.layers, len(prep.works)
    link = prep.system.link
    assert link is not None
    total = 0.0
    for i in range(steps):
        works = {u: prep.works[(i + u) % steps] for u in users}
        for layer in range(layers):
            if prep.kind == "cem":
                requests = model.cem_requests(users, works, layer)
                per_pkg: dict[int, list[float]] = {}
                for pkg, svc, _ in requests:
                    per_pkg.setdefault(pkg, []).append(svc.estimate)
                slowest = max(requests, key=lambda r: r[1].estimate)[0]
                own = per_pkg[slowest]
                drain = sum(link_seconds(link, r) for _, _, r in model.cem_requests([0], works, layer))
                total += (len(own) - 1) * min(own) - drain
            else:
                host = prep.system.host_memory
                assert host is not None
                flights = (1 if prep.kind == "host_dense" else 2) * (host.latency + link.latency)
                alone = [model.stream_offload([u], [u], works, layer).estimate - flights for u in users]
                total += (len(users) - 1) * min(alone)
    return total / steps - drex_slack(prep)[1]


@pytest.mark.parametrize(
    "hw, batch",
    [(DREX, 8), (DREX, 16), (REPO / "hwconfigs" / "h100-host-offload.yaml", 4)],
    ids=["drex-8", "drex-16", "host-4"],
)
def test_contention_makes_the_des_slower_than_the_uncontended_estimate(hw, batch):
    prep = prepared(hw, 16384, batch=batch)
    des, est = simulate(prep), analytic(prep)
    margin = contention_margin(prep)
    assert margin > 0.05 * est.latency_per_token_s  # a real effect: far beyond the batch-1 tolerance
    assert des.latency_per_token_s >= (est.latency_per_token_s + margin) * (1 - FP)
    assert bounds_failures(prep, des.latency_per_token_s) == []


def test_analytic_imports_no_simulator_cost_or_queueing_code():
    """Independence is a property of the source: only configs, the result container, and (type-only) the
    prepared inputs; the DRAM device preset's timing table where the DReX config names one."""
    tree = ast.parse(ANALYTIC_SOURCE.read_text())
    allowed = {
        "__future__",
        "math",
        "dataclasses",
        "typing",
        "cemsim.config.components",
        "cemsim.config.system",
        "cemsim.sim.result",
        "cemsim.sim.simulate",  # under TYPE_CHECKING only, checked below
        "cemsim.dram",  # load_dram_spec: the device's timing table
    }
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.add(node.module)
            if node.module == "cemsim.sim.result":
                assert [a.name for a in node.names] == ["SimResult"]
            if node.module == "cemsim.dram":
                assert [a.name for a in node.names] == ["load_dram_spec"]
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    assert found <= allowed, found - allowed
    guarded = [n for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)]
    assert any("cemsim.sim.simulate" in ast.unparse(n) for n in guarded)
    assert "cemsim.sim.simulate" not in ast.unparse(tree.body[: tree.body.index(guarded[0])])


def test_the_package_exports_the_analytic_module_not_a_function():
    import cemsim.sim
    import cemsim.sim.analytic as module

    assert cemsim.sim.analytic is module and callable(module.analytic)


def test_fifo_makespan_by_hand():
    # jobs released at 0, 1, 1.5 needing 2, 1, 1: served 0-2, 2-3, 3-4
    assert fifo_makespan([1.5, 0.0, 1.0], [1.0, 2.0, 1.0]) == 4.0
    # a late job after the server idles: 0-1, then 5-6
    assert fifo_makespan([0.0, 5.0], [1.0, 1.0]) == 6.0


def test_drex_stage_times_from_first_principles_match_the_paper():
    """The analytic model derives the bitmap read from the channel's bus (128 banks x 128 keys / 8 bits =
    2 KiB per pass over 17 GB/s); DReX (ISCA 2025) reports 120.4 ns. Bitmap generation D x 1.25 ns for
    Llama-3-8B's D = 128 with 4 query heads per KV head (one pass of up to 16): 160 ns."""
    cem = load(DREX).cem
    rates = DrexRates(cem, head_dim=128, group=4, key_bytes=256)
    derived = 128 * 128 / 8 / cem.channel_bandwidth
    assert derived == pytest.approx(120.4e-9, rel=2e-3) and rates.bitmap_read == pytest.approx(
        120.4e-9, rel=2e-3
    )
    assert rates.bitmap_generation == pytest.approx(160e-9)
    assert rates.slice_keys == 131_072 and rates.keys_per_row == 64
    # a slice's 2,048 survivors, one per row, and 1,024 values (test_validation's hand case): the estimate's
    # rows are the uniform expectation, the bounds bracket the DES's 111,917.6 ns
    span = rates.service(131_072, 2048, 1024)
    assert span.lower <= 111_917.6e-9 <= span.upper
    assert rates.expected_rows(2048, 131_072) == pytest.approx(2048 * (1 - (1 - 1 / 64) ** 64), rel=1e-12)


def test_rank_switch_and_refresh_pause_by_hand():
    """LPDDR5X-8533 (tCK 0.9375 ns) under RoBaRaCoCh: consecutive rows of a channel lie in other ranks, so a
    row's first read waits nBL + nRTRS = 4 CK for the bus, as long as tCCD_L. With 21.7 reads per row, the 32
    reads in flight never reach the same rank's next row (4 rows on): both ends are 4 CK per read. At 5 %
    (3.2 reads per row) they do, and the fast end is tCCD_S (2 CK). An all-bank refresh pauses the reads for
    tRTP + tRPab + tRFC + tRCD = 8 + 23 + 299 + 20 CK every tREFI = 4,167 CK."""
    tck = 0.9375e-9
    cem = load(DREX).cem
    rates = DrexRates(cem, head_dim=64, group=4, key_bytes=128)
    assert rates.row_switch == pytest.approx(4 * tck) and rates.reads_in_flight == 32
    reads = 44_545 / 2  # 128-byte keys: 4 bursts over 8 channels
    assert rates.column_spacing(44_545, 1024) == pytest.approx((reads * 4 * tck, reads * 4 * tck))
    fast, slow = rates.column_spacing(6554, 1024)  # 5 % of 1,024 rows of 128 keys: 3,277 reads
    assert fast == pytest.approx(3277 * 2 * tck) and slow == pytest.approx(3277 * 4 * tck)
    assert rates.dram.refresh == pytest.approx(350 / (4167 - 350))
    # with the bank right above the column, consecutive rows change bank group: tCCD_S apart
    other = load(DREX, **{"cem.layout.key_mapping": "RoRaBaCoCh"}).cem
    assert DrexRates(other, head_dim=64, group=4, key_bytes=128).row_switch == pytest.approx(2 * tck)


def synthetic_prep(hw: str, over: dict[str, object], context: int, survival: float, batch: int) -> Prepared:
    """A shipped system with overrides, on two synthetic steps of uniform survival (k = 64)."""
    system = load(REPO / "hwconfigs" / f"{hw}.yaml", **over)
    header = make_header(system.geometry, k=64)
    steps = [make_step(header, context, survival=survival, step=i) for i in range(2)]
    return prepare(system, header, steps, batch=batch)


# derandomized: CI replays the same 12 systems every run (the draw follows this test's source, so an edit
# draws anew). Counterexamples it found are pinned in test_cases_once_under_the_lower_bound.
@settings(max_examples=12, deadline=None, derandomize=True, database=None)
@given(
    hw=st.sampled_from(["h100-drex", "h100-host-offload-sparse", "h100-host-offload", "h100x2"]),
    model=st.sampled_from(["llama3-1b", "smollm2-135m"]),
    context=st.integers(2048, 65_536),
    batch=st.integers(1, 4),
    survival=st.floats(0.0, 0.5),
    lanes=st.sampled_from([1, 2]),
    depth=st.sampled_from([1, 4, 512]),
    buffers=st.sampled_from([1, 512]),
    scratchpad=st.sampled_from(["64 KiB", "2 MiB"]),
)
def test_des_always_within_the_bounds(hw, model, context, batch, survival, lanes, depth, buffers, scratchpad):
    over: dict[str, object] = {"workload.model": model}
    if hw == "h100-drex":
        over |= {
            "cem.request_queue_depth": depth,
            "cem.response_buffers": buffers,
            "cem.nma.address_scratchpad": scratchpad,
        }
    if hw != "h100x2":
        over |= {"gpu.count": lanes, "gpu.parallelism": "data"}
    prep = synthetic_prep(hw, over, context, survival, batch)
    des = simulate(prep)
    assert des.fits == analytic(prep).fits
    if des.fits:
        assert bounds_failures(prep, des.latency_per_token_s) == []


@pytest.mark.parametrize("hw", HWCONFIGS, ids=[p.stem for p in HWCONFIGS])
def test_capacity_agrees_with_the_simulator_on_every_fit_boundary(hw):
    """Weights, KV and selection data against each memory, written twice: the same verdict over a grid of
    contexts and batches that crosses every shipped system's limits (HBM at 128K-1M, host and CEM beyond)."""
    from cemsim.sim.analytic import capacity, system_kind
    from cemsim.sim.capacity import check_fit
    from cemsim.sim.plan import workload_sizes

    system = load(hw)
    header = make_header(system.geometry, policy=system.workload.attention.policy)
    sizes = workload_sizes(system, header)
    kind = system_kind(system)
    verdicts = set()
    for context in (4096, 65536, 131072, 262144, 524288, 1 << 20, 1 << 22):
        for batch in (1, 2, 4, 16, 64, 256):
            window, sinks = min(1024, context), 16
            des = check_fit(system, kind, sizes, context, batch, window, sinks).fits
            assert (capacity(system, kind, context, batch, window, sinks) == []) == des, (context, batch)
            verdicts.add(des)
    assert verdicts == {True, False}  # the grid crosses the limit


GEMMA_TRACE = REPO / "traces" / "gemma3-270m-32752.parquet"


@pytest.mark.parametrize(
    "hw", ["h100", "h100-sparse-hbm", "h100-host-offload", "h100-host-offload-sparse", "h100-drex"]
)
def test_sliding_window_layers_on_a_real_gemma_capture(hw):
    """Gemma 3 270M's real capture (15 sliding layers of 512 keys, 3 full ones): the sliding layers attend
    on the GPU from HBM in every system, only the full layers' KV lives where kv_location says. GPU, host
    and link physics agree as above; on DReX this real trace's survivors are not uniform within a head (the
    estimate's assumption), so there the DES must lie within the bounds."""
    from cemsim.trace.format import TraceReader

    system = load(REPO / "hwconfigs" / f"{hw}.yaml", **{"workload.model": "gemma3-270m"})
    with TraceReader(GEMMA_TRACE) as reader:
        header, steps = reader.header, list(reader.iter_steps())[:2]
    prep = prepare(system, header, steps, batch=1)
    if prep.kind == "cem":
        assert bounds_failures(prep, simulate(prep).latency_per_token_s) == []
    else:
        assert agreement_failures(prep) == []


FOUND_UNDER_LOWER_BOUND = [  # (model, context, survival, depth, buffers, scratchpad, DRAM detail)
    ("llama3-1b", 7251, 0.25, 512, 512, "64 KiB", "sampled"),  # clean-clone CI run, 2026-12-02
    ("smollm2-135m", 8321, 0.125, 4, 1, "2 MiB", "full"),
]


# Regression: the DES was 0.006 % under the lower bound here because the analytic model charged a 128-byte key
# (head dim 64) a 32-byte burst in all 8 channels of its package, twice the bytes it moves (fixed 2026-12-02).
@pytest.mark.parametrize(
    "case", FOUND_UNDER_LOWER_BOUND, ids=[f"{c[0]}-{c[1]}-{c[5]}" for c in FOUND_UNDER_LOWER_BOUND]
)
def test_cases_once_under_the_lower_bound(case):
    model, context, survival, depth, buffers, scratchpad, detail = case
    over = {
        "workload.model": model,
        "cem.request_queue_depth": depth,
        "cem.response_buffers": buffers,
        "cem.nma.address_scratchpad": scratchpad,
        "cem.dram_detail": detail,
        "gpu.count": 1,
        "gpu.parallelism": "data",
    }
    prep = synthetic_prep("h100-drex", over, context, survival, batch=1)
    assert bounds_failures(prep, simulate(prep).latency_per_token_s) == []
