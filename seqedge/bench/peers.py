"""`seqedge bench --peers`: llama.cpp's figures for the same shape, measured in the same run (kind
`measured-peer`), when `python benchmarks/peers.py` has built llama.cpp and written that shape's GGUFs.

    records = peer_records(target_name, shape, prompt_lengths=[256], contexts=[256], decode_tokens=64, threads=2)

The peers live in ~/.cache/seqedge/peers (llama.cpp from the llama-cpp-python sdist; `<shape>-random`
Hugging Face folders with their F16/Q8_0/Q4_0 GGUFs), never in seqedge's environment. A peer model matches
a TARGET when its family, layer count and every per-token weight (matmul, norm, state) are the same; the
vocabulary may differ (the peers use SmolLM2's tokenizer), which the provenance says. llama-bench decodes at
depth d with `-d d` (the same context as seqedge's decode after a d-token prompt) and prefills with `-p`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from seqedge.bench.records import Record
from seqedge.bench.shape import ModelShape
from seqedge.errors import InternalError, UnsupportedError

QUANTS = ("F16", "Q8_0", "Q4_0")


def peers_dir() -> Path:
    return Path(os.environ.get("SEQEDGE_CACHE", Path.home() / ".cache" / "seqedge")) / "peers"


# benchmarks/peers.py builds llama.cpp in build/, and again in this folder where that build's AMX kernels died
# of SIGILL on the machine: the second is then the one that runs here.
NO_AMX_BUILD = "build-no-amx"


def llama_bench() -> Path | None:
    for build in (NO_AMX_BUILD, "build"):
        found = sorted(peers_dir().glob(f"llama.cpp-*/{build}/bin/llama-bench"))
        if found:
            return found[-1]
    return None


def _same_shape(a: ModelShape, b: ModelShape) -> bool:
    return (a.family, a.layers, a.matmul, a.other, a.heads, a.kv_heads, a.head_dim, a.state_numel) == (
        b.family, b.layers, b.matmul, b.other, b.heads, b.kv_heads, b.head_dim, b.state_numel)


def peer_models(shape: ModelShape) -> tuple[Path, dict[str, Path]] | None:
    """The peers' Hugging Face folder of the same shape and its GGUFs, if benchmarks/peers.py wrote them."""
    for config in sorted(peers_dir().glob("models/*-random/config.json")):
        try:
            theirs = ModelShape.of_config(json.loads(config.read_text()))
        except Exception:  # a folder benchmarks/peers.py did not finish or another tool wrote: not a match
            continue
        if _same_shape(shape, theirs):
            folder = config.parent
            ggufs = {q: folder.parent / f"{folder.name}.{q}.gguf" for q in QUANTS}
            return folder, {q: p for q, p in ggufs.items() if p.is_file()}
    return None


def peer_records(target: str, shape: ModelShape, prompt_lengths: list[int], contexts: list[int],
                 decode_tokens: int, threads: int) -> list[Record]:
    bench = llama_bench()
    how_to = "run `python benchmarks/peers.py --shapes SHAPE` once (it builds llama.cpp and the shape's GGUFs)"
    if bench is None:
        raise UnsupportedError(f"--peers needs llama.cpp, which is not built in {peers_dir()}", how_to)
    match = peer_models(shape)
    if match is None or not match[1]:
        have = sorted(p.parent.name for p in peers_dir().glob("models/*-random/config.json"))
        raise UnsupportedError(f"no peer model has {target}'s shape (have: {', '.join(have) or 'none'})", how_to)
    folder, ggufs = match
    out = []
    for quant, gguf in ggufs.items():
        name = f"llama.cpp {quant}"
        vocab = json.loads((folder / "config.json").read_text()).get("vocab_size")
        prov = (f"llama-bench -t {threads} -r 3 on {gguf.name} (same layers and widths as {target}; vocabulary "
                f"{vocab} vs {shape.vocab}), run in this bench")
        pp, tg = llama_bench_rows(bench, gguf, threads, prompt_lengths, contexts, decode_tokens)
        base = {"runtime": "llama.cpp", "quant": quant, "threads": threads, "weights_mb": pp[0]["model_size"] / 1e6}
        for r in pp:
            out.append(Record(name, "measured-peer", "prefill_tok_s", round(r["avg_ts"], 2), "tok/s",
                              {**base, "prompt_tokens": r["n_prompt"]}, prov + ": mean of 3 prefills"))
        for r in tg:
            out.append(Record(name, "measured-peer", "decode_tok_s", round(r["avg_ts"], 2), "tok/s",
                              {**base, "context": r["n_depth"]}, prov + f": {decode_tokens} steps at depth "
                              f"{r['n_depth']}, mean of 3"))
    return out


def llama_bench_rows(bench: Path, gguf: Path, threads: int, prompt_lengths: list[int], depths: list[int],
                     decode_tokens: int) -> tuple[list[dict], list[dict]]:
    """llama-bench's JSON rows: prefill of each prompt length from an empty cache, and `decode_tokens` decode
    steps at each depth (`-d`), 3 repetitions each."""
    pp = _run([str(bench), "-m", str(gguf), "-t", str(threads), "-p", ",".join(map(str, prompt_lengths)), "-n", "0",
               "-r", "3", "-o", "json"])
    tg = _run([str(bench), "-m", str(gguf), "-t", str(threads), "-p", "0", "-n", str(decode_tokens), "-d",
               ",".join(map(str, depths)), "-r", "3", "-o", "json"])
    return pp, tg


def _run(cmd: list[str]) -> list[dict]:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    try:
        rows = json.loads(proc.stdout)
    except json.JSONDecodeError:
        rows = None
    if proc.returncode != 0 or not isinstance(rows, list) or not rows:
        how = f"exit {proc.returncode}" if proc.returncode >= 0 else f"killed by {_signal_name(-proc.returncode)}"
        hint = ("an instruction this CPU does not run: `python benchmarks/peers.py` builds llama.cpp again without "
                "its AMX kernels" if proc.returncode == -signal.SIGILL else "")
        raise InternalError(f"llama-bench failed ({how}): "
                            f"{(proc.stderr.strip().splitlines() or ['no output'])[-1][:200]}", hint, stage="benchmark")
    return rows


def _signal_name(number: int) -> str:
    """SIGILL for 4: a llama.cpp built for another CPU (or with kernels this machine does not run) dies so."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
