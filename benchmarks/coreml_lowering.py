"""How far Apple's Neural Engine path goes on Linux: seqedge's static graphs through ExecuTorch's Core ML backend.

    .venv/bin/python benchmarks/coreml_lowering.py [--families transformer,mamba] [--preset tiny] [--chunk 128]

For each family, the static decode step and padded prefill chunk (exporters/onnx/static.py: the same modules
and `static` lowerings the NPU ONNX artifacts use) are torch.exported and lowered with ExecuTorch's
CoreMLPartitioner (fp16 compute, compute units ALL: the Neural Engine where Core ML places the graph), then
serialized to a .pte. It prints, per graph: the lowering time, the Core ML delegates and every op left out of
them, and the program size. Running the programs needs Core ML (macOS/iOS): not here, so nothing is verified
and seqedge does not offer the path (`seqedge select --device iphone15pro` says why).
"""

from __future__ import annotations

import argparse
import time

import torch


def lower(module, args):
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from seqedge.exporters.lowering import trace
    from seqedge.exporters.onnx.lowerings import static_lowerings

    specs = CoreMLBackend.generate_compile_specs(compute_precision=ct.precision.FLOAT16, compute_unit=ct.ComputeUnit.ALL)
    with torch.no_grad():
        program, _ = trace(module, args, None, static_lowerings())
    lowered = to_edge_transform_and_lower(program, partitioner=[CoreMLPartitioner(compile_specs=specs)])
    calls = [n for n in lowered.exported_program().graph_module.graph.nodes if n.op == "call_function"]
    delegates = sum("executorch_call_delegate" in str(n.target) for n in calls)
    left = sorted({str(n.target) for n in calls if "executorch_call_delegate" not in str(n.target)
                   and "getitem" not in str(n.target)})
    return delegates, left, len(lowered.to_executorch().buffer)


def main() -> None:
    from seqedge.exporters.onnx.static import PaddedChunk, Step
    from seqedge.exporters.projections import fuse_projections
    from seqedge.models import build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="transformer,mamba")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--chunk", type=int, default=128)
    a = ap.parse_args()
    for family in a.families.split(","):
        torch.manual_seed(0)
        model = build_model(family, a.preset).eval()
        names, state = list(model.init_state(1)), list(model.init_state(1).values())
        graphs = {"decode": (Step(fuse_projections(model), names), (torch.zeros(1, 1, dtype=torch.long), *state)),
                  "prefill": (PaddedChunk(fuse_projections(model), names),
                              (torch.zeros(1, a.chunk, dtype=torch.long), torch.tensor([a.chunk]), *state))}
        for name, (module, args) in graphs.items():
            t0 = time.perf_counter()
            try:
                delegates, left, size = lower(module, args)
            except Exception as e:  # what the Core ML converter refuses is the finding
                print(f"{family}/{a.preset} {name}: FAILED {type(e).__name__}: {str(e).splitlines()[0][:300]}")
                continue
            print(f"{family}/{a.preset} {name} (T = {args[0].shape[1]}): lowered in {time.perf_counter() - t0:.1f} s, "
                  f"{delegates} Core ML delegate(s), ops left out: {', '.join(left) or 'none'}, .pte {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
