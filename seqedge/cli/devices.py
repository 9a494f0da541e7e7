"""`seqedge devices list|show` and `seqedge select`: device profiles and runtime selection."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from seqedge.cli.app import app
from seqedge.cli.options import Checkpoint, UserModel
from seqedge.profiles import load_profile, profile_names
from seqedge.select import ModelFacts, Selection, select

console = Console()
devices = typer.Typer(help="Device profiles (device_profiles/*.toml, plus the measured `host`).", no_args_is_help=True)
app.add_typer(devices, name="devices")

DeviceArg = Annotated[str, typer.Argument(help="A shipped profile name (see `seqedge devices list`), `host`, "
                                          "or a path to your own .toml.")]


@devices.command("list")
def list_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the device profiles."""
    rows = []
    for name in profile_names():
        if name == "host":
            rows.append({"name": "host", "display_name": "this machine (measured at run time)", "kind": "host"})
            continue
        p = load_profile(name)
        rows.append({"name": p.name, "display_name": p.display_name, "kind": p.kind, "soc": p.soc,
                     "memory_gb": p.memory_gb, "memory_bandwidth_gbs": p.memory_bandwidth_gbs,
                     "units": [u.name for u in p.units]})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="device profiles")
    for col in ("name", "device", "kind", "SoC", "memory", "bandwidth", "units"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["display_name"], r["kind"], r.get("soc", "-"),
                      f"{r['memory_gb']:g} GB" if "memory_gb" in r else "-",
                      f"{r['memory_bandwidth_gbs']:g} GB/s" if "memory_bandwidth_gbs" in r else "measured",
                      ", ".join(r.get("units", [])) or "cpu")
    console.print(table)


@devices.command("show")
def show_cmd(device: DeviceArg, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one profile: compute units, peaks, bandwidth and runtimes in order of preference."""
    p = load_profile(device)
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(p), indent=2))
        return
    console.print(f"[bold]{p.display_name}[/] ({p.name}, {p.kind}) · {p.soc} · {p.memory_gb:g} GB · "
                  f"{p.memory_bandwidth_gbs:g} GB/s" +
                  (f" · last-level cache {p.cache_mb:g} MB at {p.cache_bandwidth_gbs:g} GB/s" if p.cache_mb else "") +
                  f" · ISA {', '.join(p.isa)} · default threads {p.default_threads()}")
    table = Table()
    for col in ("unit", "cores", "peak (GFLOP/s, GOP/s)", "bandwidth", "runtimes (preferred first)"):
        table.add_column(col)
    for u in p.units:
        rts = "\n".join(f"{r.runtime}/{r.backend}: {'/'.join(r.dtypes)}" + (" static shapes" if r.static_shapes else "")
                        for r in u.runtimes)
        table.add_row(f"{u.name} ({u.kind})", f"{u.cores}× {u.core} {u.ghz:g} GHz" if u.cores else u.core,
                      ", ".join(f"{k} {v:,.0f}" for k, v in u.peak.items()), f"{u.bandwidth_gbs:g} GB/s", rts)
    console.print(table)
    console.print(f"[dim]sources: {'; '.join(p.sources)}[/]")


def print_selection(sel: Selection) -> None:
    table = Table(title=f"runtime selection for {sel.profile}")
    for col in ("#", "unit", "runtime/backend", "format", "quant", "threads", "projected tok/s", "why"):
        table.add_column(col)
    for i, c in enumerate(sel.candidates, 1):
        table.add_row(str(i), c.unit, f"{c.runtime}/{c.backend}", c.format, c.quant, str(c.threads or "-"),
                      f"{c.score:,.0f}", c.reason)
    console.print(table)
    if sel.rejected:
        rej = Table(title="rejected")
        for col in ("unit", "runtime/backend", "why not"):
            rej.add_column(col)
        for r in sel.rejected:
            rej.add_row(r.unit, f"{r.runtime}/{r.backend}", r.reason)
        console.print(rej)


@app.command("select")
def select_cmd(
    target: Annotated[Optional[Path], typer.Argument(help="Checkpoint or artifact folder.")] = None,
    device: Annotated[str, typer.Option("--device", help="Device profile name, `host`, or a .toml path.")] = "host",
    family: Annotated[Optional[str], typer.Option(help="Instead of a folder: a family ...")] = None,
    preset: Annotated[Optional[str], typer.Option(help="... and its preset.")] = None,
    user_model: UserModel = None,
    checkpoint: Checkpoint = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rank the runtimes/backends/formats/quantizations that fit a device, with reasons."""
    facts = facts_for(target, user_model, checkpoint, family, preset)
    sel = select(load_profile(device), facts)
    if as_json:
        typer.echo(json.dumps({"profile": sel.profile, "candidates": [c.to_json() for c in sel.candidates],
                               "rejected": [r.__dict__ for r in sel.rejected]}, indent=2))
        return
    print_selection(sel)


def facts_for(target, user_model, checkpoint, family, preset) -> ModelFacts:
    from seqedge.exporters.artifact import MANIFEST, read_manifest
    from seqedge.loading import load_exportable, load_shape

    if target is not None and os.path.lexists(Path(target) / MANIFEST):
        return ModelFacts.of_manifest(read_manifest(target, check_files=False))
    shape = None if user_model else load_shape(target, family, preset)  # a shape is all selection needs
    return ModelFacts.of_model(shape if shape is not None else load_exportable(target, user_model, checkpoint,
                                                                                family, preset, 0))
