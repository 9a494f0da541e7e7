"""ONNX: every lowering against its op's reference in real onnxruntime sessions, and whole-model
artifacts (manifest, parity, dynamic T, bad inputs)."""

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from seqedge.checkpoint import save_checkpoint
from seqedge.cli.app import app
from seqedge.errors import BadPathError, CorruptFileError, ParityError, UnsupportedError
from seqedge.exporters import ExportPlan, export
from seqedge.exporters.artifact import read_manifest
from seqedge.exporters.onnx.export import export_graph
from seqedge.exporters.onnx.lowerings import FALLBACKS, FLAVOURS, LOWERINGS, resolve
from seqedge.generate import generate
from seqedge.models import build_model
from seqedge.ops import (
    attention_ref,
    causal_conv1d_ref,
    int4_blocks,
    int4_mamba_scan_ref,
    int4_matmul_ref,
    int4_matmul_swiglu_ref,
    mamba_scan_ref,
    moe_ffn_q_ref,
    moe_ffn_ref,
    rms_norm_ref,
    selective_scan_ref,
    ssd_scan_ref,
)
from seqedge.ops.int4_matmul import group_rows
from seqedge.ops.moe_ffn import quantize_experts
from seqedge.runtimes import open_artifact
from seqedge.runtimes.ort_kernels import options_for
from seqedge.schema import MANIFEST
from tests.conftest import FAMILY_NAMES
from tests.test_ops import (
    attn_inputs,
    int4_mamba_scan_inputs,
    mamba_scan_inputs,
    moe_inputs,
    scan_inputs,
    ssd_inputs,
)

TOL = 1e-4  # fp32 max abs diff of one op in onnxruntime vs the reference


class OneOp(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, tokens, *args):  # `tokens` only carries the dynamic length T
        return self.fn(*args)


def conv_inputs(T, Bt=2, D=12, K=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(Bt, D, T, generator=g), torch.randn(D, 1, K, generator=g), torch.randn(D, generator=g),
            torch.randn(Bt, D, K - 1, generator=g))


def moe_q_inputs(T, seed=0, bits=4, block=16):
    """Operands of seqedge::moe_ffn_q: moe_inputs with the experts as block codes."""
    x, logits, w13, w2 = moe_inputs(T, seed=seed)
    return (x, logits, *quantize_experts(w13, bits, block), *quantize_experts(w2, bits, block))


def int4_inputs(T, seed=0, Bt=2, K=176, N=40):
    """Operands of seqedge::int4_matmul: K of a whole chunk of 128 and a partial one ending in a half block
    (zero-padded), N of two and a half items."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(Bt, T, K, generator=g) * 3, *int4_blocks(torch.randn(N, K, generator=g)))


def int4_grouped_inputs(T, seed=0):
    """int4_inputs with N = 64 and the codes in groups of 16 rows (group_rows: what the exporters store where N is
    a multiple of 16)."""
    a, codes, scales = int4_inputs(T, seed, N=64)
    return (a, *group_rows(codes, scales))


def norm_inputs(T, seed=0, Bt=2, D=50):
    """Operands of seqedge::rms_norm: a width that is no multiple of the vector lanes."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(Bt, T, D, generator=g) * 3, torch.randn(D, generator=g)


