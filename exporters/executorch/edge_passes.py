"""ExecuTorch's ATen-to-edge passes with each run of adjacent node-by-node passes done in one re-trace.

`to_edge_transform_and_lower` turns a method's ATen graph into the edge dialect with a list of passes
(exir/program/_program.py: `_generate_edge_program`). Seven of them are `ExportPass`es that only override
`call_operator` — each rewrites one node at a time (transpose to t_copy, views to view_copy, scalars to tensors,
SymInts to tensors, mixed dtypes, ATen to edge ops, memory formats to dim orders) — and each re-traces the whole
method with fake tensors, one of the lowering's costliest steps with a dynamic length. A class that inherits from
adjacent ones in order runs them as one chain per node: each pass's `super().call_operator` hands its result to
the next pass instead of the tracer, so one re-trace does what the run did, node for node.

Two more things make the whole list one re-trace per method instead of three (what it saved: README, the
lowering paragraph):
- torch's ReplaceViewOpsWithViewCopyOpsPass, which `_generate_edge_program` runs in a re-trace of its own first,
  is node by node too (each view op becomes its `_copy` variant). The only pass between it and the first run
  (ReplaceSymSizeOpPass: sym_size overload packets to overloads, in place) touches no view op, so `ViewCopyPass`,
  the same rewrite as an ExecuTorch `ExportPass`, heads that run instead.
- The whole-graph passes between the two runs (BRIDGED: removing full slices, same-type copies, empty cat inputs
  and dequantize-quantize pairs) are done node by node by `bridge_pass` inside one run (`Bridged`). Where a node
  needs what the stand-in does not do (an empty cat input, quantize ops, a no-op inside a control-flow body), the
  method goes through the passes as listed.

    with fused_edge_passes():
        edge = to_edge_transform_and_lower(programs, partitioner=[...])

`tests/test_executorch_export.py::test_skipping_inapplicable_xnnpack_passes_changes_nothing` checks that the
program is byte-identical with and without it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator

from torch.fx.passes.infra.pass_base import PassBase, PassResult

# The passes known to work node by node (read in executorch 1.5.1): each overrides `call_operator` only, and
# ScalarToTensorPass also `call`, to report whether it changed something (nothing reads that here)
NODE_LOCAL = ("ViewCopyPass", "NormalizeTransposePass", "ReplaceBrokenOpsWithFunctionalOpsPass", "ScalarToTensorPass",
              "SymToTensorPass", "RemoveMixedTypeOperators", "OpReplacePass", "MemoryFormatOpsPass")
# Whole-graph passes between two runs that `bridge_pass` does node by node (read in executorch 1.5.1)
BRIDGED = ("RemoveNoopPass", "PruneEmptyTensorsPass", "RemoveToCopyPass", "FoldRedundantDequantizeQuantizePass")


def node_local(p) -> bool:
    """One of NODE_LOCAL that, in the installed ExecuTorch, still overrides nothing but `call_operator` (and
    `__init__` without arguments, and `call`)."""
    from executorch.exir.pass_base import ExportPass

    cls = type(p)
    if cls.__name__ not in NODE_LOCAL or not isinstance(p, ExportPass):
        return False
    own = {name for c in cls.__mro__[:cls.__mro__.index(ExportPass)] for name, v in vars(c).items() if callable(v)}
    return "call_operator" in own and own <= {"call_operator", "call", "__init__"} \
        and not inspect.signature(cls).parameters


def fuse(passes: list, bridge: bool = True) -> list:
    """`passes` with each run of adjacent `node_local` ones replaced by one pass that chains them in order; with
    `bridge`, a run goes on across the BRIDGED passes between two runs, as `Bridged`."""
    out, run, spanned, pending = [], [], [], []  # run: (as listed, the pass); spanned: all listed since the run began;
    # pending: BRIDGED passes listed since the run's last node-local pass

    def flush():
        kinds = tuple(type(q) for _, q in run)
        # the class's MRO is the run's order: each super().call_operator reaches the next pass
        chain = type("+".join(k.__name__ for k in kinds), kinds, {})() if len(run) > 1 else None
        if bridge_pass() in kinds:  # behind it, the passes it spans as listed
            out.append(Bridged(chain, fuse(spanned[:len(spanned) - len(pending)], bridge=False)))
        elif chain is not None:
            out.append(chain)
        else:
            out.extend(listed for listed, _ in run)
        out.extend(pending)
        run.clear(), spanned.clear(), pending.clear()

    for listed in passes:
        p = getattr(listed, "__wrapped__", listed)  # a pass manager lists some passes inside a PassResult wrapper
        if not node_local(p):
            if bridge and run and type(p).__name__ in BRIDGED:
                pending.append(listed)
                spanned.append(listed)
                continue
            flush()
            out.append(listed)
            continue
        if type(p) in {type(q) for _, q in run}:  # the same pass again: a class cannot inherit from it twice
            flush()
        if pending:  # the run goes on past them: their node-by-node stand-in joins it
            run.append((None, bridge_pass()()))
            pending.clear()
        run.append((listed, p))
        spanned.append(listed)
    flush()
    return out


class Unbridgeable(Exception):
    """A node that one of the BRIDGED passes would handle in a way `bridge_pass` does not."""


@functools.cache
def bridge_pass() -> type:
    """The BRIDGED passes (executorch 1.5.1, exir/passes) node by node, at the top level of a method: a slice over
    the whole of a static tensor (RemoveNoopPass) and a copy to the same dtype, device, shape and strides
    (RemoveToCopyPass) hand their input on; a cat with an input known to be empty (PruneEmptyTensorsPass), a
    `to.dtype` or a quantize/dequantize op (RemoveNoopPass's and FoldRedundantDequantizeQuantizePass's dq-q pairs),
    and any of these inside a control-flow body (the passes look at the top-level graph only) raise `Unbridgeable`."""
    import torch
    from executorch.exir.pass_base import ExportPass
    from executorch.exir.passes.remove_noop_pass import _DEQUANT_OPS, _QUANT_OPS
    from torch.fx.experimental.symbolic_shapes import guard_or_true

    aten = torch.ops.aten

    def static(t) -> bool:
        return all(isinstance(d, int) for d in t.size())

    class BridgePass(ExportPass):
        depth = 0  # call_submodule's nesting: 1 is the method's own graph

        def call_submodule(self, graph_module, inputs):
            self.depth += 1
            try:
                return super().call_submodule(graph_module, inputs)
            finally:
                self.depth -= 1

        def call_operator(self, op, args, kwargs, meta):
            if op in _DEQUANT_OPS or op in _QUANT_OPS or op == aten.to.dtype:
                raise Unbridgeable(op)
            if op == aten.cat.default and any(not guard_or_true(t.data.numel() != 0) for t in args[0]):
                raise Unbridgeable(op)
            out = super().call_operator(op, args, kwargs, meta)
            x = args[0].data if op in (aten.slice_copy.Tensor, aten._to_copy.default) else None
            if x is None:
                return out
            y = out.data
            if op == aten.slice_copy.Tensor:
                noop = static(x) and static(y) and x.shape == y.shape
            else:
                noop = x.dtype == y.dtype and x.device == y.device and x.shape == y.shape and x.stride() == y.stride()
            if noop and self.depth > 1:
                raise Unbridgeable(op)
            return args[0] if noop else out  # the copy made is left without users: dead code, removed in `Bridged`

    return BridgePass


class Bridged(PassBase):
    """A run of node-local passes across BRIDGED ones in one re-trace; the passes as listed (`fallback`) where a
    node is `Unbridgeable`."""

    def __init__(self, chain, fallback: list):
        super().__init__()
        self.chain, self.fallback = chain, fallback

    def call(self, graph_module):
        try:
            result = self.chain(graph_module)
        except Unbridgeable:
            for p in self.fallback:
                graph_module = p(graph_module).graph_module
            return PassResult(graph_module, True)
        gm = result.graph_module
        if gm.graph.eliminate_dead_code():  # as the BRIDGED passes do
            gm.recompile()
        return PassResult(gm, True)


@functools.cache
def view_copy_pass() -> type:
    """torch's ReplaceViewOpsWithViewCopyOpsPass (torch/_export/passes) as an ExecuTorch `ExportPass`: a view op
    (its first argument aliased, not written) becomes its `_copy` overload, `_unsafe_view` becomes `view_copy`."""
    from executorch.exir.pass_base import ExportPass
    from torch._export.passes import replace_view_ops_with_view_copy_ops_pass as torch_pass
    from torch._ops import OpOverload

    class ViewCopyPass(ExportPass):
        def call_operator(self, op, args, kwargs, meta):
            if op in torch_pass._NON_FUNCTIONAL_OPS_TO_FUNCTIONAL_OPS:
                op = torch_pass._NON_FUNCTIONAL_OPS_TO_FUNCTIONAL_OPS[op]
            elif isinstance(op, OpOverload):
                op = torch_pass.get_view_copy_of_view_op(op._schema) or op
            return super().call_operator(op, args, kwargs, meta)

    return ViewCopyPass


class _Done(PassBase):
    """Stands in for a pass `_generate_edge_program` appends after the others when a fused run has done it."""

    def call(self, graph_module):
        return PassResult(graph_module, False)


def listed_passes(pre: list, op_replace, memory_format=None) -> list:
    """The passes `_generate_edge_program` runs from its view copies to its memory-format pass, given its `pre`
    list and its two appended passes: the view copies as `ViewCopyPass`, after ReplaceSymSizeOpPass."""
    from executorch.exir.passes.replace_sym_size_op_pass import ReplaceSymSizeOpPass

    at = next((i + 1 for i, p in enumerate(pre) if isinstance(getattr(p, "__wrapped__", p), ReplaceSymSizeOpPass)),
              0)  # ReplaceSymSizeOpPass leads the list (executorch 1.5.1): the view copies go right after it
    return [*pre[:at], view_copy_pass()(), *pre[at:], op_replace, *([memory_format] if memory_format else [])]


@contextlib.contextmanager
def fused_edge_passes() -> Iterator[None]:
    """While active, the edge-dialect conversion runs `fuse`d passes: the list ExecuTorch builds, with the view-copy
    pass it prepends moved after ReplaceSymSizeOpPass and the ATen-to-edge and memory-format passes it appends,
    its adjacent node-by-node runs chained."""
    from executorch.exir.program import _program

    names = "_get_aten_to_edge_passes", "ReplaceViewOpsWithViewCopyOpsPass", "OpReplacePass", "MemoryFormatOpsPass"
    original = {name: getattr(_program, name) for name in names}

    def aten_to_edge_passes(config):
        pre, post = original["_get_aten_to_edge_passes"](config)
        return fuse(listed_passes(pre, original["OpReplacePass"](),
                                  None if config._skip_dim_order else original["MemoryFormatOpsPass"]())), post

    for name, value in zip(names, (aten_to_edge_passes, _Done, _Done, _Done)):
        setattr(_program, name, value)
    try:
        yield
    finally:
        for name, value in original.items():
            setattr(_program, name, value)
