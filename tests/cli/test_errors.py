"""Each kind of CLI failure, through `python -m cemsim.cli` (the console script's `main`):

usage errors exit 2 with click's usage text; user errors (CemsimError) exit 1 with one paragraph; internal
errors exit 1 with one line naming the exception and the file that holds the traceback; never a traceback
on the terminal."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DREX = "hwconfigs/h100-drex.yaml"


def cemsim(*args: str, env: dict[str, str] | None = None, code: str | None = None):
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "cemsim.cli", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, timeout=120, env={**os.environ, **(env or {})}
    )


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    """A small survival-law trace in Llama-3-8B geometry (the shipped hwconfigs' model)."""
    from cemsim.trace.format import TraceWriter
    from cemsim.trace.synthetic import synthetic_header, synthetic_steps

    path = tmp_path_factory.mktemp("tr") / "l8.parquet"
    header = synthetic_header("llama3-8b", k=256, text_source="synthetic (test)")
    with TraceWriter(path, header) as w:
        for rec in synthetic_steps(header, context=16384, steps=1):
            w.write(rec)
    return path


USAGE_ERRORS = [
    (["run"], "Missing argument 'HWCONFIG'"),
    (["run", "--bogus"], "No such option: --bogus"),
    (["run", DREX, "--trace", "t.parquet", "--batch", "x"], "Invalid value for '--batch'"),
    (["run", DREX, "--trace", "t.parquet", "--batch", "0"], "Invalid value for '--batch'"),
    (["run", DREX], "Missing option '--trace'"),
    (["config", "check"], "Missing argument 'FILE'"),
    (["config", "show", "--bogus"], "No such option"),
    (["trace", "info"], "Missing argument 'TRACE'"),
    (["trace", "project", "x.parquet", "--context", "1M"], "Missing option '--out'"),
    (["capture", "--tokens", "4K"], "Missing option '--decode-steps'"),
    (["eval", "--tokens", "many"], "Invalid value for '--tokens'"),
    (["tune", "--max-evals", "x"], "Invalid value for '--max-evals'"),
    (["sweep"], "Missing argument 'SPEC'"),
    (["plot", "results"], "Missing option '--out'"),
    (["demo", "--workers", "0"], "Invalid value for '--workers'"),
    (["no-such-command"], "No such command"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_errors_exit_2_with_usage_text(args: list[str], message: str) -> None:
    r = cemsim(*args)
    assert r.returncode == 2, r.stderr
    sub = " ".join(a for a in args[:2] if not a.startswith("-") and "/" not in a and a != "results")
    if args[0] != "no-such-command":
        assert f"Usage: cemsim {sub}" in r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_group_without_subcommand_shows_its_help_and_exits_2() -> None:
    r = cemsim("config")
    assert r.returncode == 2 and "check" in r.stderr + r.stdout and "Traceback" not in r.stderr


def test_version_and_help_exit_0() -> None:
    assert cemsim("--version").stdout.strip().startswith("cemsim ")
    r = cemsim("run", "--help")
    assert r.returncode == 0 and "--trace" in r.stdout


def test_user_error_is_one_paragraph_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\ngpu: [\n")
    r = cemsim("run", str(bad), "--trace", "t.parquet")
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and f"{bad}, line 3: malformed YAML" in r.stderr
    assert "\n\n" not in r.stderr.strip() and "Traceback" not in r.stderr


def test_internal_error_is_one_line_and_a_traceback_file(tmp_path: Path) -> None:
    # A bug stand-in: the config loader the command calls raises something no user input explains.
    code = (
        "import cemsim.commands.config_cmd as c\n"
        "def broken_loader(*a, **k):\n"
        "    raise KeyError('gpu.hbm')\n"
        "c.load_system = broken_loader\n"
        "from cemsim.cli import main\n"
        "main(['config', 'show', 'hwconfigs/h100.yaml'])\n"
    )
    r = cemsim(code=code, env={"CEMSIM_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("internal error: KeyError: 'gpu.hbm'")
    assert "Traceback" not in r.stderr + r.stdout
    report = Path(re.search(r"full traceback in (\S+\.txt)", lines[0]).group(1))
    assert report.parent == tmp_path / "cache" / "crashes"
    text = report.read_text()
    assert "Traceback (most recent call last)" in text and "broken_loader" in text
    assert "command: cemsim config show hwconfigs/h100.yaml" in text


def test_traceback_report_falls_back_to_the_temp_folder(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    from cemsim.errors import write_traceback_report

    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("CEMSIM_CACHE", str(blocker))
    try:
        raise ValueError("boom")
    except ValueError as exc:
        report = write_traceback_report(exc, ["cemsim", "x"])
    try:
        assert report.parent == Path(tempfile.gettempdir()) and "ValueError: boom" in report.read_text()
    finally:
        report.unlink()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("simulation.max_events=0", "--set simulation.max_events=0: Input should be greater than 0"),
        ("gpu.hbm.peak_bandwidth=3 TB", "--set gpu.hbm.peak_bandwidth=3 TB: '3 TB' is a size in bytes"),
        ("gpu.hbm.peak_bandwith=3 TB/s", "--set gpu.hbm.peak_bandwith=3 TB/s: unknown key 'peak_bandwith'"),
        ("name.x=1", "--set name.x=1: name is a value ('h100-drex'), not a section"),
    ],
)
def test_set_errors_name_the_set_argument(trace: Path, setting: str, message: str) -> None:
    r = cemsim("run", DREX, "--trace", str(trace), "--set", setting)
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert "h100-drex.yaml" not in r.stderr and "Traceback" not in r.stderr


def test_set_inside_a_replaced_section_names_the_set_and_the_field() -> None:
    from cemsim.config.loader import ConfigError, load_system

    with pytest.raises(ConfigError) as info:
        load_system(
            REPO / DREX,
            {"gpu.hbm": {"peak_bandwidth": "3 TB/s"}},
            {"gpu.hbm": "--set gpu.hbm={peak_bandwidth: 3 TB/s}"},
        )
    text = str(info.value)
    assert "--set gpu.hbm={peak_bandwidth: 3 TB/s}, field gpu.hbm.capacity: required field" in text
    assert "h100-drex.yaml" not in text


def test_a_file_error_still_names_the_file_when_sets_are_given(tmp_path: Path) -> None:
    from cemsim.config.loader import ConfigError, load_system

    own = tmp_path / "mine.yaml"
    own.write_text(f"base: {REPO / DREX}\nworkload:\n  model: no-such-model\n")
    with pytest.raises(ConfigError) as info:
        load_system(own, {"link.latency": "5 us"}, {"link.latency": "--set link.latency=5 us"})
    assert f"{own}, line 3, field workload.model: model 'no-such-model'" in str(info.value)
    assert "--set" not in str(info.value)


def test_a_good_set_reaches_the_config_and_its_provenance() -> None:
    from cemsim.config.loader import load_system

    lc = load_system(REPO / DREX, {"link.latency": "5 us"}, {"link.latency": "--set link.latency=5 us"})
    assert lc.system.link.latency == pytest.approx(5e-6)
    assert lc.provenance["link.latency"].tag == "setting"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trace", "project", "{trace}", "--context", "64K", "--out", "{tmp}"], "--out: {tmp} is a folder"),
        (["run", DREX, "--trace", "{trace}", "--timeline", "{tmp}"], "--timeline: {tmp} is a folder"),
        (["run", DREX, "--trace", "{trace}", "--out", "{file}"], "--out: {file} exists and is not a folder"),
        (["run", DREX, "--trace", "{trace}", "--out", "{file}/sub"], "{file} is a file, not a folder"),
        (["tune", "--out", "{tmp}"], "--out: {tmp} is a folder"),
        (
            ["tune", "--itq-file", "{tmp}/none.npz", "--out", "{tmp}/t.json"],
            "{tmp}/none.npz: no such ITQ file",
        ),
        (
            ["tune", "--no-itq", "--itq-file", "{file}", "--out", "{tmp}/t.json"],
            "--itq-file: --itq-file needs",
        ),
        (["capture", "--tokens", "1K", "--decode-steps", "1", "--out", "{tmp}"], "--out: {tmp} is a folder"),
        (["sweep", "analysis/context_scaling.yaml", "--out", "{file}"], "exists and is not a folder"),
        (["plot", "{tmp}", "--out", "{file}"], "exists and is not a folder"),
        (["demo", "--out", "{file}"], "exists and is not a folder"),
        (["demo", "--engine", "slurm", "--out", "{tmp}/demo"], "--engine must be one of local, ray"),
        (["run", DREX, "--trace", "{trace}", "--context", "0"], "--context: must be at least 1 token"),
    ],
)
def test_bad_outputs_and_flags_fail_before_any_work(
    tmp_path: Path, trace: Path, args: list[str], message: str
) -> None:
    file = tmp_path / "a-file.txt"
    file.write_text("keep me")
    fill = {"trace": str(trace), "tmp": str(tmp_path), "file": str(file)}
    r = cemsim(*(a.format(**fill) for a in args))
    assert r.returncode == 1 and message.format(**fill) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and file.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file.txt"]  # nothing half-written


def test_commands_do_not_import_the_cli() -> None:
    """cli.py imports every command module; a command importing cemsim.cli back is an import cycle (and a
    second copy of the module under `python -m cemsim.cli`)."""
    for path in sorted((REPO / "cemsim" / "commands").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n == "cemsim.cli" or n.startswith("cemsim.cli.") for n in names), path.name


def test_demo_reads_the_subcommands_from_the_running_cli() -> None:
    import typer.main

    from cemsim.cli import app
    from cemsim.commands.demo_cmd import _cli_commands

    group = typer.main.get_command(app)
    with group.make_context("cemsim", ["demo"], resilient_parsing=True) as root:
        demo = group.get_command(root, "demo")
        with demo.make_context("demo", [], parent=root) as ctx:
            names = _cli_commands(ctx)
    assert {"capture", "trace", "sweep", "plot", "run", "demo"} <= names


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "bogus"], "--policy: unknown policy 'bogus'"),
        (["--topk-per", "layer"], "--topk-per: must be 'head' or 'group'"),
        (["--backend", "gpu"], "--backend: unknown kernel backend 'gpu'"),
        (["--itq-file", "no/such/rotations.npz"], "no/such/rotations.npz: no such ITQ file"),
        (["--no-itq", "--itq-file", "r.npz"], "--itq-file: --itq-file applies to --policy longsight"),
        (["--policy", "window", "--itq-file", "r.npz"], "--itq-file: --itq-file applies to --policy"),
    ],
)
def test_eval_rejects_bad_choices_before_loading_the_model(capsys, monkeypatch, args, message) -> None:
    import cemsim.attention.model_loader as loader
    from cemsim.cli import main

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the flags were checked")

    monkeypatch.setattr(loader, "load_model", no_model)
    with pytest.raises(SystemExit) as info:
        main(["eval", "--tokens", "300", *args])
    err = capsys.readouterr().err
    assert info.value.code == 1 and message in err and "Traceback" not in err


