"""What a simulation observes: counters by component, busy time, phase times, spans for the timeline.

One Recorder per simulation (components receive it; nothing is global). Counters are plain floats keyed
by dotted names shaped like the config tree ("gpu.hbm", "cem.lpddr", "link.to_device", ...), so
stats can be nested back into a tree that mirrors the YAML.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Span:
    start: float
    end: float
    track: str  # "gpu0", "nma3", "link.to_device", ...
    name: str  # "qkv_proj", "filter_epoch", "response", ...
    args: dict[str, Any] = field(default_factory=dict)


class Recorder:
    def __init__(self) -> None:
        self.bytes: dict[str, float] = defaultdict(float)  # bytes moved per component
        self.ops: dict[str, float] = defaultdict(float)  # flops / MACs / active PFU-seconds per component
        self.busy: dict[str, float] = defaultdict(float)  # seconds a resource was held
        self.phase: dict[str, float] = defaultdict(float)  # critical-path seconds by phase (sum over steps)
        self.user_latency: list[float] = []  # per (user, layer): attention issue -> last response, seconds
        self.spans: list[Span] = []
        self.record_spans = False

    def add_bytes(self, key: str, n: float) -> None:
        self.bytes[key] += n

    def add_ops(self, key: str, n: float) -> None:
        self.ops[key] += n

    def add_busy(self, key: str, seconds: float) -> None:
        self.busy[key] += seconds

    def add_phase(self, key: str, seconds: float) -> None:
        self.phase[key] += seconds

    def span(self, start: float, end: float, track: str, name: str, **args: Any) -> None:
        if self.record_spans:
            self.spans.append(Span(start, end, track, name, args))


def nest(flat: dict[str, float]) -> dict[str, Any]:
    """{"gpu.hbm": 1.0} -> {"gpu": {"hbm": 1.0}}; a key that is both a leaf and a node keeps the leaf as "total"."""
    tree: dict[str, Any] = {}
    for key, value in sorted(flat.items()):
        node = tree
        parts = key.split(".")
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                child = node[p] = {"total": child}
            node = child
        if isinstance(node.get(parts[-1]), dict):
            node[parts[-1]]["total"] = value
        else:
            node[parts[-1]] = value
    return tree
