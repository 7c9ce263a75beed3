"""Shared look of every chart: the Agg backend, one colour per system, token-count ticks, atomic saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, same output on a laptop and a CI box

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from cemsim.atomic import atomic_path
from cemsim.sweep.store import ordinary_permissions
from cemsim.sweep.summary import tokens_label

# Fixed colours for the shipped systems so a system looks the same on every chart; others cycle after.
KNOWN = {
    "h100": "#4d4d4d",
    "h100x2": "#1f77b4",
    "h100-host-offload": "#9467bd",
    "h100-host-offload-sparse": "#e377c2",
    "h100-sparse-hbm": "#2ca02c",
    "h100-drex": "#d62728",
}
CYCLE = ["#ff7f0e", "#17becf", "#bcbd22", "#8c564b", "#7f7f7f", "#aec7e8"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
FORMATS = ("png", "svg")

plt.rcParams.update(
    {
        "figure.dpi": 110,
        "savefig.dpi": 150,
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "legend.fontsize": 9,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "svg.fonttype": "none",
    }
)


def system_colors(systems: list[str]) -> dict[str, str]:
    out, spare = {}, iter(CYCLE * 4)
    for s in systems:
        out[s] = KNOWN.get(s) or next(spare)
    return out


# One colour family per top-level component (gpu.*, cem.*, ...) so a stack reads by where the energy goes.
FAMILIES = {"gpu": "Blues", "hbm": "Blues", "host_memory": "Purples", "link": "Oranges", "cem": "Reds"}
SPARE_FAMILIES = ["Greens", "Greys", "YlOrBr", "BuGn"]


def component_colors(columns: list[str], prefix: str) -> dict[str, tuple]:
    """Colours for flattened breakdown columns (prefix.family.part): shades of one map per family."""
    families: dict[str, list[str]] = {}
    for c in columns:
        families.setdefault(c.removeprefix(prefix + ".").split(".")[0], []).append(c)
    out, spare = {}, iter(SPARE_FAMILIES * 3)
    for fam, cols in families.items():
        cmap = plt.get_cmap(FAMILIES.get(fam) or next(spare))
        for i, c in enumerate(cols):
            out[c] = cmap(0.85 - 0.5 * i / max(1, len(cols) - 1) if len(cols) > 1 else 0.7)
    return out


def system_order(systems) -> list[str]:
    """Shipped systems in a fixed order (baseline first, CEM last), then any others alphabetically."""
    present = list(dict.fromkeys(systems))
    known = [s for s in KNOWN if s in present]
    return known + sorted(s for s in present if s not in KNOWN)


TOKENS_FORMATTER = FuncFormatter(lambda x, _pos: tokens_label(x) if x > 0 else "")


def save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write stem.png and stem.svg atomically; close the figure."""
    paths = []
    for fmt in FORMATS:
        target = Path(out_dir) / f"{stem}.{fmt}"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, bbox_inches="tight")
            ordinary_permissions(tmp)
        paths.append(target)
    plt.close(fig)
    return paths
