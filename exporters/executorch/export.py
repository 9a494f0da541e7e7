"""ExecuTorch exporter: one `model.pte` holding two methods over the same weights,

    prefill(tokens (B, T), *state) -> (logits (B, 1, V), *new_state)     2 <= T <= max_prefill_len
    decode(token (B, 1), *state)   -> (logits (B, 1, V), *new_state)

with recurrent state and `pos` carried explicitly, and attention KV caches held by the program as
mutable buffers shared by both methods (held_state.py; batch 1, one sequence per loaded program).
Lowered for XNNPACK (default) or the portable kernels; seqedge's ops lowered per method
(lowerings.py); RNN/LSTM/GRU swapped for layers over seqedge::rnn_scan (rnn.py). The manifest records, per method, how
many nodes XNNPACK took and which ops it did not, and why. Verified through `executorch.runtime`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import time
import warnings

import torch
from torch import nn

from seqedge.diagnostics import stage
from seqedge.errors import BadInputError
from seqedge.exporters.ahead_references import ahead_references
from seqedge.exporters.artifact import artifact_writer, base_manifest, finish
from seqedge.exporters.decompositions import METHOD_REWRITES
from seqedge.exporters.executorch import BACKENDS, native_ops
from seqedge.exporters.executorch.checked_once import checks_once
from seqedge.exporters.executorch.deferred_recompile import deferred_recompile
from seqedge.exporters.executorch.delegate_outputs import known_delegate_outputs
from seqedge.exporters.executorch.edge_passes import fused_edge_passes
from seqedge.exporters.executorch.emission_passes import dim_order_legalized_only_where_needed
from seqedge.exporters.executorch.held_state import HeldCacheGraph, held_caches
from seqedge.exporters.executorch.lowering_stages import lowering_stages
from seqedge.exporters.executorch.lowerings import METHODS, STEP, lowerings_for
from seqedge.exporters.executorch.merge_check import merge_check
from seqedge.exporters.executorch.method_worker import method_worker
from seqedge.exporters.executorch.one_decomposition import DECOMPOSED, decompose, one_decomposition
from seqedge.exporters.executorch.parallel_preprocess import parallel_preprocess, processes
from seqedge.exporters.executorch.partitioner import PrecheckedXnnpackPartitioner
from seqedge.exporters.executorch.provenance import shared_provenance
from seqedge.exporters.executorch.rnn import scan_rnns
from seqedge.exporters.executorch.state_in_place import states_in_place
from seqedge.exporters.executorch.step_partitions import LEFT_OUT, StepXnnpackPartitioner
from seqedge.exporters.executorch.xnnpack_passes import relevant_xnnpack_passes
from seqedge.exporters.interface import Interface, StatefulGraph, example_inputs
from seqedge.exporters.lowering import trace
from seqedge.exporters.plan import PREFILL_CHUNK, ExportPlan, int4_kernel_target, kv_cache_type
from seqedge.exporters.projections import freeze_constants, fuse_projections, gate_scans
from seqedge.exporters.support import EXPORTABLE_LAYERS, check_supported
from seqedge.quant.executorch import QuantizedEmbedding
from seqedge.quant.report import apply_executorch, module_float_matrices, pte_weight_bytes
from seqedge.quant.report import prepare as prepare_quant
from seqedge.runtimes.executorch import RUNNER_CONTRACT
from seqedge.schema import NATIVE_KERNELS

PROGRAM = "model.pte"
# Every weight starts on a page of the file, and so of the mapping the runtimes read it through: where the program
# happened to place mamba-130m's int4 codes at 384 mod 512 bytes, a decode step's products took 40 % longer than at
# 0 mod 512 (ETDump, 300 steps, separate processes, 38-47 against 26-35 us a call), page-aligned 30-31 us. The file
# grows by < 4 KB a tensor (mamba-130m: 97.8 -> 98.7 MB).
PAGE = 4096
# xnnpack_passes.py, partitioner.py, provenance.py, edge_passes.py, one_decomposition.py, merge_check.py,
# delegate_outputs.py, deferred_recompile.py: work the lowering skips because it cannot change the program;
# parallel_preprocess.py: the partitions lowered by several processes; method_worker.py: decode traced and decomposed
# by another process while this one does prefill. The test that the program is byte-identical without them turns
# this off once
SKIP_INAPPLICABLE_PASSES = True
DEFAULT_MAX_PREFILL = 4096

WHY_NOT_DELEGATED = {
    "scan": "control flow (a scan over time) runs in the ExecuTorch interpreter",
    "seqedge.selective_scan": "seqedge C++ kernel (runtimes/native), not an XNNPACK op",
    "seqedge.mamba_scan": "seqedge C++ kernel (the scan with Mamba's softplus step and gate, runtimes/native), not an "
                          "XNNPACK op",
    "seqedge.int4_mamba_scan": "seqedge C++ kernel (Mamba's int4 dt_proj and the scan with its softplus step and gate, "
                               "runtimes/native), not an XNNPACK op",
    "seqedge.causal_conv1d": "seqedge C++ kernel (a step of the convolution's window, runtimes/native), not an XNNPACK op",
    "seqedge.rnn_scan": "seqedge C++ kernel (the recurrent cell over time, runtimes/native), not an XNNPACK op",
    "seqedge.moe_ffn": "seqedge C++ kernel (the chosen experts of a mixture, runtimes/native), not an XNNPACK op",
    "seqedge.int4_matmul": "seqedge C++ kernel (an int4 linear layer, runtimes/native), not an XNNPACK op",
    "seqedge.int4_matmul_swiglu": "seqedge C++ kernel (an int4 gate/up projection and its SwiGLU, runtimes/native), "
                                  "not an XNNPACK op",
    "seqedge.rms_norm": "seqedge C++ kernel (an RMSNorm, runtimes/native), not an XNNPACK op",
    "seqedge.to_half": "seqedge C++ kernel (new keys and values rounded into float16 caches), not an XNNPACK op",
    "seqedge.cached_sdpa": "seqedge C++ kernel (attention over the held KV cache), not an XNNPACK op",
    "aten.embedding": "a table lookup: XNNPACK has no gather kernel",
    "aten.sym_size": "shape arithmetic for the dynamic length",
    "llama.": "ExecuTorch's LLM kernel (KV cache write / attention over the cache), not an XNNPACK op",
    "aten._local_scalar_dense": "reads pos as the cache offset",
    "auto_functionalized": "an in-place kernel call (llama::update_cache writing the held KV cache)",
    "aten._assert_scalar": "a bounds check on pos (a scalar, no tensor work)",
    "alloc": "memory planning",
}

SCALAR_OPS = dict.fromkeys(("ge", "le", "lt", "gt", "eq", "add", "sub", "mul"), "scalar arithmetic on shapes or pos")


def _shortcut(context):
    """`context()`, one of the lowering shortcuts SKIP_INAPPLICABLE_PASSES names, or nothing while they are off."""
    return context() if SKIP_INAPPLICABLE_PASSES else contextlib.nullcontext()


def _trace(wrapper, model, names, method: str, max_len: int):
    init = model.init_state(1)
    args = (example_inputs(model, T=1 if method == STEP else 5)[0], *(init[n] for n in names))
    shapes = None
    if method == "prefill":
        shapes = {"tokens": {1: torch.export.Dim("T", min=2, max=max_len)}, "state": tuple(None for _ in names)}
    return trace(wrapper, args, shapes, lowerings_for(method), rewrites=METHOD_REWRITES[method])


def _op_name(target) -> str:
    """`aten.mean` for an edge/aten overload (`aten::mean.dim`), the function name for others (`scan`)."""
    name = target.name() if callable(getattr(target, "name", None)) else getattr(target, "__name__", str(target))
    if "::" not in name:
        return name
    namespace, op = name.split("::", 1)
    return f"{namespace}.{op.split('.')[0]}"


def _why(op: str) -> str:
    """Why `op` runs outside XNNPACK: its own entry, else the first entry its name contains."""
    return WHY_NOT_DELEGATED.get(op) or next((w for k, w in WHY_NOT_DELEGATED.items() if k in op),
                                             SCALAR_OPS.get(op, "no XNNPACK kernel: runs in ExecuTorch's CPU kernels"))


def _delegation(program) -> dict:
    """Per-method: delegated node count, the ops left outside XNNPACK (count) and why."""
    stats = {}
    for method in program.methods:
        graph = program.exported_program(method).graph_module
        delegated = 0
        outside: collections.Counter = collections.Counter()  # (op, why)
        for node in graph.graph.nodes:
            if node.op != "call_function" or "getitem" in str(node.target):
                continue
            if "executorch_call_delegate" in str(node.target):
                lowered = getattr(graph, node.args[0].target)
                delegated += sum(1 for n in lowered.original_module.graph.nodes if n.op == "call_function")
            else:
                op = _op_name(node.target)
                outside[op, node.meta.get(LEFT_OUT) or _why(op)] += 1
        total = delegated + sum(outside.values())
        stats[method] = {
            "delegated_nodes": delegated,
            "total_nodes": total,
            "delegated_share": round(delegated / total, 3) if total else 0.0,
            "not_delegated": [{"op": op, "count": n, "why": why} for (op, why), n in outside.most_common()],
        }
    return stats


def _passes_an_input_out(edge) -> bool:
    """Whether a method returns one of its inputs as it is (its memory then has to be planned like the input's).

    Otherwise the inputs and outputs are left out of the memory plan, so the state never moves between calls:
    - outputs: the runner hands each call the buffers to write into (seqedge_engine.cpp: the state's other half,
      swapped after the call) and the Python adapter reads them where ExecuTorch put them, with no copy out of
      the arena (48 state tensors of mamba-130m, 2.8 MB a token, cost 0.3 ms of a 4 ms step cloned through the
      pybindings);
    - inputs: ExecuTorch reads the caller's tensor where it lies instead of copying it into the arena
      (Method::set_input's memcpy of the same 2.8 MB was 7 % of the runner's main thread on mamba-130m). The
      Python adapter passes a method's own output storage back in, so a state input and its output may be one
      buffer: the state kernels read each block's state before writing it (selective_scan_core.h,
      causal_conv_core.h) and a decomposition's state output is a slice of a concatenation made first."""
    for method in METHODS:
        graph = edge.exported_program(method).graph
        inputs = {n for n in graph.nodes if n.op == "placeholder"}
        output = next(n for n in graph.nodes if n.op == "output")
        if any(a in inputs for a in output.args[0]):
            return True
    return False


