"""A sweep's results: every record (JSON, CSV), the summary table, the plots.

    write_results(sweep, result)      # OUT/records.json, records.csv, summary.md, plots/*.png
    rows = summary_rows(sweep, result)

Each record is a `seqedge bench` record (its `kind` says measured-host, projected or measured-device) with the
sweep's coordinates added: target, recipe, format, device, artifact (the export task's key). The summary has,
per device and target, the choice `seqedge select` makes with its reason, and the sweep's own figures: those
of the selected (format, recipe) when the sweep holds it, and the fastest artifact the sweep projects there.
Plots: decode tok/s against context and prefill tok/s against prompt length per device (projected; a host plot
for what was measured here), and size against held-out bits/byte per recipe.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from seqedge.errors import SeqedgeError
from seqedge.fsutil import atomic_write_bytes
from seqedge.sweep.spec import Sweep, SweepTarget

DIGITS = {"fastest_weight_mb": 2, "fastest_bpb": 4}  # summary columns printed with more than one decimal


def records(result) -> list[dict[str, Any]]:
    out = []
    for t in result.tasks:
        outcome = result.outcomes.get(t.key) or {}
        for r in outcome.get("records", []) if outcome.get("status") == "done" else []:
            out.append({**r, "target": t.target.name, "recipe": t.recipe.label, "format": t.format,
                        "device": t.device or "host", "artifact": t.parent, "node": outcome.get("node")})
    return out


def artifacts(result) -> list[dict[str, Any]]:
    rows = []
    for t in result.tasks:
        outcome = result.outcomes.get(t.key) or {}
        if t.kind == "export" and outcome.get("status") == "done":
            m = outcome.get("manifest") or {}
            q = m.get("quant") or {}
            rows.append({"artifact": t.key, "target": t.target.name, "recipe": t.recipe.label, "format": t.format,
                         "weight_mb": round(q.get("weight_bytes", 0) / 1e6, 3), "bpb": q.get("bpb", q.get("bpb_fp32")),
                         "bpb_increase": q.get("bpb_increase"), "top1_agreement": q.get("top1_agreement"),
                         "export_seconds": outcome.get("seconds"), "parity": m.get("parity")})
    return rows


def _facts(target: SweepTarget):
    from seqedge.loading import load_shape
    from seqedge.select import ModelFacts

    if target.kind == "preset":
        shape = load_shape(None, target.family, target.preset)
    else:
        folder = Path(target.path) if target.kind != "config" else Path(target.path).parent
        if target.kind == "config" and Path(target.path).name != "config.json":
            return None
        shape = load_shape(folder, None, None)
    return ModelFacts.of_model(shape) if shape is not None else None


def _figure(recs: list[dict], target: str, device: str, recipe: str | None, fmt: str | None, metric: str,
            at: int) -> float | None:
    for r in recs:
        if (r["kind"] == "projected" and r["target"] == target and r["device"] == device and r["metric"] == metric
                and r.get("inputs", {}).get("prompt_tokens" if metric == "prefill_tok_s" else "context") == at
                and (recipe is None or r["recipe"] == recipe) and (fmt is None or r["format"] == fmt)):
            return r["value"]
    return None


def summary_rows(sweep: Sweep, result) -> list[dict[str, Any]]:
    from seqedge.profiles import load_profile
    from seqedge.select import select

    recs = records(result)
    arts = {(a["target"], a["recipe"], a["format"]): a for a in artifacts(result)}
    at = max(sweep.prompt_lengths)
    rows = []
    for device in sweep.devices:
        profile = load_profile(device)
        for target in sweep.targets:
            row: dict[str, Any] = {"device": device, "target": target.name}
            try:
                facts = _facts(target)
                best = select(profile, facts).best if facts else None
            except SeqedgeError as e:
                best, row["reason"] = None, str(e)
            if best is not None:
                row.update(choice=f"{best.runtime}/{best.backend} {best.format} {best.quant}", reason=best.reason)
                row["choice_decode_tok_s"] = _figure(recs, target.name, device, best.quant, best.format,
                                                     "decode_tok_s", at)
                row["choice_prefill_tok_s"] = _figure(recs, target.name, device, best.quant, best.format,
                                                      "prefill_tok_s", at)
            else:
                row.setdefault("choice", "none")
                row.setdefault("reason", "no runtime on this device can run it" if facts else "the shape needs a full load")
            options = [(v, r, f) for r in {x.recipe.label for x in result.tasks} for f in sweep.formats
                       if (v := _figure(recs, target.name, device, r, f, "decode_tok_s", at)) is not None]
            if options:
                v, r, f = max(options)
                a = arts.get((target.name, r, f)) or {}
                row.update(fastest=f"{f} {r}", fastest_decode_tok_s=v, fastest_weight_mb=a.get("weight_mb"),
                           fastest_bpb=a.get("bpb"))
            rows.append(row)
    return rows


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    return f"{v:,.{digits}f}" if isinstance(v, float) else str(v)


def summary_markdown(sweep: Sweep, result, rows: list[dict]) -> str:
    at = max(sweep.prompt_lengths)
    lines = [f"# Sweep {sweep.name}", "",
             f"{len(result.tasks)} tasks: {len(result.ran)} run now, {len(result.cached)} done earlier (cached), "
             f"{len(result.failures)} failed · {result.seconds:.1f} s", "",
             f"Per device and target: what `seqedge select` picks and why, and this sweep's projected figures at "
             f"{at} tokens (decode at context {at}, prefill of {at} tokens).", "",
             "| device | target | selected | decode tok/s | prefill tok/s | fastest here | decode tok/s | MB | bits/byte "
             "| why |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k), DIGITS.get(k, 1)) for k in (
            "device", "target", "choice", "choice_decode_tok_s", "choice_prefill_tok_s", "fastest",
            "fastest_decode_tok_s", "fastest_weight_mb", "fastest_bpb", "reason")) + " |")
    arts = artifacts(result)
    if arts:
        lines += ["", "## Artifacts", "", "| target | recipe | format | weights MB | held-out bits/byte | Δ vs fp32 "
                  "| export s |", "|---|---|---|---|---|---|---|"]
        for a in arts:
            inc = a["bpb_increase"]
            lines.append(f"| {a['target']} | {a['recipe']} | {a['format']} | {a['weight_mb']:.2f} | {fmt(a['bpb'], 4)} "
                         f"| {'–' if inc is None else f'{inc:+.2%}'} | {fmt(a['export_seconds'])} |")
    if result.failures:
        lines += ["", "## Failed tasks", ""]
        lines += [f"- {t.label}: {err}" for t, err in result.failures]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, recs: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = ["kind", "target", "recipe", "format", "device", "metric", "value", "unit", "at", "runtime", "busy",
            "loadavg", "node", "artifact", "provenance"]
    w.writerow(cols)
    for r in recs:
        inputs = r.get("inputs", {})
        state = inputs.get("machine_state") or {}
        w.writerow([r["kind"], r["target"], r["recipe"], r["format"], r["device"], r["metric"], r["value"], r["unit"],
                    inputs.get("prompt_tokens", inputs.get("context", "")), inputs.get("runtime", ""),
                    inputs.get("busy") or "", state.get("loadavg_1m_before", ""), r.get("node") or "", r.get("artifact") or "",
                    r.get("provenance", "")])
    atomic_write_bytes(path, buf.getvalue().encode())


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plots(sweep: Sweep, result, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(exist_ok=True)
    recs = records(result)
    written = []
    for device, kind in [(d, "projected") for d in sweep.devices] + [("host", "measured-host")]:
        series: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for r in recs:
            if r["kind"] == kind and r["device"] == device and r["metric"] in ("decode_tok_s", "prefill_tok_s"):
                n = r["inputs"].get("prompt_tokens" if r["metric"] == "prefill_tok_s" else "context")
                label = f"{r['target']} · {r['recipe']} · {r['format']}"
                series.setdefault((r["metric"], label), []).append((n, r["value"]))
        if not series:
            continue
        # colour: the target; line style: the format; marker: the recipe — one legend below both panels
        targets = sorted({label.split(" · ")[0] for _, label in series})
        formats = sorted({label.split(" · ")[2] for _, label in series})
        recipes = sorted({label.split(" · ")[1] for _, label in series})
        rows = -(-len(series) // 2 // 3)
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2 + 0.2 * rows))
        for (metric, label), pts in sorted(series.items()):
            target, recipe, fmt_ = label.split(" · ")
            ax = axes[0] if metric == "decode_tok_s" else axes[1]
            xs, ys = zip(*sorted(pts))
            ax.plot(xs, ys, ("-", "--", ":", "-.")[formats.index(fmt_) % 4], marker="osD^v<>"[recipes.index(recipe) % 7],
                    color=f"C{targets.index(target) % 10}", label=label if metric == "decode_tok_s" else None)
        for ax, what in zip(axes, ("decode tok/s vs context", "prefill tok/s vs prompt length")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{device}: {what} ({kind})", fontsize=9)
            ax.set_xlabel("tokens")
            ax.grid(True, alpha=0.3)
        fig.legend(loc="lower center", ncol=3, fontsize=6, frameon=False)
        fig.tight_layout(rect=(0, 0.2 * rows / (4.2 + 0.2 * rows) + 0.02, 1, 1))
        path = folder / f"{device}.png"
        _save(fig, path)
        written.append(path)
    arts = [a for a in artifacts(result) if a["bpb"] is not None]
    if arts:
        fig, ax = plt.subplots(figsize=(7, 5))
        recipes = sorted({a["recipe"] for a in arts})
        for i, recipe in enumerate(recipes):
            pts = [a for a in arts if a["recipe"] == recipe]
            ax.scatter([a["weight_mb"] for a in pts], [a["bpb"] for a in pts], label=recipe, color=f"C{i}",
                       marker="o")
            for a in pts:
                ax.annotate(f"{a['target']} {a['format']}", (a["weight_mb"], a["bpb"]), fontsize=6)
        ax.set_xscale("log")
        ax.set_xlabel("weights MB")
        ax.set_ylabel("held-out bits/byte (lower is better)")
        ax.set_title("size vs accuracy per recipe", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = folder / "size_vs_accuracy.png"
        _save(fig, path)
        written.append(path)
    return written


def write_results(sweep: Sweep, result) -> dict[str, Any]:
    out = result.out
    recs = records(result)
    rows = summary_rows(sweep, result)
    payload = {"sweep": sweep.to_json(), "seconds": round(result.seconds, 2),
               "tasks": [{**t.describe(), "status": result.status(t.key), "cached": t.key in result.cached,
                          **{k: v for k, v in (result.outcomes.get(t.key) or {}).items()
                             if k in ("error", "seconds", "node", "loadavg")}} for t in result.tasks],
               "artifacts": artifacts(result), "summary": rows, "records": recs}
    atomic_write_bytes(out / "records.json", json.dumps(payload, indent=1, default=str).encode())
    write_csv(out / "records.csv", recs)
    atomic_write_bytes(out / "summary.md", summary_markdown(sweep, result, rows).encode())
    plots(sweep, result, out / "plots")
    return payload