OP_CASES = {
    "seqedge::selective_scan": (torch.ops.seqedge.selective_scan, selective_scan_ref, scan_inputs, {0: 1, 1: 1, 3: 1, 4: 1}),
    # the scan with Mamba's softplus step and silu(z) gate (ExecuTorch's; ONNX fuses its own MambaScan node)
    "seqedge::mamba_scan": (torch.ops.seqedge.mamba_scan, mamba_scan_ref, mamba_scan_inputs,
                            {0: 1, 1: 1, 3: 1, 4: 1, 7: 1}),
    # ... with its step Mamba's int4 dt_proj (ExecuTorch's int4 recipe; ONNX fuses its own Int4MambaScan node)
    "seqedge::int4_mamba_scan": (torch.ops.seqedge.int4_mamba_scan, int4_mamba_scan_ref, int4_mamba_scan_inputs,
                                 {0: 1, 1: 1, 6: 1, 7: 1, 10: 1}),
    "seqedge::ssd_scan": (torch.ops.seqedge.ssd_scan, ssd_scan_ref, ssd_inputs, {0: 1, 1: 1, 3: 1, 4: 1}),
    "seqedge::causal_conv1d": (torch.ops.seqedge.causal_conv1d, causal_conv1d_ref, conv_inputs, {0: 2}),
    # batch 1: onnxruntime's GroupQueryAttention takes T > 1 after earlier tokens only at batch 1
    "seqedge::attention": (torch.ops.seqedge.attention, attention_ref, lambda T, seed=0, pos=0: attn_inputs(
        T, Bt=1, seed=seed, pos=pos), {0: 1, 1: 1, 2: 1}),
    # top 2 of 6 experts, renormalised; moe_ffn_q (4-bit codes) only exists in ExecuTorch programs (ONNX quantizes
    # the graph's MoE node afterwards: test_moe_quantized_to_qmoe_matches_reference)
    "seqedge::moe_ffn": (lambda *a: (torch.ops.seqedge.moe_ffn(*a, 2, True),), lambda *a: (moe_ffn_ref(*a, 2, True),),
                         moe_inputs, {0: 1, 1: 1}),
    "seqedge::moe_ffn_q": (lambda *a: (torch.ops.seqedge.moe_ffn_q(*a, 2, True, 4),),
                           lambda *a: (moe_ffn_q_ref(*a, 2, True, 4),), moe_q_inputs, {0: 1, 1: 1}),
    # ExecuTorch's int4 linear (ONNX has its own nodes: quant/onnx.py); prompts of 2 x 2 to 2 x 16 rows take the
    # prompt kernel where the CPU has one, a step's 2 rows go row by row
    "seqedge::int4_matmul": (lambda *a: (torch.ops.seqedge.int4_matmul(*a),), lambda *a: (int4_matmul_ref(*a),),
                             int4_inputs, {0: 1}),
    # the same product of a fused gate/up projection and its SwiGLU, its codes in groups of 16 rows (N = 64: two
    # groups of gate rows, two of up rows)
    "seqedge::int4_matmul_swiglu": (lambda *a: (torch.ops.seqedge.int4_matmul_swiglu(*a),),
                                    lambda *a: (int4_matmul_swiglu_ref(*a),), int4_grouped_inputs, {0: 1}),
    # ExecuTorch's norms (exporters/decompositions.py rms_norm_kernel; ONNX fuses its own norm nodes)
    "seqedge::rms_norm": (lambda x, w: (torch.ops.seqedge.rms_norm(x, w, 1e-5),),
                          lambda x, w: (rms_norm_ref(x, w, 1e-5),), norm_inputs, {0: 1}),
}


def _run_op_graph(op_name, flavour, tmp_path, lengths, make=None):
    op, ref, case_inputs, dyn = OP_CASES[op_name]
    make = make or case_inputs
    ex = make(5)
    names = [f"x{i}" for i in range(len(ex))]
    path = tmp_path / "op.onnx"
    T = torch.export.Dim("T", min=1, max=64)
    shapes = {"tokens": {1: T}, "args": tuple({dyn[i]: T} if i in dyn else None for i in range(len(ex)))}
    used = export_graph(OneOp(op), (torch.zeros(1, 5, dtype=torch.long), *ex), ["tokens", *names],
                        [f"y{i}" for i in range(3)][: len(ref(*ex))], path, LOWERINGS.for_variant(flavour), shapes)
    assert (op_name, flavour) in [(lw.op, lw.variant) for lw in used] and {lw.variant for lw in used} == {flavour}
    sess = ort.InferenceSession(str(path), options_for(path), providers=["CPUExecutionProvider"])
    for T_ in lengths:
        args = make(T_, seed=T_)
        if op_name == "seqedge::attention":  # the new tokens start after 3 cached ones
            args = make(T_, seed=T_, pos=3)
        feeds = {"tokens": np.zeros((1, T_), np.int64), **{n: a.numpy() for n, a in zip(names, args)}}
        feeds = {i.name: feeds[i.name] for i in sess.get_inputs()}
        got = sess.run(None, feeds)
        want = [w.numpy() for w in ref(*args)]
        if op_name == "seqedge::attention":  # cache slots past pos + T are unspecified
            got[1:], want[1:] = [g[:, :, : 3 + T_] for g in got[1:]], [w[:, :, : 3 + T_] for w in want[1:]]
        for k, (g, w) in enumerate(zip(got, want)):
            diff = np.abs(g - w).max()
            assert diff <= TOL * max(1.0, np.abs(w).max()), f"{op_name}/{flavour} T={T_} output {k}: {diff}"


