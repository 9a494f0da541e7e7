"""The `seqedge` command: one typer app, one file per command group, and the one place that turns
seqedge's exceptions into a one-line message with a hint (SEQEDGE_DEBUG=1 shows the traceback)."""

from __future__ import annotations

import signal
import sys

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException

from seqedge.diagnostics import debug, internal_error, open_log
from seqedge.errors import SeqedgeError

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class SeqedgeGroup(TyperGroup):
    """Every command runs through here. A SeqedgeError becomes `error: ...` + `hint: ...` and its exit code
    (2: the user's input; 3: seqedge's own failure, trace in the log); any other exception is seqedge's
    bug and becomes an InternalError naming the command; Ctrl-C exits 130 without a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Usage errors (an unknown option, a value of the wrong type) are one line and exit 2 too."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except TyperException as e:  # click's usage errors (typer vendors click; this is its public base)
            if type(e).__name__ == "NoArgsIsHelpError":  # `seqedge` alone: the help, as typer shows it
                from typer import rich_utils

                rich_utils.rich_format_error(e)
                sys.exit(e.exit_code)
            if not hasattr(e, "format_message"):
                raise
            command = e.ctx.command_path if getattr(e, "ctx", None) else "seqedge"
            err_console.print(f"[bold red]error:[/] {escape(' '.join(e.format_message().split()))}\n"
                              f"[dim]hint:[/] see `{escape(command)} --help`", markup=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            err_console.print("[bold red]aborted[/]", markup=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):  # usage errors, exits: typer reports them
            raise
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]", markup=True)
            ctx.exit(130)
        except Exception as e:
            if debug():
                raise
            if not isinstance(e, SeqedgeError):
                e = internal_error(f"seqedge {ctx.invoked_subcommand or ''}".strip(), e)
            err_console.print(f"[bold red]error:[/] {escape(e.message)}" + (f"\n[dim]hint:[/] {escape(e.hint)}"
                                                                             if e.hint else ""), markup=True)
            ctx.exit(e.exit_code)


app = typer.Typer(
    cls=SeqedgeGroup,
    name="seqedge",
    help="Quantize, export, pick a runtime for and benchmark trained PyTorch sequence models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    max_memory: str = typer.Option(None, "--max-memory", help="Refuse a model, state or artifact that needs more "
                                   "memory than this (8G, 512M; default: this machine's memory)."),
) -> None:
    """Quantize, export, pick a runtime for and benchmark trained PyTorch sequence models."""
    if max_memory is not None:
        import os

        from seqedge.untrusted import MEMORY_ENV, parse_bytes

        parse_bytes(max_memory, "--max-memory")  # a bad value is one line here, not later
        os.environ[MEMORY_ENV] = max_memory


def _register() -> None:
    # each module adds its commands to `app`
    from seqedge.cli import apps, bench, devices, export, generate, sweep, train  # noqa: F401


_register()


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> None:
    # SIGTERM and SIGHUP end a command like Ctrl-C does: through KeyboardInterrupt, so temporary folders are
    # removed on the way out (exit 130) instead of being left half-written
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    # Libraries seqedge drives warn and log about things a user cannot act on (torchao's CUDA kernels on a
    # CPU machine, torch's pytree deprecations, missing optional packages): those go to this command's log
    # file, and the terminal shows seqedge's own messages only (SEQEDGE_DEBUG=1 shows everything).
    open_log(next((a for a in sys.argv[1:] if not a.startswith("-")), "seqedge"))
    app()


if __name__ == "__main__":
    main()
