"""Chrome / Perfetto trace-event JSON of one simulated decode step (opens in ui.perfetto.dev).

One process per component (GPU lanes, NMAs, link directions, host memory), one complete event ("ph": "X")
per span, times in microseconds as the format asks.
"""

from __future__ import annotations

import json
import os
from typing import Any

from cemsim.atomic import atomic_write_text
from cemsim.sim.stats import Span

US = 1e6


def _track_order(track: str) -> tuple[int, str]:
    order = ("gpu", "nma", "link", "host")
    for i, prefix in enumerate(order):
        if track.startswith(prefix):
            return i, track
    return len(order), track


def trace_events(spans: list[Span], system: str) -> dict[str, Any]:
    tracks = sorted({s.track for s in spans}, key=_track_order)
    pid = {t: i + 1 for i, t in enumerate(tracks)}
    events: list[dict[str, Any]] = []
    for t in tracks:
        events.append({"ph": "M", "name": "process_name", "pid": pid[t], "tid": 0, "args": {"name": t}})
        events.append(
            {"ph": "M", "name": "process_sort_index", "pid": pid[t], "tid": 0, "args": {"sort_index": pid[t]}}
        )
    for s in sorted(spans, key=lambda s: (s.start, pid[s.track])):
        events.append(
            {
                "ph": "X",
                "name": s.name,
                "cat": s.track.split(".")[0],
                "pid": pid[s.track],
                "tid": 0,
                "ts": s.start * US,
                "dur": (s.end - s.start) * US,
                "args": s.args,
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ns", "otherData": {"system": system, "tool": "cemsim"}}


def write_timeline(path: str | os.PathLike[str], spans: list[Span], system: str) -> None:
    atomic_write_text(path, json.dumps(trace_events(spans, system)))


def event_tuples(spans: list[Span], ndigits: int = 3) -> list[tuple[float, str, str]]:
    """(start in ns, component, event) in time order: the shape golden tests pin."""
    return sorted((round(s.start * 1e9, ndigits), s.track, s.name) for s in spans)