@pytest.mark.parametrize("op_name,variant", [(op, v) for op in OP_CASES for v in (*FLAVOURS, *FALLBACKS)
                                             if f"{op}:{v}" in LOWERINGS])
def test_lowering_matches_reference(op_name, variant, tmp_path):
    """Every ONNX lowering of every op (the fallbacks a fused lowering can give way to included) in a real
    onnxruntime session against the op's reference; every op has a fused and a portable one."""
    assert {f"{op_name}:{f}" for f in FLAVOURS} <= set(LOWERINGS)
    _run_op_graph(op_name, variant, tmp_path, lengths=[1, 7, 16])


class ExpertsAsWeights(torch.nn.Module):
    """seqedge::moe_ffn with its experts as graph initializers, as an exported model has them."""

    def __init__(self, w13, w2, top_k, renormalise):
        super().__init__()
        self.register_buffer("w13", w13)
        self.register_buffer("w2", w2)
        self.top_k, self.renormalise = top_k, renormalise

    def forward(self, tokens, x, logits):
        return torch.ops.seqedge.moe_ffn(x, logits, self.w13, self.w2, self.top_k, self.renormalise) * 1.0


@pytest.mark.parametrize("bits,block", [(4, 16), (4, 32), (8, None)])
@pytest.mark.parametrize("renormalise", [True, False])
def test_moe_quantized_to_qmoe_matches_reference(bits, block, renormalise, tmp_path):
    """The fused lowering's com.microsoft.MoE with and without renormalised routing (Mixtral / OLMoE), and the
    QMoE the int4/int8 recipes turn it into (quant/onnx.py), in real sessions against the references on the
    same codes — per row for int8, blocks for int4; a block that does not divide I (32 of 48) leaves it float."""
    from seqedge.quant.onnx import quantize_experts as to_qmoe

    x, logits, w13, w2 = moe_inputs(5, Bt=1)
    path = tmp_path / "moe.onnx"
    T = torch.export.Dim("T", min=1, max=64)
    export_graph(ExpertsAsWeights(w13, w2, 3, renormalise), (torch.zeros(1, 5, dtype=torch.long), x, logits),
                 ["tokens", "x", "logits"], ["y"], path, LOWERINGS.for_variant("fused"),
                 {"tokens": {1: T}, "x": {1: T}, "logits": {1: T}})

    def check(ref):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for T_ in (1, 7):
            x, logits, _, _ = moe_inputs(T_, Bt=1, seed=T_)
            feeds = {"tokens": np.zeros((1, T_), np.int64), "x": x.numpy(), "logits": logits.numpy()}
            got = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]
            want = ref(x, logits).numpy()
            assert np.abs(got - want).max() <= TOL * max(1.0, np.abs(want).max()), (T_, np.abs(got - want).max())

    check(lambda x, logits: moe_ffn_ref(x, logits, w13, w2, 3, renormalise))
    graph = onnx.load(str(path))
    to_qmoe(graph, bits, block)
    onnx.save(graph, str(path))
    kinds = [n.op_type for n in graph.graph.node if "MoE" in n.op_type]
    assert kinds == (["MoE"] if block == 32 else ["QMoE"]), kinds
    if block != 32:
        codes = [quantize_experts(w, bits, block or w.shape[2]) for w in (w13, w2)]
        check(lambda x, logits: moe_ffn_q_ref(x, logits, *codes[0], *codes[1], 3, renormalise, bits))


