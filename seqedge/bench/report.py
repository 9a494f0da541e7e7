"""Presenting benchmark records: a rich table, JSON, CSV and a plot, every figure labelled with its kind.

The table has one row per metric and length and one column per target × kind. The plot draws decode
ms/token and prefill tokens/s against context length, one line per target and kind (solid: measured on
the host, dashed: projected for the device, dotted: measured on the device, dash-dot: a peer measured here).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.table import Table

from seqedge.bench.records import KINDS, Record
from seqedge.fsutil import atomic_write_bytes

METRICS = {"prefill_tok_s": "prefill tok/s", "ttft_ms": "time to first token ms (p50)",
           "ttft_ms_p90": "time to first token ms p90", "decode_tok_s": "decode tok/s",
           "decode_ms": "decode ms/token (projected)", "decode_ms_p50": "decode ms/token p50",
           "decode_ms_p90": "decode ms/token p90", "peak_rss_mb": "peak resident MB (bench process)",
           "runtime_rss_mb": "resident MB above Python+torch", "size_mb": "size MB"}
KIND_STYLE = {"measured-host": "-", "projected": "--", "measured-device": ":", "measured-peer": "-."}
BUSY_MARK = "!"


def table(records: list[Record], title: str) -> Table:
    columns = []
    for r in records:
        if (r.target, r.kind) not in columns:
            columns.append((r.target, r.kind))
    targets = {t for t, _ in columns}
    t = Table(title=title, title_justify="left")
    t.add_column("metric")
    t.add_column("at", justify="right")
    for target, kind in columns:
        t.add_column(f"{kind}" if len(targets) == 1 else f"{target}\n{kind}", justify="right")
    rows: dict[tuple[str, int | None], dict] = {}
    for r in records:
        rows.setdefault((r.metric, r.at), {})[(r.target, r.kind)] = r
    order = list(METRICS)
    for (metric, at), cells in sorted(rows.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1] or 0)):
        t.add_row(METRICS[metric], "" if at is None else str(at),
                  *(_fmt(cells[c].value) + (BUSY_MARK if cells[c].inputs.get("busy") else "") if c in cells else "–"
                    for c in columns))
    return t


def busy_notes(records: list[Record]) -> list[str]:
    """One line per figure measured on a busy machine (marked with BUSY_MARK in the table)."""
    return [f"{BUSY_MARK} {r.target} {METRICS[r.metric]} at {r.at}: measured while busy ({r.inputs['busy']}) — "
            "rerun on a quiet machine before trusting it" for r in records if r.inputs.get("busy")
            and r.metric in ("decode_tok_s", "prefill_tok_s")]


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}"


def write_json(path: Path, payload: dict) -> None:
    atomic_write_bytes(Path(path), json.dumps(payload, indent=2).encode())


def write_csv(path: Path, records: list[Record]) -> None:
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["target", "kind", "metric", "value", "unit", "at", "provenance", "inputs"])
    for r in records:
        w.writerow([r.target, r.kind, r.metric, r.value, r.unit, "" if r.at is None else r.at, r.provenance,
                    json.dumps(r.inputs, sort_keys=True)])
    atomic_write_bytes(Path(path), buf.getvalue().encode())


def plot(path: Path, records: list[Record], title: str) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_dec, ax_pre) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for r in records:
        if r.metric in ("decode_ms_p50", "decode_ms", "prefill_tok_s") and r.at is not None:
            metric = "prefill_tok_s" if r.metric == "prefill_tok_s" else "decode_ms"
            series.setdefault((metric, r.target, r.kind), []).append((r.at, r.value))
    colours: dict[str, str] = {}
    for (metric, target, kind), points in sorted(series.items(), key=lambda kv: (kv[0][1], KINDS.index(kv[0][2]))):
        colour = colours.setdefault(target, f"C{len(colours)}")
        xs, ys = zip(*sorted(points))
        ax = ax_dec if metric == "decode_ms" else ax_pre
        ax.plot(xs, ys, KIND_STYLE[kind], marker="o", color=colour, label=f"{target} ({kind})")
    for ax, ylabel in ((ax_dec, "decode ms/token (measured: p50)"), (ax_pre, "prefill tokens/s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context / prompt length (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
