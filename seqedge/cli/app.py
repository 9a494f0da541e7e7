"""The `seqedge` command: one typer app, one file per command group, and the one place that turns
seqedge's exceptions into a one-line message with a hint (SEQEDGE_DEBUG=1 shows the traceback)."""

from __future__ import annotations

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


def _register() -> None:
    # each module adds its commands to `app`
    from seqedge.cli import bench, devices, export, generate, train  # noqa: F401


_register()


def main() -> None:
    # Libraries seqedge drives warn and log about things a user cannot act on (torchao's CUDA kernels on a
    # CPU machine, torch's pytree deprecations, missing optional packages): those go to this command's log
    # file, and the terminal shows seqedge's own messages only (SEQEDGE_DEBUG=1 shows everything).
    open_log(next((a for a in sys.argv[1:] if not a.startswith("-")), "seqedge"))
    app()


if __name__ == "__main__":
    main()