@pytest.mark.parametrize("hd", [16, 64])
def test_gqa_rotates_inside_the_kernel_at_head_sizes_it_takes(hd, tmp_path):
    """GroupQueryAttention (the `contrib` lowering, taken where seqedge's kernels cannot be built) rotates q/k
    itself (do_rotary) for head sizes that are multiples of 16 (the op cases above use 8, which the lowering
    rotates before the kernel); both match the reference."""
    make = lambda T, seed=0, pos=0: attn_inputs(T, S=40, Bt=1, H=6, Hkv=2, hd=hd, seed=seed, pos=pos)  # noqa: E731
    _run_op_graph("seqedge::attention", "contrib", tmp_path, lengths=[1, 7, 16], make=make)
    graph = onnx.load(str(tmp_path / "op.onnx"))
    gqa = next(n for n in graph.graph.node if n.op_type == "GroupQueryAttention")
    assert {a.name: a.i for a in gqa.attribute}["do_rotary"] == 1


@pytest.mark.parametrize("unit", [None, "cpu", "gpu"])
def test_a_gpu_target_attends_on_a_kernel_its_provider_has(unit):
    """seqedge's onnxruntime kernels are registered for the CPU provider: for the desktop profile's GPU (onnxruntime,
    CUDA provider) attention is lowered to GroupQueryAttention, which that provider has, not to seqedge.Attention;
    the ops whose contrib forms are CPU-only keep seqedge's kernels, and the CPU (chosen, or the host) keeps them all."""
    from seqedge.cli.export import choose_runtime

    choice = choose_runtime("rtx4090", build_model("transformer", "tiny"), unit)
    assert choice.ops_flavour == "fused" and (choice.unit == "gpu") == (unit != "cpu"), choice
    chosen = {lw.op: lw.variant for lw in resolve(choice.ops_flavour, unit=choice.unit)[0]}
    host = {lw.op: lw.variant for lw in resolve("fused")[0]}
    assert chosen["seqedge::attention"] == ("contrib" if choice.unit == "gpu" else "fused") and host["seqedge::attention"] == "fused"
    assert {op: v for op, v in chosen.items() if op != "seqedge::attention"} == {
        op: v for op, v in host.items() if op != "seqedge::attention"}
    assert LOWERINGS["seqedge::attention:contrib"].uses[0].op == "GroupQueryAttention"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """One verified artifact per family × flavour (RNNs have one native form)."""
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for fam in FAMILY_NAMES:
        for flavour in (FLAVOURS if fam in ("mamba", "mamba2", "transformer", "s4") else ("fused",)):
            torch.manual_seed(0)
            model = build_model(fam, "tiny").eval()
            ckpt = save_checkpoint(model, root / f"ck-{fam}-{flavour}")
            export(model, ExportPlan(out=root / f"{fam}-{flavour}", ops=flavour, verify_steps=64,
                                     source={"kind": "checkpoint", "path": str(ckpt)}))
            out[(fam, flavour)] = (root / f"{fam}-{flavour}", model, ckpt)
    return out


def test_every_family_and_flavour_exports_with_parity(artifacts):
    for (fam, flavour), (folder, _, _) in artifacts.items():
        m = read_manifest(folder)
        assert set(MANIFEST.required) <= set(m), (fam, flavour)
        assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.onnx"]
        p = m["parity"]
        assert p["passed"] and p["steps"] == 64 and p["token_agreement"] == 1.0, (fam, flavour, p)
        assert p["max_abs_diff"] < 1e-3 and p["prefill_max_abs_diff"] < 1e-3
        assert [s["name"] for s in m["state"]] == [s.name for s in build_model(fam, "tiny").state_spec()]