def export(model: nn.Module, plan: ExportPlan) -> dict:
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass

    if plan.backend not in BACKENDS:
        raise BadInputError(f"unknown --backend {plan.backend!r} for executorch", f"valid: {', '.join(BACKENDS)}")
    check_supported(model, EXPORTABLE_LAYERS, target="ExecuTorch")
    model = model.eval()
    quant = prepare_quant(plan, model, "executorch")
    quant.int4_kernel = int4_kernel_target(plan) and native_ops.kernels_here()
    interface = Interface.of(model)
    held = held_caches(model, interface.state, kv_cache_type(plan))
    if held:
        native_ops.llm_kernels()
        interface = interface.without_state({s.name for s in held})
    names = [s.name for s in interface.state]
    positions = getattr(model, "max_seq_len", None)  # a KV cache and RoPE tables of this many positions
    max_len = plan.max_len or positions or DEFAULT_MAX_PREFILL
    if max_len < 2:
        raise BadInputError(f"--max-len must be at least 2, got {max_len}", "e.g. --max-len 1024")
    if positions and max_len > positions:
        raise BadInputError(f"--max-len {max_len} is longer than the model's {positions} positions (its KV cache)",
                            f"pass --max-len {positions} or less, or a larger --max-seq-len where the model allows it")
    scanned = gate_scans(freeze_constants(fuse_projections(scan_rnns(model))))
    with stage("ExecuTorch quantization", plan.subject):
        traced = apply_executorch(scanned, quant)
    wrapper = HeldCacheGraph(traced, names, held) if held else StatefulGraph(traced, names)
    hint = "try --backend portable" if plan.backend == "xnnpack" else ""

    with artifact_writer(plan.out, force=plan.force) as tmp, ahead_references(model, plan, quant, max_len) as ahead:
        t0 = time.perf_counter()
        with torch.no_grad(), warnings.catch_warnings(), _shortcut(shared_provenance):
            warnings.simplefilter("ignore")
            partitioners = {method: [] for method in METHODS}
            if plan.backend == "xnnpack":
                kind = PrecheckedXnnpackPartitioner if SKIP_INAPPLICABLE_PASSES else StepXnnpackPartitioner
                partitioners = {method: [kind(step=method == STEP)] for method in METHODS}
            jobs = processes(plan.jobs) if SKIP_INAPPLICABLE_PASSES else 1
            *here, there = METHODS  # the last method traced and decomposed in a worker (method_worker.py)

            def trace_there():
                program, lowered = _trace(wrapper, traced, names, there, max_len)
                return program, [lowerings_for(there).index(lw) for lw in lowered]  # picklable

            programs, used = {}, {}
            with method_worker(trace_there, partitioners[there], jobs) as worker:
                for method in here:
                    with stage(f"torch.export ({method})", plan.subject, users_code=plan.users_code):
                        programs[method], used[method] = _trace(wrapper, traced, names, method, max_len)
                    if worker.pid is not None:  # decomposed while the worker does the same for its method
                        with stage(f"decomposition ({method})", plan.subject, hint):
                            done = decompose(programs[method], partitioners[method])
                        if getattr(done, DECOMPOSED, False):  # else ExecuTorch's way, in the lowering
                            programs[method] = done
                got = None
                if worker.pid is not None:
                    with stage(f"{there}: waiting for its worker, loading", plan.subject):
                        got = worker.get()
            if got is not None:
                programs[there], used[there] = got[0], [lowerings_for(there)[i] for i in got[1]]
            else:
                with stage(f"torch.export ({there})", plan.subject, users_code=plan.users_code):
                    programs[there], used[there] = _trace(wrapper, traced, names, there, max_len)
            with stage("ExecuTorch lowering", plan.subject, hint), \
                    lowering_stages(plan.subject, hint, jobs), \
                    _shortcut(relevant_xnnpack_passes), \
                    _shortcut(checks_once), \
                    _shortcut(dim_order_legalized_only_where_needed), \
                    _shortcut(fused_edge_passes), \
                    _shortcut(one_decomposition), \
                    _shortcut(merge_check), \
                    _shortcut(known_delegate_outputs), \
                    _shortcut(functools.partial(parallel_preprocess, jobs)), \
                    _shortcut(deferred_recompile):
                edge = to_edge_transform_and_lower(programs, partitioner=partitioners,
                                                   compile_config=EdgeCompileConfig(_check_ir_validity=False))
                delegation = _delegation(edge)
                planned = _passes_an_input_out(edge)
                in_place = [] if planned else states_in_place(edge, METHODS, names)
                with stage("program emission (memory planning, serialisation)", plan.subject, hint):
                    program = edge.to_executorch(ExecutorchBackendConfig(
                        memory_planning_pass=MemoryPlanningPass(share_mutable_buffers=True,
                                                                alloc_graph_input=planned,
                                                                alloc_graph_output=planned),
                        emit_mutable_buffer_names=True, constant_tensor_alignment=PAGE, segment_alignment=PAGE))
        (tmp / PROGRAM).write_bytes(program.buffer)
        export_seconds = time.perf_counter() - t0
        recurrent = sorted({type(m).__name__.lower() for m in model.modules() if isinstance(m, nn.RNNBase)})
        native = sorted({f"{op.name}.{op.overload}" for method_plan in program.executorch_program.execution_plan
                         for op in method_plan.operators} & set(NATIVE_KERNELS))  # what the program calls
        manifest = {
            **base_manifest(model, plan, interface),
            "format": "executorch",
            "ops": [{"op": lw.op, "method": m, "lowering": lw.summary, "kind": lw.kind} for m in METHODS for lw in used[m]]
                   + [{"op": f"aten::{kind}", "method": "both", "lowering": "the input projection as one matmul, "
                       "then seqedge::rnn_scan, seqedge's C++ kernel of the cell over time (both methods)",
                       "kind": "native"} for kind in recurrent],
            "backend": plan.backend,
            "graphs": {"prefill": f"{PROGRAM}#prefill", "decode": f"{PROGRAM}#decode"},
            "graph_note": "one program, two methods over shared weights: prefill (2 <= T <= max_prefill_len) and "
                          "decode (T = 1); logits are for the last position",
            "max_prefill_len": max_len,
            "prefill_chunk": None if held else PREFILL_CHUNK,
            "delegation": delegation,
            "native_kernels": native,
            "llm_kernels": ["llama::update_cache.out"] if held else [],
            "quantized_kernels": any(isinstance(m, QuantizedEmbedding) for m in traced.modules()),
            "in_place_state": in_place,
            "held_state": [{**s.to_json(), "shape": [s.shape[0], s.shape[2], s.shape[1], s.shape[3]],
                            "layout": "(batch, seq, kv_heads, head_dim)"} for s in held],  # as HeldCacheGraph holds it
            "held_state_note": "attention KV caches live in the program, shared by prefill and decode: one sequence "
                               "per loaded program; pos = 0 starts a new one" if held else None,
            "requires": "executorch==1.5.1" + (" + libseqedge_kernels (seqedge build-runner)" if native else ""),
            "runner_contract": RUNNER_CONTRACT,
            "export_seconds": round(export_seconds, 2),
            "program_bytes": len(program.buffer),
        }
        manifest = finish(tmp, model, manifest, plan, quant, pte_weight_bytes(program.buffer),
                          module_float_matrices(traced), ahead=ahead)
    return manifest



