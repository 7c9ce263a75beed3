"""`cemsim dram replay CONFIG STREAM`: replay a request stream on the command-level DRAM engine."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

dram_app = typer.Typer(help="Command-level DRAM engine (issue 13).", no_args_is_help=True)
console = Console()

JSON_KEYS = (
    "read_bandwidth_bytes_per_s",
    "read_fraction_of_peak",
    "mean_read_latency_s",
    "p50_read_latency_s",
    "p95_read_latency_s",
    "latency_basis",
    "row_hit_rate",
    "commands",
    "simulated_s",
    "energy_j",
    "energy_breakdown_j",
    "requests",
    "reads",
    "writes",
    "channels",
    "spec",
    "controller",
)


@dram_app.command("replay")
def replay_cmd(
    config: Annotated[str, typer.Argument(help="DRAM preset name, cemsim DRAM YAML, or DRAMsim3 .ini")],
    stream: Annotated[Path, typer.Argument(help="DRAMsim3 text trace (0xADDR READ|WRITE CYCLE) or .npz")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
) -> None:
    """Replay STREAM on CONFIG and print bandwidth, latency, row-hit rate, command counts and energy."""
    from cemsim.dram import decode_address, load_dram_spec, replay
    from cemsim.dram.streams import read_stream

    spec = load_dram_spec(config)
    s = read_stream(stream)
    coords = decode_address(spec, s.addr)
    t0 = time.perf_counter()
    res = replay(
        spec,
        rank=coords["rank"],
        bankgroup=coords["bankgroup"],
        bank=coords["bank"],
        row=coords["row"],
        column=coords["column"],
        is_write=s.is_write,
        channel=coords["channel"],
        arrival=s.arrival,
        depth=s.depth,
        key_id=s.key_id,
    )
    stats = res.stats
    out = {k: stats[k] for k in JSON_KEYS}
    out["wall_s"] = time.perf_counter() - t0
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(title=f"{spec.name} ({spec.controller.name}) <- {stream.name}")
    table.add_column("statistic", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_row("requests (reads / writes)", f"{out['requests']} ({out['reads']} / {out['writes']})")
    table.add_row("read bandwidth", f"{out['read_bandwidth_bytes_per_s'] / 1e9:.3f} GB/s")
    table.add_row("fraction of peak", f"{out['read_fraction_of_peak']:.3f}")
    table.add_row(f"read latency mean ({out['latency_basis']})", f"{out['mean_read_latency_s'] * 1e9:.1f} ns")
    table.add_row(
        "read latency p50 / p95",
        f"{out['p50_read_latency_s'] * 1e9:.1f} / {out['p95_read_latency_s'] * 1e9:.1f} ns",
    )
    table.add_row("row-hit rate (reads)", f"{out['row_hit_rate']:.3f}")
    table.add_row("commands", ", ".join(f"{k} {v}" for k, v in out["commands"].items() if v))
    table.add_row("simulated time", f"{out['simulated_s'] * 1e6:.3f} us")
    table.add_row("energy", f"{out['energy_j'] * 1e6:.3f} uJ" if out["energy_j"] else "not in this config")
    if out["energy_j"]:
        parts = {k.removesuffix("_j"): v for k, v in out["energy_breakdown_j"].items() if v}
        table.add_row("energy by part", ", ".join(f"{k} {v * 1e6:.3f}" for k, v in parts.items()) + " uJ")
    table.add_row("wall time", f"{out['wall_s']:.3f} s")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(dram_app, name="dram")