class NotedSession:
    """An onnxruntime session that notes each run (the calls a prompt took)."""

    def __init__(self, session, calls: list):
        self.session, self.calls = session, calls

    def run_with_iobinding(self, binding):
        self.calls.append(binding)
        return self.session.run_with_iobinding(binding)

    def __getattr__(self, name):
        return getattr(self.session, name)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_prefill_in_chunks_is_the_same_sequence(artifacts, flavour, tmp_path):
    """A manifest's prefill_chunk (models without attention): onnxruntime runs a long prompt in pieces of it (the
    last one token), the state carried in the bound buffers; logits and state are the model's, as in one call."""
    folder, model, _ = artifacts[("mamba", flavour)]
    assert read_manifest(folder)["prefill_chunk"] >= 2
    assert read_manifest(artifacts[("transformer", flavour)][0])["prefill_chunk"] is None
    chunked = tmp_path / "chunked"
    shutil.copytree(folder, chunked)
    manifest = json.loads((chunked / "manifest.json").read_text())
    (chunked / "manifest.json").write_text(json.dumps({**manifest, "prefill_chunk": 16}))
    tokens = torch.randint(0, 256, (1, 49))  # 16 + 16 + 16 + 1
    with torch.no_grad():
        ref, s_ref = model.prefill(tokens, model.init_state(1), last_only=True)
    for path, calls in ((folder, 1), (chunked, 4)):
        runner, runs = open_artifact(path), []
        runner.session = NotedSession(runner.session, runs)
        got, state = runner.prefill(tokens, runner.init_state(1))
        assert (ref - got).abs().max().item() < 1e-3
        assert all((s_ref[n] - state[n]).abs().max().item() < 1e-3 for n in runner.state_names)
        assert len(runs) == calls, path


@pytest.mark.parametrize("fam,flavour", [("mamba", "fused"), ("mamba", "portable"), ("transformer", "fused"),
                                         ("transformer", "portable"), ("lstm", "fused"), ("gru", "fused"),
                                         ("rnn", "fused"), ("s4", "fused"), ("s4", "portable"), ("mamba2", "fused"),
                                         ("mamba2", "portable")])
def test_artifact_runs_any_length_with_state_carried(artifacts, fam, flavour):
    folder, model, _ = artifacts[(fam, flavour)]
    runner = open_artifact(folder)
    tokens = torch.randint(0, 256, (1, 41))
    with torch.no_grad():
        s_ref, s_art = model.init_state(1), runner.init_state(1)
        for chunk in (tokens[:, :3], tokens[:, 3:4], tokens[:, 4:37], tokens[:, 37:]):  # T = 3, 1, 33, 4
            ref, s_ref = model.prefill(chunk, s_ref, last_only=True)
            got, s_art = runner.prefill(chunk, s_art)
            assert (ref - got).abs().max().item() < 1e-3
    for name in s_ref:
        assert (s_ref[name].float() - s_art[name].float()).abs().max().item() < 1e-3, name


def test_every_position_logits_equal_stepping(artifacts):
    """The accuracy report reads every position's logits in chunks, from a copy of the graph without its
    last-position Slice: the logits stepping token by token gives, the state carried across chunks, for every
    family and flavour (the recurrent nets' TorchScript graphs too)."""
    from seqedge.runtimes.base import ArtifactRunner
    from seqedge.runtimes.onnxruntime import EVAL_CHUNK, every_position_graph

    tokens = torch.randint(0, 256, (1, EVAL_CHUNK + 40))  # two chunks
    for (fam, flavour), (folder, _, _) in artifacts.items():
        runner = open_artifact(folder)
        assert every_position_graph(folder / "model.onnx") is not None, (fam, flavour)
        got, stepped = runner.logits_each(tokens), ArtifactRunner.logits_each(runner, tokens)
        assert got.shape == stepped.shape == (tokens.shape[1], 256)
        assert (got - stepped).abs().max().item() < 1e-4 * max(1.0, stepped.abs().max().item()), (fam, flavour)


@pytest.mark.parametrize("fam,flavour", [("mamba", "fused"), ("mamba", "portable"), ("transformer", "fused"),
                                         ("transformer", "portable"), ("lstm", "fused")])
