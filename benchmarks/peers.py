"""The peers, side by side with seqedge in one run: the same model, the same threads, interleaved rounds,
the machine's load recorded with every figure.

    python benchmarks/peers.py MODEL.gguf --seqedge ART [ART ...] [--optimum] [--rounds 3] [--threads 2]

Systems (each one's decode and prefill in tokens/s):
- llama.cpp on the GGUF itself: `llama-bench` built from the `llama-cpp-python` sdist (it vendors a full
  llama.cpp) with -DGGML_NATIVE=ON, cached under ~/.cache/seqedge/peers; also the GGUF requantized to Q4_0
  with `llama-quantize` (the format seqedge's int4 is compared with).
- optimum-onnx: the same weights as a transformers folder (transformers reads the GGUF), exported by
  `optimum-cli export onnx --task text-generation-with-past`, timed with onnxruntime, in a venv of its own
  under ~/.cache/seqedge/peers (never seqedge's environment).
- seqedge: each artifact through `seqedge bench ART --device host --threads N --json`.

Decode: tokens/s generating after a short prompt (llama-bench `-n`); prefill: tokens/s over a T-token prompt
(`-p T`). Every system measures in its own process. Figures move ±30 % between rounds on shared 2-core
machines: compare medians of interleaved rounds, never figures from different runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

PEERS = Path(os.environ.get("SEQEDGE_CACHE", Path.home() / ".cache" / "seqedge")) / "peers"
LLAMA_CPP_PYTHON = ("0.3.36", "https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/"
                    "llama_cpp_python-0.3.36.tar.gz", "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e")
# optimum-onnx's own environment: the versions seqedge's lock holds for its `hf` extra
OPTIMUM_VENV_PACKAGES = ["optimum-onnx==0.1.0", "optimum==2.1.0", "transformers==4.57.6", "onnxruntime==1.32.0",
                         "onnx==1.23.2", "gguf==0.19.0", "accelerate", "sentencepiece", "protobuf"]


@dataclass
class Figure:
    system: str
    round: int
    decode_tok_s: float | None
    prefill_tok_s: float | None
    prompt_len: int
    loadavg: float
    note: str = ""


def loadavg() -> float:
    return float(open("/proc/loadavg").read().split()[0])


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        sys.exit(f"peers: {' '.join(map(str, cmd[:3]))} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return proc


# ---- llama.cpp ------------------------------------------------------------------------------------------

def llama_cpp() -> Path:
    """llama-bench and llama-quantize, built once from the llama-cpp-python sdist's vendored llama.cpp."""
    version, url, sha = LLAMA_CPP_PYTHON
    root = PEERS / f"llama.cpp-{version}"
    bench = root / "build" / "bin" / "llama-bench"
    if bench.is_file():
        return root / "build" / "bin"
    root.mkdir(parents=True, exist_ok=True)
    tar = root / "sdist.tar.gz"
    if not tar.is_file():
        urllib.request.urlretrieve(url, tar)
    import hashlib

    if hashlib.sha256(tar.read_bytes()).hexdigest() != sha:
        tar.unlink()
        sys.exit(f"peers: {url} does not have sha256 {sha}")
    with tarfile.open(tar) as t:
        t.extractall(root, filter="data")
    src = root / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    cmake = shutil.which("cmake", path=str(Path(sys.executable).parent)) or "cmake"
    run([cmake, "-S", str(src), "-B", str(root / "build"), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
         "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"])
    run([cmake, "--build", str(root / "build"), "--parallel", "2", "--target", "llama-bench", "llama-quantize"])
    return root / "build" / "bin"


def q4_0(gguf: Path) -> Path:
    """The GGUF requantized to Q4_0 (llama-quantize keeps its usual higher-precision output head)."""
    out = PEERS / "models" / f"{gguf.stem}.Q4_0.gguf"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        run([str(llama_cpp() / "llama-quantize"), "--allow-requantize", str(gguf), str(out) + ".tmp", "Q4_0", "2"])
        os.replace(str(out) + ".tmp", out)
    return out


def llama_bench(gguf: Path, threads: int, prompt_len: int, decode: int) -> tuple[float, float]:
    proc = run([str(llama_cpp() / "llama-bench"), "-m", str(gguf), "-t", str(threads), "-p", str(prompt_len),
                "-n", str(decode), "-r", "3", "-o", "json"])
    rows = json.loads(proc.stdout)
    pp = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0)
    tg = next(r["avg_ts"] for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0)
    return tg, pp


# ---- optimum-onnx ---------------------------------------------------------------------------------------

OPTIMUM_TIMING = r'''
import json, sys, time, numpy as np, onnxruntime as ort
folder, threads, prompt_len, decode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
s = ort.InferenceSession(folder + "/model.onnx", so, providers=["CPUExecutionProvider"])
names = [i.name for i in s.get_inputs()]
past = [i for i in s.get_inputs() if i.name.startswith("past_key_values")]
def empty():
    return {i.name: np.zeros([1, i.shape[1] if isinstance(i.shape[1], int) else 0, 0, i.shape[3]], np.float32) for i in past}
def call(ids, cache, start):
    T = ids.shape[1]
    feed = {"input_ids": ids, **cache}
    if "attention_mask" in names: feed["attention_mask"] = np.ones((1, start + T), np.int64)
    if "position_ids" in names: feed["position_ids"] = np.arange(start, start + T, dtype=np.int64)[None]
    out = s.run(None, feed)
    return out[0], {p.name: o for p, o in zip(past, out[1:])}
rng = np.random.default_rng(0)
prompt = rng.integers(0, 1000, (1, prompt_len), dtype=np.int64)
call(prompt, empty(), 0)  # warm-up
t = time.perf_counter(); call(prompt, empty(), 0); prefill = prompt_len / (time.perf_counter() - t)
logits, cache = call(prompt[:, :8], empty(), 0)
steps = []
for i in range(decode + 4):
    tok = np.array([[int(logits[0, -1].argmax())]], np.int64)
    t = time.perf_counter(); logits, cache = call(tok, cache, 8 + i); steps.append(time.perf_counter() - t)
print(json.dumps({"decode": len(steps[4:]) / sum(steps[4:]), "prefill": prefill}))  # after 4 warm-up steps
'''


