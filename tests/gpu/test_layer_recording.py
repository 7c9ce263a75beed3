"""The order in which FusedLongSight records a layer's launches into a CUDA graph (``capture`` and ``record`` share
``_record``), checked on the CPU with stand-in streams and events: the band on a side branch forked before the
select (or, with ``Config.band_late``, after it and before the top-k), joined before the picks' launch; ls_layer
alone. The GPU tests replay the real graphs; this pins their shape where no GPU is."""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

import pytest

from cemsim.gpu.fused import Config, FusedLongSight


class FakeStream:
    """A stream as _record uses it: a context that makes it current, and waits on events."""

    current: ClassVar[list[str]] = []

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def __enter__(self) -> FakeStream:
        FakeStream.current.append(self.name)
        return self

    def __exit__(self, *exc: object) -> None:
        FakeStream.current.pop()

    def wait_event(self, event: FakeEvent) -> None:
        self.log.append(f"{self.name} waits {event.name}")


class FakeEvent:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def record(self, stream: FakeStream) -> None:
        self.log.append(f"{self.name} on {stream.name}")


def recorded(names: list[str], band_late: bool) -> list[str]:
    log: list[str] = []
    stages = {n: (lambda n=n: log.append(f"{n} on {FakeStream.current[-1]}")) for n in names}
    owner = SimpleNamespace(config=Config(band_late=band_late))
    FusedLongSight._record(
        owner,  # type: ignore[arg-type]  # _record reads only config
        stages,
        FakeStream("main", log),
        FakeStream("side", log),
        FakeEvent("fork", log),
        FakeEvent("join", log),
    )
    assert FakeStream.current == []
    return log


BRANCH = ["fork on main", "side waits fork", "band on side", "join on side"]


@pytest.mark.parametrize("band_late", [False, True])
def test_band_branches_before_the_select_unless_late(band_late: bool) -> None:
    log = recorded(["band", "select", "topk"], band_late)
    body = ["select on main", *BRANCH] if band_late else [*BRANCH, "select on main"]
    assert log == [*body, "topk on main", "main waits join"]


def test_split_select_and_picks_apart() -> None:
    log = recorded(["band", "filter", "score", "topk", "picks"], band_late=True)
    assert log == [
        "filter on main",
        "score on main",
        *BRANCH,
        "topk on main",
        "main waits join",
        "picks on main",
    ]


def test_late_band_without_a_region_branches_first() -> None:
    # no select (an empty sparse region): nothing to be late behind, so the band forks first
    assert recorded(["band", "topk"], band_late=True) == [*BRANCH, "topk on main", "main waits join"]


def test_one_launch_layer_records_alone() -> None:
    assert recorded(["layer"], band_late=True) == ["layer on main"]


@pytest.mark.parametrize(
    "key",
    ["fused16/fan2s/64/fold/pdl/late/chain", "fused16/fan2/64/fold/pdl/late", "split/sample/128/apart/chain"],
)
def test_config_keys_name_the_launch_flags(key: str) -> None:
    """The benchmarks' configuration keys carry every launch flag (programmatic top-k, the band beside it, the
    select chained after the previous layer) there and back."""
    from cemsim.gpu.fused import config_key, parse_config_key

    c = parse_config_key(key)
    assert config_key(c) == key
    assert (c.pdl, c.band_late, c.chain) == ("/pdl" in key, "/late" in key, "/chain" in key)


class FakeKernel:
    """A CuPy RawKernel as stages() launches it: called with (grid, block, args, shared_mem=...)."""

    def __init__(self, name: str, log: list[tuple[str, bool]]) -> None:
        self.name, self.log = name, log

    def __call__(self, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
        self.log.append((self.name, False))


def launches(config: Config, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """(kernel, programmatic) of each launch of one run of the stages, on a pipeline built without a GPU: its
    kernels stand-ins, cuLaunchKernelEx (the programmatic path) recorded instead of called."""
    from cemsim.gpu import fused

    log: list[tuple[str, bool]] = []
    monkeypatch.setattr(fused, "programmatic_launch_available", lambda: True)
    monkeypatch.setattr(
        fused,
        "_launch_ex",
        lambda f, grid, block, args, shared_mem=0, pdl=False, cluster=0: log.append((f.name, pdl)),
    )
    p = object.__new__(FusedLongSight)
    p.shape = fused.Shape(1, 8, 4, 128, 1 << 17, 1024, 16, 1024, cap=10500)
    p.config, p.method, p.block_keys, p.sms, p.candidates = config, "popc", 2048, 132, 4096
    p.smem_keys = p.smem_keys_cluster = 1024
    for name in ("tally", "idx", "scores", "pick_pos", "pick_score", "pick_count", "part_ml", "part_o", "done",
                 "count", "out", "lse"):  # fmt: skip
        setattr(p, name, None)
    p.f_select, p.f_filter, p.f_score = (FakeKernel(n, log) for n in ("select", "filter", "score"))
    p.f_select2 = {r: FakeKernel(f"select2_r{r}", log) for r in (4, 16, fused.SELECT_ASYNC)}
    p.f_attn = {ch: FakeKernel("attn", log) for ch in (64, 128)}
    p.f_topk_multi = {v: FakeKernel(f"topk_{v}", log) for v in fused.MULTI_BLOCK_CTAS}
    p.f_topk_sample = {fold: FakeKernel("topk_sample", log) for fold in (True, False)}
    p.f_topk = {(cl, fold): FakeKernel("topk", log) for cl in (True, False) for fold in (True, False)}
    for stage in p.stages(*(None,) * 6).values():
        stage()
    return log


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (
            "fused16/fan2s/64/fold/pdl/late/chain",
            [("attn", False), ("select2_r16", True), ("topk_fan2s", True)],
        ),
        ("fused16/fan2s/64/fold/pdl/late", [("attn", False), ("select2_r16", False), ("topk_fan2s", True)]),
        (
            "fused/sample/64/apart/chain",
            [("attn", False), ("select", True), ("topk_sample", False), ("attn", False)],
        ),
        (
            "split/atomic/128/apart/pdl/chain",
            [("attn", False), ("filter", True), ("score", False), ("topk", True), ("attn", True)],
        ),
    ],
)
def test_each_launch_is_programmatic_only_where_its_flag_says(
    key: str, expected: list[tuple[str, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The band never waits programmatically (nothing is ahead of it); the layer's first kernel does under chain;
    the top-k and the picks' launch under pdl; the split form's score launch never (it needs the filter's tally)."""
    from cemsim.gpu.fused import parse_config_key

    assert launches(parse_config_key(key), monkeypatch) == expected