def test_bound_state_buffers_match_fresh_inputs(artifacts, fam, flavour):
    """The adapter binds its own state buffers (in place for the attention kernel's cache, alternating for the
    rest): every step equals onnxruntime fed fresh numpy copies, and a new sequence from `init_state` (or a
    state copied out) starts clean."""
    import numpy as np
    import onnxruntime as ort

    folder, _, _ = artifacts[(fam, flavour)]
    runner = open_artifact(folder)
    manifest = read_manifest(folder)
    shared = {n for n in runner.state_names if n.startswith(("k.", "v."))} if (fam, flavour) == ("transformer", "fused") else set()
    assert set(manifest["in_place_state"]) == shared
    session = ort.InferenceSession(str(folder / "model.onnx"), options_for(folder / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    names = runner.state_names
    tokens = torch.randint(0, 256, (1, 30))

    def plain(chunks):
        state = {n: t.numpy() for n, t in runner.init_state(1).items()}
        out = []
        for c in chunks:
            logits, *new = session.run(None, {"tokens": c.numpy(), **state})
            state = dict(zip(names, new))
            out.append(torch.from_numpy(logits))
        return out

    chunks = [tokens[:, :7], *(tokens[:, t:t + 1] for t in range(7, 30))]
    expected = plain(chunks)
    for _ in range(2):  # the second sequence reuses the buffers
        state = runner.init_state(1)
        for i, c in enumerate(chunks):
            logits, state = runner.prefill(c, state)
            assert torch.equal(logits, expected[i]), (fam, flavour, i)
            if i == 10:  # a state the caller copied is taken as given
                state = {n: t.clone() for n, t in state.items()}
    assert all(np.isfinite(t.float().numpy()).all() for t in state.values())


def test_fused_artifacts_use_the_fast_kernels(artifacts):
    import onnx

    kinds = {k: {n.op_type for n in onnx.load(str(f / "model.onnx")).graph.node} for k, (f, _, _) in artifacts.items()}
    # Mamba's block: the scan with its softplus step and silu(z) gate as one MambaScan (fusions.py), the
    # convolution channels last with no transposes around it — none of the elementwise nodes left
    assert {"MambaScan", "CausalConv1d"} <= kinds[("mamba", "fused")]
    assert not {"SelectiveScan", "Softplus", "Sigmoid", "Where", "LinearAttention", "CausalConvWithState"} & kinds[
        ("mamba", "fused")]
    mamba = read_manifest(artifacts[("mamba", "fused")][0])
    nodes = [n.op_type for n in onnx.load(str(artifacts[("mamba", "fused")][0] / "model.onnx")).graph.node]
    assert nodes.count("Transpose") < mamba["config"]["num_hidden_layers"]  # none per layer (the tied head's may remain)
    assert mamba["fusions"]["mamba_scan"] == mamba["config"]["num_hidden_layers"], mamba["fusions"]
    assert mamba["opset"]["seqedge"] == 1 and "libseqedge_ort_kernels" in mamba["requires"]
    assert read_manifest(artifacts[("transformer", "fused")][0])["opset"]["seqedge"] == 1
    assert "Scan" in kinds[("mamba", "portable")] and "LinearAttention" not in kinds[("mamba", "portable")]
    # attention as seqedge's kernel, reading the one `pos` of all layers, q/k/v handed over packed (no Split)
    llm = read_manifest(artifacts[("transformer", "fused")][0])
    graph = onnx.load(str(artifacts[("transformer", "fused")][0] / "model.onnx")).graph
    split_outputs = {o for n in graph.node if n.op_type == "Split" for o in n.output}
    attention = [n for n in graph.node if (n.domain, n.op_type) == ("seqedge", "Attention")]
    assert "GroupQueryAttention" not in kinds[("transformer", "fused")]
    assert len(attention) == llm["config"]["num_hidden_layers"] == llm["fusions"]["packed_qkv"]
    assert all(n.input[1] == n.input[2] == "" and n.input[0] not in split_outputs for n in attention)
    assert {n.input[5] for n in attention} == {"pos"} and [n.op_type for n in graph.node].count("Shape") == 1
    for fam in ("mamba", "transformer"):  # RMSNorm (+ the residual add) as onnxruntime's norm kernels, said so
        fused, portable = (read_manifest(artifacts[(fam, fl)][0]) for fl in ("fused", "portable"))
        assert {"SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"} <= kinds[(fam, "fused")]
        assert fused["fusions"]["rms_norm"] >= 1 and not portable["fusions"], fused["fusions"]
        assert "ReduceMean" not in kinds[(fam, "fused")] and "ReduceMean" in kinds[(fam, "portable")]
    assert all(not any(d in ("com.microsoft", "seqedge") for d in [n.domain for n in onnx.load(str(f / "model.onnx")).graph.node])
               for (fam, fl), (f, _, _) in artifacts.items() if fl == "portable")
    assert "LSTM" in kinds[("lstm", "fused")] and "GRU" in kinds[("gru", "fused")] and "RNN" in kinds[("rnn", "fused")]
    assert "SelectiveScan" in kinds[("s4", "fused")] and "Scan" in kinds[("s4", "portable")]
    assert {"SelectiveScan", "CausalConv1d"} <= kinds[("mamba2", "fused")] and "Scan" in kinds[("mamba2", "portable")]
    assert "LinearAttention" not in kinds[("mamba2", "fused")]  # its contrib form, where seqedge's kernels are missing


def test_shapes_over_the_same_symbols_are_computed_once():
    """A Shape over the same named dims as an earlier one reads the earlier one's output and the arithmetic on it
    is merged; a Shape over other names (or unnamed dims) is left alone. The graph gives what it gave before."""
    import onnx_ir as ir
    from onnx import TensorProto, helper

    from seqedge.exporters.onnx.fusions import share_shapes

    one = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    nodes = [helper.make_node("Shape", [x], [f"s{x}"], start=1, end=2) for x in ("a", "b", "c", "d")]
    nodes += [helper.make_node("Add", [f"s{x}", "one"], [f"p{x}"]) for x in ("a", "b", "c", "d")]
    nodes += [helper.make_node("Concat", ["pa", "pb", "pc", "pd"], ["out"], axis=0)]
    inputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, dims) for x, dims in
              (("a", [1, "T", 4]), ("b", [2, "T"]), ("c", [1, "S", 4]), ("d", [1, None, 4]))]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("out", TensorProto.INT64, [4])],
                              [one])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]))
    feeds = {"a": np.zeros((1, 3, 4), np.float32), "b": np.zeros((2, 3), np.float32),
             "c": np.zeros((1, 5, 4), np.float32), "d": np.zeros((1, 7, 4), np.float32)}
    run = lambda m: ort.InferenceSession(ir.to_proto(m).SerializeToString()).run(None, feeds)[0]  # noqa: E731
    before = run(model)
    assert share_shapes(model) == 1  # b's T is a's; c's S and d's unnamed dim are not
    ops = [n.op_type for n in model.graph]
    assert ops.count("Shape") == 3 and ops.count("Add") == 3
    assert before.tolist() == run(model).tolist() == [4, 4, 6, 8]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_node_count_does_not_depend_on_sequence_length(tmp_path, flavour):
    counts = set()
    for T in (3, 40):
        torch.manual_seed(0)
        m = export(build_model("mamba", "tiny"), ExportPlan(out=tmp_path / f"{T}", ops=flavour, example_len=T,
                                                            verify_steps=2))
        counts.add(m["node_count"])
    assert len(counts) == 1, counts