def optimum_venv() -> Path:
    venv = PEERS / "optimum-venv"
    py = venv / "bin" / "python"
    done = venv / ".installed"  # the package list it holds: a change reinstalls
    if not done.is_file() or done.read_text() != " ".join(OPTIMUM_VENV_PACKAGES):
        if not py.is_file():
            run([sys.executable, "-m", "venv", str(venv)])
        run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"])  # the CPU wheel, first (no CUDA pulled)
        run([str(py), "-m", "pip", "install", "-q", *OPTIMUM_VENV_PACKAGES])
        done.write_text(" ".join(OPTIMUM_VENV_PACKAGES))
    return py


def optimum_export(gguf: Path) -> Path:
    """transformers reads the GGUF into a float model and writes a folder; optimum-cli exports it."""
    out = PEERS / "models" / f"{gguf.stem}.optimum-onnx"
    if (out / "model.onnx").is_file():
        return out
    py = optimum_venv()
    hf = PEERS / "models" / f"{gguf.stem}.hf"
    if not (hf / "config.json").is_file():
        run([str(py), "-c", "import sys; from transformers import AutoModelForCausalLM, AutoTokenizer; "
             "d, f, o = sys.argv[1:4]; AutoModelForCausalLM.from_pretrained(d, gguf_file=f).save_pretrained(o); "
             "AutoTokenizer.from_pretrained(d, gguf_file=f).save_pretrained(o)", str(gguf.parent), gguf.name, str(hf)])
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        run([str(py), "-m", "optimum.commands.optimum_cli", "export", "onnx", "--model", str(hf), "--task",
             "text-generation-with-past", "--framework", "pt", tmp])
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
        os.makedirs(tmp)  # for TemporaryDirectory's cleanup
    return out


def optimum_bench(folder: Path, threads: int, prompt_len: int, decode: int) -> tuple[float, float]:
    proc = run([str(optimum_venv()), "-c", OPTIMUM_TIMING, str(folder), str(threads), str(prompt_len), str(decode)])
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return r["decode"], r["prefill"]


# ---- seqedge --------------------------------------------------------------------------------------------

def seqedge_bench(art: Path, threads: int, prompt_len: int, decode: int) -> tuple[float, float]:
    seqedge = shutil.which("seqedge", path=str(Path(sys.executable).parent)) or "seqedge"
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        run([seqedge, "bench", str(art), "--device", "host", "--threads", str(threads), "--prompt-lengths",
             str(prompt_len), "--decode-tokens", str(decode), "--json", f.name])
        records = json.loads(Path(f.name).read_text())
    host = [r for r in records["records"] if r["kind"] == "measured-host"]
    dec = next(r["value"] for r in host if r["metric"] == "decode_tok_s")
    pre = next(r["value"] for r in host if r["metric"] == "prefill_tok_s" and r["inputs"].get("prompt_tokens") == prompt_len)
    return dec, pre


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", type=Path)
    ap.add_argument("--seqedge", type=Path, nargs="*", default=[], help="seqedge artifacts of the same model")
    ap.add_argument("--optimum", action="store_true", help="also optimum-onnx (its own venv; minutes the first time)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    systems = {f"llama.cpp {a.gguf.name}": lambda: llama_bench(a.gguf, a.threads, a.prompt_len, a.decode)}
    q40 = q4_0(a.gguf)
    systems[f"llama.cpp {q40.name}"] = lambda: llama_bench(q40, a.threads, a.prompt_len, a.decode)
    if a.optimum:
        folder = optimum_export(a.gguf)
        systems["optimum-onnx fp32 + onnxruntime"] = lambda: optimum_bench(folder, a.threads, a.prompt_len, a.decode)
    for art in a.seqedge:
        m = json.loads((art / "manifest.json").read_text())
        name = f"seqedge {m['format']} {m.get('quant', {}).get('recipe', 'fp32')} ({art.name})"
        systems[name] = lambda art=art: seqedge_bench(art, a.threads, a.prompt_len, a.decode)

    figures = []
    for r in range(a.rounds):  # interleaved: every system once per round
        for name, measure in systems.items():
            load = loadavg()
            t0 = time.perf_counter()
            dec, pre = measure()
            figures.append(Figure(name, r, round(dec, 2), round(pre, 2), a.prompt_len, load,
                                  f"{time.perf_counter() - t0:.0f} s"))
            print(f"round {r}  {name:55s} decode {dec:8.2f} tok/s  prefill(T={a.prompt_len}) {pre:8.2f} tok/s  "
                  f"load {load:.2f}", flush=True)
    print(f"\nmedians over {a.rounds} interleaved rounds, {a.threads} threads:")
    for name in systems:
        mine = [f for f in figures if f.system == name]
        dec = statistics.median(f.decode_tok_s for f in mine)
        pre = statistics.median(f.prefill_tok_s for f in mine)
        print(f"  {name:55s} decode {dec:8.2f}  prefill {pre:8.2f}  (load {min(f.loadavg for f in mine):.2f}–"
              f"{max(f.loadavg for f in mine):.2f})")
    if a.json:
        a.json.write_text(json.dumps([asdict(f) for f in figures], indent=1))


if __name__ == "__main__":
    main()
