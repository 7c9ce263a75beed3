"""What the simulator replays: the workload's attention settings checked against the trace's.

The workload section (config/workload.py, AttentionConfig) is the single source of the settings. The trace
supplies what a run measured under its own settings (survivors per head and block, values fetched); where
those settings differ, the replay either rescales by a stated rule, recorded in the result's ``attention``
record, or refuses with an error naming both values:

  policy       dense and window need only the context length: any trace replays on them. longsight,
               oracle-topk and quest need a trace of that policy (their survivors are what it measured);
               another policy's trace is refused. Quest has no unit on a CEM device and is refused there.
  window/sinks must equal the trace's for the sparse policies (they set which keys are considered).
  k            workload.attention.k (default LongSight's schedule, at most cem.nma.topk_max on DReX). Values
               fetched rescale with k at a fixed union share (rule "k-proportional"); selection policies
               (oracle-topk, Quest) select k-proportionally many keys.
  topk_scope   query_head: the union of the group's top-k (the artifact); kv_group: one top-k per KV group,
               values = min(k, survivors) exactly. A kv_group trace cannot give the query-head union: refused.
  thresholds   None: the trace's. Otherwise survival per head moves by the trace's own measured survivors
               at every threshold when it records them (extra["scf_survival_by_threshold"]), else by the
               binomial concordance rule (survival.py) within +-4 of its thresholds; a trace without
               thresholds is refused.
  page_size    Quest pages: the captured traces use 16-key pages; another size is refused.

Data movement per policy and system (plan.py): dense reads every key and value where the KV lives; window
reads the window and sinks (held in HBM on every system); longsight filters by sign bits (GPU, or DReX's
PFUs) and reads survivors' keys and top-k values; quest reads every page's min/max metadata and the
selected pages' keys and values; oracle-topk reads only the exact top-k's keys and values, with no
selection cost on the GPU: an upper bound, labelled so in the result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cemsim.config.components import DReXConfig
from cemsim.config.system import SystemConfig
from cemsim.errors import CemsimError
from cemsim.trace.records import TraceHeader

SELECTION_POLICIES = ("longsight", "oracle-topk", "quest")  # need a trace of their own policy
QUEST_CAPTURE_PAGE = 16  # cemsim.attention.policies.PAGE: the page size every Quest capture used
# The binomial concordance rule (survival.py) against measured per-head survival at every threshold
# (tests/sim/data/smollm2-scf-survival-2k.json): within +-4 of the traced thresholds the total survival it
# predicts is within 17 % of the measured; at +8 it is 14x too low (a real head's tail is heavier than
# one binomial). Shifts beyond this are refused rather than extrapolated.
THRESHOLD_RULE_MAX_SHIFT = 4


@dataclass
class AttentionSettings:
    """The settings one replay runs with, and where each came from (recorded in the result)."""

    policy: str
    trace_policy: str
    kv_location: str
    window: int
    sinks: int
    k: int
    trace_k: int
    topk_scope: str
    trace_topk_scope: str
    page_size: int | None
    thresholds: np.ndarray | None  # [L, H] the workload's, when it sets any
    thresholds_from: str  # "trace" | "workload.attention.threshold" | the thresholds file
    filter_ratio: float | None
    upper_bound: bool
    rules: list[str] = field(default_factory=list)  # rescaling rules applied, in words
    threshold_table: np.ndarray | None = None  # [L, H, D + 2] the trace's survivors at every threshold
    survival_source: str = ""  # filled per context by survival.py
    replayed_filter_ratio: float | None = (
        None  # keys considered / survivors over every replayed head and step
    )

    def record(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("threshold_table")
        th = d.pop("thresholds")
        d["thresholds_mean"] = None if th is None else float(np.mean(th))
        d["rules"] = "; ".join(self.rules) or None
        return d


def _thresholds(system: SystemConfig, header: TraceHeader, where: str) -> tuple[np.ndarray | None, str]:
    att = system.workload.attention
    shape = (header.layers, header.kv_heads)
    if att.threshold is not None:
        return np.full(shape, att.threshold, np.int64), f"workload.attention.threshold = {att.threshold}"
    if att.thresholds_file is not None:
        from cemsim.attention.thresholds import load_thresholds  # heavy package: only when a file is named

        tf = load_thresholds(att.thresholds_file, layers=header.layers, kv_heads=header.kv_heads)
        th = np.asarray(tf.thresholds, np.int64)
        if th.shape != shape:
            raise CemsimError(
                f"workload.attention.thresholds_file holds thresholds of shape {th.shape}, the trace's model "
                f"has {shape} (layers, KV heads)",
                where=att.thresholds_file,
            )
        return th, f"workload.attention.thresholds_file = {att.thresholds_file}"
    return None, "trace"


SCF_SURVIVAL_KEY = "scf_survival_by_threshold"  # header.extra: [L][H][D + 2] survivors at T = 0..D + 1


def _survival_table(header: TraceHeader, where: str) -> np.ndarray | None:
    """The per-head survivors at every threshold a trace may record in ``extra`` (summed over its steps'
    sparse regions): with it, survival moves between thresholds by measurement, not by a model."""
    raw = header.extra.get(SCF_SURVIVAL_KEY)
    if raw is None:
        return None
    table = np.asarray(raw, dtype=np.float64)
    if table.shape != (header.layers, header.kv_heads, header.head_dim + 2) or (table < 0).any():
        raise CemsimError(
            f"the trace's {SCF_SURVIVAL_KEY} has shape {table.shape}, expected "
            f"{(header.layers, header.kv_heads, header.head_dim + 2)} non-negative counts",
            where=where,
        )
    return table


def resolve(system: SystemConfig, header: TraceHeader, context: int, where: str) -> AttentionSettings:
    """Check the workload's attention settings against the trace's; raise CemsimError where no stated
    rule carries the trace over."""
    att = system.workload.attention
    policy, tpol = att.policy, header.policy
    loc = system.kv_location
    if policy in SELECTION_POLICIES and tpol != policy:
        raise CemsimError(
            f"the workload's attention policy is {policy!r} but the trace's is {tpol!r}: a {tpol} trace "
            f"holds no {policy} selection to replay. Capture or project a {policy} trace "
            f"(`cemsim capture --policy {policy}`), or set workload.attention.policy to dense or window, "
            "which need only the context length",
            where=where,
        )
    if policy == "quest" and loc == "cem":
        raise CemsimError(
            "workload.attention.policy 'quest' on a CEM system (kv_location cem): DReX filters by sign bits "
            "in its PFUs and has no unit that reads Quest's page bounds; simulate Quest with kv_location "
            "hbm or host_memory",
            where=where,
        )
    rules: list[str] = []
    sparse = policy in SELECTION_POLICIES
    if sparse:
        for name, mine, theirs in (("window", att.window, header.window), ("sinks", att.sinks, header.sinks)):
            if mine != theirs:
                raise CemsimError(
                    f"workload.attention.{name} is {mine} but the trace was captured with {name} {theirs}: "
                    f"the {name} sets which keys the sparse stage considered, and no rule moves survivors "
                    f"across it. Set workload.attention.{name} to {theirs}, or capture with {name} {mine}",
                    where=where,
                )
    k = att.k_for(context)
    if sparse and isinstance(system.cem, DReXConfig) and loc == "cem" and k > system.cem.nma.topk_max:
        raise CemsimError(
            f"workload.attention.k at {context} tokens is {k}, over the NMA's top-k unit "
            f"(cem.nma.topk_max = {system.cem.nma.topk_max}); set workload.attention.k to at most "
            f"{system.cem.nma.topk_max}",
            where=where,
        )
    scope = att.topk_scope
    if sparse and scope == "query_head" and header.topk_scope == "kv_group":
        raise CemsimError(
            "workload.attention.topk_scope is 'query_head' but the trace kept one top-k per KV group: the "
            "union of the group's per-query-head top-k cannot be recovered from it. Set topk_scope to "
            "kv_group, or capture per query head",
            where=where,
        )
    if sparse and k != header.k:
        if policy == "longsight":
            rules.append(
                f"k {header.k} (trace) -> {k}: values fetched x {k}/{header.k} at the trace's union share, "
                "capped at the survivors"
            )
        else:
            rules.append(
                f"k {header.k} (trace) -> {k}: keys selected x {k}/{header.k}, capped at those considered"
            )
    if sparse and scope != header.topk_scope:
        rules.append(f"topk_scope {header.topk_scope} (trace) -> {scope}: values = min(k, survivors)")
    page_size = None
    if policy == "quest":
        page_size = att.page_size
        if page_size != QUEST_CAPTURE_PAGE:
            raise CemsimError(
                f"workload.attention.page_size is {page_size} but Quest traces are captured with "
                f"{QUEST_CAPTURE_PAGE}-key pages; no rule moves a page selection to another page size. "
                f"Set workload.attention.page_size to {QUEST_CAPTURE_PAGE}",
                where=where,
            )
    thresholds, th_from = _thresholds(system, header, where) if policy == "longsight" else (None, "trace")
    if thresholds is not None:
        if header.thresholds is None:
            raise CemsimError(
                f"{th_from}, but the trace records no SCF thresholds"
                + (f" (projected from {header.extra.get('projected_from')})" if header.projected else "")
                + ", so survival cannot be moved to the workload's: leave workload.attention.threshold "
                "and thresholds_file unset to replay the trace's survival, or set "
                "workload.attention.filter_ratio for a survival scenario",
                where=where,
            )
        traced = np.asarray(header.thresholds, np.int64)
        shift = thresholds - traced
        worst = np.unravel_index(int(np.argmax(np.abs(shift))), shift.shape)
        table = _survival_table(header, where)
        if table is None and abs(int(shift[worst])) > THRESHOLD_RULE_MAX_SHIFT:
            raise CemsimError(
                f"{th_from} sets layer {worst[0]}, KV head {worst[1]} to threshold {int(thresholds[worst])}, "
                f"but the trace was captured at {int(traced[worst])} there: the binomial concordance rule "
                f"that moves survival between thresholds is validated within +-{THRESHOLD_RULE_MAX_SHIFT} "
                "of the traced thresholds only. Give per-head thresholds near the trace's (a thresholds "
                "file), capture a trace at these thresholds, or set workload.attention.filter_ratio",
                where=where,
            )
        if np.array_equal(traced, thresholds):
            thresholds, th_from, table = None, "trace", None
        else:
            rules.append(
                f"thresholds: trace mean {traced.mean():.1f} -> {thresholds.mean():.1f}: survival per head "
                + (
                    "x the trace's measured survivors at the new threshold / at its own"
                    if table is not None
                    else "by the binomial concordance rule"
                )
            )
    else:
        table = None
    filter_ratio = att.filter_ratio
    if filter_ratio is not None:
        if policy in ("dense", "window"):  # nothing filtered: the scenario does not apply (a sweep axis may
            rules.append(f"filter ratio {filter_ratio:g} not applicable: the {policy} policy filters nothing")
            filter_ratio = None  # cross every system), and the record says so
        elif policy != "longsight":
            raise CemsimError(
                f"workload.attention.filter_ratio is a LongSight survival scenario; the policy is {policy!r}, "
                "which selects about k keys per head whatever the ratio",
                where=where,
            )
        else:
            rules.append(f"filter ratio {filter_ratio:g}: survivors of every head scaled to it together")
    return AttentionSettings(
        policy=policy,
        trace_policy=tpol,
        kv_location=loc,
        window=att.window,
        sinks=att.sinks,
        k=k,
        trace_k=header.k,
        topk_scope=scope,
        trace_topk_scope=header.topk_scope,
        page_size=page_size,
        thresholds=thresholds,
        thresholds_from=th_from,
        threshold_table=table,
        filter_ratio=filter_ratio,
        upper_bound=policy == "oracle-topk",
        rules=rules,
    )