def test_generate_from_artifact_matches_checkpoint(artifacts):
    folder, model, ckpt = artifacts[("mamba", "fused")]
    runner = open_artifact(folder)
    assert generate(runner, b"def f(x):", 40) == generate(model, b"def f(x):", 40)
    r = CliRunner().invoke(app, ["generate", str(folder), "--prompt", "import ", "--max-new-tokens", "30"])
    r2 = CliRunner().invoke(app, ["generate", str(ckpt), "--prompt", "import ", "--max-new-tokens", "30"])
    assert r.exit_code == 0 and r.output == r2.output


def test_cli_export_inspect_verify(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["export", "--family", "gru", "--preset", "tiny", "--out", str(tmp_path / "a"), "--verbose"])
    assert r.exit_code == 0, r.output
    assert "agreement 100.0%" in r.output
    stages = dict(line.rsplit(None, 1) for line in r.output.split("stage", 1)[1].splitlines()[1:] if line.strip())
    assert {"ONNX conversion (TorchScript exporter)", "verification", "total"} <= {k.strip() for k in stages}
    top = [float(v) for k, v in stages.items() if not k.startswith((" ", "total"))]
    assert float(stages["total"]) >= sum(top) - 0.005 * len(top)  # each figure is rounded to 10 ms
    r = runner.invoke(app, ["inspect", str(tmp_path / "a"), "--json"])
    assert json.loads(r.output)["source"] == {"kind": "preset", "family": "gru", "preset": "tiny", "seed": 0}
    r = runner.invoke(app, ["inspect", str(tmp_path / "a")])
    assert r.exit_code == 0 and "aten::gru" in r.output
    r = runner.invoke(app, ["verify", str(tmp_path / "a"), "--steps", "8"])
    assert r.exit_code == 0 and "100.0% agree" in r.output, r.output


