"""The one `cemsim` command. Each subcommand lives in cemsim/commands/<name>.py; this file only wires them."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from cemsim import __version__
from cemsim.errors import CemsimError, one_line, write_traceback_report

# typer (0.29) raises the exceptions of the click it bundles (typer._click), not those of an installed
# `click`; its public BadParameter leads to the base class whichever click it uses.
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(
    name="cemsim",
    help="Hardware/algorithm co-design simulator for compute-enabled memory in long-context LLM decoding.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cemsim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """cemsim: capture key-access traces from a model, replay them on simulated hardware, sweep and plot."""


def _register() -> None:
    # One module per subcommand group; each exposes `register(app)`. Imports stay light: heavy libraries
    # (torch, simpy, matplotlib) load inside the commands, so `cemsim --help` is quick.
    from cemsim.commands import (
        capture_cmd,
        config_cmd,
        demo_cmd,
        dram_cmd,
        eval_cmd,
        plot_cmd,
        run_cmd,
        sweep_cmd,
        trace_cmd,
        tune_cmd,
    )

    for module in (
        demo_cmd,
        config_cmd,
        capture_cmd,
        trace_cmd,
        run_cmd,
        eval_cmd,
        tune_cmd,
        sweep_cmd,
        plot_cmd,
        dram_cmd,
    ):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point. Exit codes: 0 done, 1 an error (a user error as one paragraph, an internal error as one
    line plus the file holding its traceback), 2 a usage error (click's usage text), 130 interrupted."""
    try:
        code = app(args=argv, prog_name="cemsim", standalone_mode=False)
    except ClickException as exc:  # usage errors: click's own message and exit code (2)
        exc.show()
        sys.exit(exc.exit_code)
    except CemsimError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: one line here, the whole traceback in a file
        report = write_traceback_report(exc, ["cemsim", *(sys.argv[1:] if argv is None else argv)])
        err_console.print(
            f"[bold red]internal error:[/] {escape(one_line(exc))}; full traceback in {escape(str(report))} "
            "(please include it in a bug report)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    if isinstance(code, int) and code:  # typer.Exit(n) inside a command returns n without standalone mode
        if code == 130:  # typer turns Ctrl-C into Exit(130)
            err_console.print("interrupted")
        sys.exit(code)


if __name__ == "__main__":
    main()