def test_piped_output_has_no_progress_residue(trace: Path, tmp_path: Path) -> None:
    """Progress bars are off when the stream is not a terminal: stdout starts with the table, and an error
    is the whole of stderr (a stopped bar used to leave a blank line in both)."""
    r = cemsim("run", DREX, "--trace", str(trace), "--steps", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].strip().startswith("h100-drex:") and r.stderr == ""
    r = cemsim("trace", "project", str(trace), "--context", "0", "--out", str(tmp_path / "p.parquet"))
    assert r.returncode == 1 and r.stderr.startswith("error: ") and not list(tmp_path.iterdir())


def _truncated(trace: Path, tmp_path: Path) -> Path:
    cut = tmp_path / "cut.parquet"
    data = trace.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return cut


BAD_INPUTS = [
    (["run", DREX, "--trace", "{cut}"], "{cut}: not a Parquet file"),
    (["trace", "info", "{cut}"], "{cut}: not a Parquet file"),
    (["trace", "project", "{cut}", "--context", "64K", "--out", "{tmp}/p.parquet"], "{cut}: not a Parquet"),
    (["run", "{yaml}", "--trace", "{trace}"], "{yaml}, line 2: malformed YAML"),
    (["sweep", "{yaml}", "--out", "{tmp}/sw"], "{yaml}, line 2: malformed YAML"),
    (["eval", "--model", "{tmp}/no-model", "--tokens", "300"], "--model: model '{tmp}/no-model' is neither"),
    (["tune", "--model", "no-model", "--out", "{tmp}/t.json"], "--model: model 'no-model' is neither"),
    (
        [
            "capture",
            "--model",
            "no-model",
            "--tokens",
            "1K",
            "--decode-steps",
            "1",
            "--out",
            "{tmp}/c.parquet",
        ],
        "--model: model 'no-model' is neither",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[" ".join(a[:2]) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_paragraph_naming_what_and_where(
    capsys, trace: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    from cemsim.cli import main

    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text("name: [\n")
    fill = {"trace": trace, "cut": _truncated(trace, tmp_path), "tmp": tmp_path, "yaml": yaml_file}
    before = sorted(tmp_path.iterdir())
    with pytest.raises(SystemExit) as info:
        main([a.format(**fill) for a in args])
    err = capsys.readouterr().err
    assert info.value.code == 1 and message.format(**fill) in err.replace("\n", " "), err
    assert err.startswith("error: ") and "Traceback" not in err
    assert sorted(tmp_path.iterdir()) == before  # nothing written, not even a temp file


@pytest.mark.parametrize("command", ["eval", "tune", "capture"])
def test_device_cuda_without_a_gpu_is_one_clear_error(capsys, tmp_path: Path, command: str) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    from cemsim.cli import main

    extra = {
        "eval": ["--tokens", "300"],
        "tune": ["--tokens", "300", "--out", str(tmp_path / "t.json")],
        "capture": ["--tokens", "1K", "--decode-steps", "1", "--out", str(tmp_path / "c.parquet")],
    }[command]
    with pytest.raises(SystemExit) as info:
        main([command, "--device", "cuda", *extra])
    err = capsys.readouterr().err
    assert info.value.code == 1 and "--device: --device cuda asked for, but torch sees no CUDA GPU" in err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


def test_messages_with_brackets_are_printed_verbatim(tmp_path: Path) -> None:
    """Error text goes through rich: a '[/b]' in a key used to raise MarkupError (a traceback), and
    '[fast]' vanished as an unknown style."""
    bad = tmp_path / "br.yaml"
    bad.write_text(
        'name: t\ngpu:\n  preset: h100-sxm\n  hbm:\n    "peak[/b]": 3 TB/s\nworkload: {model: llama3-8b}\n'
    )
    r = cemsim("config", "check", str(bad))
    assert r.returncode == 1 and "unknown key 'peak[/b]'" in r.stderr and "Traceback" not in r.stderr
    r = cemsim("run", DREX, "--trace", "x.parquet", "--set", "gpu.hbm.peak_bandwidth=[fast]")
    assert r.returncode == 1 and "--set gpu.hbm.peak_bandwidth=[fast]: expected a bandwidth" in r.stderr


def test_ctrl_c_exits_130_with_one_word(capsys, monkeypatch) -> None:
    import cemsim.commands.config_cmd as config_cmd
    from cemsim.cli import main

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(config_cmd, "load_system", interrupted)
    with pytest.raises(SystemExit) as info:
        main(["config", "show", "hwconfigs/h100.yaml"])
    assert info.value.code == 130 and capsys.readouterr().err.strip() == "interrupted"