# ---- bad inputs -----------------------------------------------------------------------------------


class WithMHA(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.ModuleDict({"attn": torch.nn.MultiheadAttention(8, 2)})


def test_unsupported_layer_is_named(tmp_path):
    with pytest.raises(UnsupportedError, match=r"layer body\.attn \(torch\.nn\.modules\.activation\.MultiheadAttention\)"):
        export(WithMHA(), ExportPlan(out=tmp_path / "x"))
    assert not (tmp_path / "x").exists()


class Inconsistent(torch.nn.Module):
    """prefill and step disagree: the exported graph (prefill) cannot match the model's step."""

    def __init__(self):
        super().__init__()
        self.inner = build_model("gru", "tiny")

    def init_state(self, batch=1):
        return self.inner.init_state(batch)

    def prefill(self, tokens, state, last_only=False):
        return self.inner.prefill(tokens, state, last_only)

    def step(self, token, state):
        logits, state = self.inner.step(token, state)
        return logits + 1.0, state


def test_failed_parity_is_typed_and_leaves_nothing(tmp_path):
    with pytest.raises(ParityError) as e:
        export(Inconsistent(), ExportPlan(out=tmp_path / "x", verify_steps=4))
    assert len(e.value.failures) >= 4 and "decode step 0 logits" in e.value.failures[0]
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tmp_path, artifacts):
    (tmp_path / "x").mkdir()
    with pytest.raises(BadPathError, match="--force"):
        export(build_model("gru", "tiny"), ExportPlan(out=tmp_path / "x"))
    export(build_model("gru", "tiny"), ExportPlan(out=tmp_path / "x", force=True, verify_steps=2))
    assert (tmp_path / "x" / "manifest.json").is_file()


def test_corrupt_artifacts(tmp_path, artifacts):
    src = artifacts[("lstm", "fused")][0]
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    data = (bad / "model.onnx").read_bytes()
    (bad / "model.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptFileError, match="does not match its sha256"):
        open_artifact(bad)
    # truncated and the manifest "fixed" to match: onnxruntime itself refuses, and says which file
    m = json.loads((bad / "manifest.json").read_text())
    from seqedge.fsutil import sha256_file

    m["files"]["model.onnx"] = sha256_file(bad / "model.onnx")
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CorruptFileError, match="onnxruntime cannot load .*model.onnx"):
        open_artifact(bad)
    (bad / "manifest.json").write_text("{}")
    with pytest.raises(CorruptFileError, match="format: must be present"):
        open_artifact(bad)
    r = CliRunner().invoke(app, ["inspect", str(bad)])
    assert r.exit_code == 2 and r.output.startswith("error: manifest")
