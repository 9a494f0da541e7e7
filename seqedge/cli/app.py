"""The `seqedge` command: one typer app, one file per command group, and the one place that turns
seqedge's exceptions into a one-line message with a hint (SEQEDGE_DEBUG=1 shows the traceback)."""

from __future__ import annotations

import logging
import os

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from seqedge.errors import SeqedgeError

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class SeqedgeGroup(TyperGroup):
    """Every command runs through here: a SeqedgeError becomes `error: ...` + `hint: ...`, exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SeqedgeError as e:
            if os.environ.get("SEQEDGE_DEBUG"):
                raise
            err_console.print(f"[bold red]error:[/] {escape(e.message)}" + (f"\n[dim]hint:[/] {escape(e.hint)}"
                                                                             if e.hint else ""), markup=True)
            ctx.exit(2)


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


# Libraries seqedge imports log warnings about optional pieces a user cannot act on (torchao's CUDA
# kernels on a CPU machine, torch's pytree deprecations); the CLI keeps its output to its own messages.
QUIET_LOGGERS = ("torchao", "torch.utils._pytree", "onnxruntime.quantization", "onnxscript")


def main() -> None:
    if not os.environ.get("SEQEDGE_DEBUG"):
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    app()


if __name__ == "__main__":
    main()
