"""Lowering to XNNPACK without the passes, and the re-traces, that cannot change a partition.

XNNPACK's `preprocess` runs its whole pass list (17 passes) on every partition the partitioner hands it, and each
pass re-traces the partition with fake tensors. A transformer's custom attention and cache ops cut each layer into
several partitions, so a 30-layer model's two methods cost hundreds of partitions x 17 re-traces: most of the
ExecuTorch export time. A pass whose target ops a partition does not contain cannot change it (the upsampling and
SDPA pattern matchers, batch norm, PReLU, padding, conv1d, activation fusion, and the revert of dim-order copies,
which re-traced every partition to find none on mamba-130m: 6.3 of its 34 s of preprocess on one core): those are
skipped for that partition, the others run as before, in order. So is constant folding (ConstPropPass) where no
node can fold: every node takes a graph input or the result of another node that cannot fold.

Most of the remaining passes (RETRACE_AFTER_EDIT) edit the graph in place and then re-trace it, only to regenerate
node metadata, whether or not the edit found anything: on mamba-130m, six re-traces per partition that change
nothing. A re-trace of a graph that is as it was reproduces it node for node, its metadata copied; so where such a
pass's edit left the graph's nodes, targets and arguments as they were, its re-trace is skipped.

    with relevant_xnnpack_passes():
        edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])

`tests/test_executorch_export.py::test_skipping_inapplicable_xnnpack_passes_changes_nothing` checks that the
program is byte-identical with and without it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator

# pass class name -> substrings of edge op names; the pass runs only when one of them is in the partition
APPLIES_TO = {
    "DimOrderOpsRevertPass": ("dim_order",),  # _to_dim_order_copy, _clone_dim_order, _empty_dim_order back to aten
    "ConvertToUpsampleBilinear2d": ("upsample", "index.Tensor", "_unsafe_index"),
    "ConvertToSDPAPass": ("softmax",),
    "FuseBatchNormPass": ("batch_norm",),
    "DecomposeBatchNorm": ("batch_norm",),
    "FuseActivationPass": ("relu", "hardtanh"),
    "InsertPadQDQPass": ("pad",),
    "Conv1dUnsqueezePass": ("convolution",),
    "PReLUReshapePass": ("prelu",),
    "DecomposeConcatenate": ("cat.default",),
}

# Passes (read in executorch 1.5.1) whose `call` edits the graph in place and then calls ExportPass.call to re-trace
# it (ChannelsLastTaggedReshapePass looks at the result again); none overrides a hook of the re-trace itself
RETRACE_AFTER_EDIT = ("ConvertToLinearPass", "PropagateCustomMetaPass", "DecomposeConcatenate", "RemoveGetItemPass",
                      "ChannelsLastTaggedReshapePass", "RemoveRedundantCopyPass")
_START = "_seqedge_graph_at_start"


def _ops(exported_program) -> set[str]:
    return {str(getattr(n.target, "__name__", n.target)) for n in exported_program.graph.nodes
            if n.op == "call_function"}


def may_fold(graph) -> bool:
    """Whether ConstPropPass could fold a node of `graph`. It folds a node all of whose arguments are constants, and
    in a re-trace only attributes (`get_attr`) and the results of folded nodes are: a graph without attributes, each
    of whose nodes takes at least one other node, has nothing to fold."""
    return any(n.op == "get_attr" or (n.op == "call_function" and not n.all_input_nodes) for n in graph.nodes)


def needed(passes: list, ops: set[str], graph=None) -> list:
    """`passes` without those whose target ops are not among `ops`, and without ConstPropPass where `graph` (when
    given) has nothing to fold."""
    keep = []
    for p in passes:
        targets = APPLIES_TO.get(p.__name__)
        if p.__name__ == "ConstPropPass" and graph is not None and not may_fold(graph):
            continue
        if targets is None or any(t in op for op in ops for t in targets):
            keep.append(p)
    return keep


def _structure(graph) -> list:
    """What a pass's edit can change: each node (by identity, in order) with its target and arguments."""
    return [(n, n.op, n.target, n.args, n.kwargs) for n in graph.nodes]


@functools.cache
def retrace_only_if_edited(cls):
    """`cls` (one of RETRACE_AFTER_EDIT) as a pass that notes its graph's structure before its edit, so that the
    re-trace after it (ExportPass.call, within relevant_xnnpack_passes) is skipped when the edit changed nothing;
    any other pass as it is."""
    from executorch.exir.pass_base import ExportPass

    if cls.__name__ not in RETRACE_AFTER_EDIT:
        return cls
    own = {name for c in cls.__mro__[:cls.__mro__.index(ExportPass)] for name, v in vars(c).items()
           if inspect.isfunction(v)}
    if "call" not in own or own & (set(dir(ExportPass)) - {"call", "__init__"}):
        return cls  # a newer ExecuTorch changed the pass: left as it is

    def call(self, graph_module):
        self.__dict__[_START] = _structure(graph_module.graph)
        return cls.call(self, graph_module)

    return type(cls.__name__, (cls,), {"call": call, "__qualname__": cls.__qualname__, "__module__": cls.__module__})


@contextlib.contextmanager
def relevant_xnnpack_passes() -> Iterator[None]:
    """While active, XNNPACK's pass manager drops the passes `needed` rules out for the partition it gets, and the
    re-traces of RETRACE_AFTER_EDIT passes whose edit left the partition as it was."""
    from executorch.backends.xnnpack._passes import XNNPACKPassManager
    from executorch.exir.pass_base import ExportPass
    from torch.fx.passes.infra.pass_base import PassResult

    original = XNNPACKPassManager.__init__
    had_own_call = "call" in ExportPass.__dict__
    original_call = ExportPass.call

    def __init__(self, exported_program, passes=None):
        original(self, exported_program, passes)
        self.passes = [retrace_only_if_edited(p)
                       for p in needed(self.passes, _ops(exported_program), exported_program.graph)]

    def call(self, graph_module):
        start = self.__dict__.pop(_START, None)
        if start is not None and _structure(graph_module.graph) == start:
            return PassResult(graph_module, False)
        return original_call(self, graph_module)

    XNNPACKPassManager.__init__ = __init__
    ExportPass.call = call
    try:
        yield
    finally:
        XNNPACKPassManager.__init__ = original
        if had_own_call:
            ExportPass.call = original_call
        else:
            del ExportPass.call
