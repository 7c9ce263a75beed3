"""The one `cemsim` command. Each subcommand lives in cemsim/commands/<name>.py; this file only wires them."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from cemsim import __version__
from cemsim.errors import CemsimError

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
    ):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one paragraph on stderr and exit code 1."""
    try:
        app(args=argv, standalone_mode=False)
    except CemsimError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
