"""Which states of an ExecuTorch program may be read and written in one buffer (the manifest's `in_place_state`).

The exporter leaves a program's inputs and outputs out of its memory plan (export.py `_passes_an_input_out`):
ExecuTorch then reads each input where the caller holds it and writes each output where the caller says. The
Python pybindings keep one output storage per method, so the adapter's next call hands that storage back in as
the state: input and output are one buffer. That is safe for a state only when nothing reads its input after
its output starts being written:
- the node that writes the output (seen through views and tuple items) runs after every other reader of the
  input, i.e. each reader is one of its ancestors (ExecuTorch runs a method's instructions in graph order);
- and if that node reads the input itself, it is a kernel that reads each block's state before writing it
  (ALIAS_SAFE: selective_scan_core.h for the scans, causal_conv_core.h, rnn_scan.cpp copies h0 first), never a
  delegate call (XNNPACK's order inside it is not visible here).

Mamba's state passes (its step kernels are the only readers); a Transformer's `pos` does not (RoPE and the cache
write read it after `pos + T` is computed), and the adapter copies such a state before the call that would
overwrite it. The native engine double-buffers every state, so this matters to the Python adapter only.
"""

from __future__ import annotations

ALIAS_SAFE = ("seqedge.selective_scan", "seqedge.mamba_scan", "seqedge.int4_mamba_scan", "seqedge.causal_conv1d",
              "seqedge.rnn_scan")
VIEWS = ("getitem", "view", "squeeze", "unsqueeze", "alias", "reshape")  # share their input's memory (or may)


def _name(node) -> str:
    return str(getattr(node.target, "__name__", node.target))


def _is_view(node) -> bool:
    return node.op == "call_function" and any(v in _name(node) for v in VIEWS)


def _writer(node):
    """The node whose kernel writes `node`'s memory: through views and tuple items to their source."""
    while _is_view(node) and node.args and hasattr(node.args[0], "op"):
        node = node.args[0]
    return node


def _readers(node) -> set:
    """The nodes that read `node`'s memory: its users, through views of it."""
    out = set()
    for user in node.users:
        out |= _readers(user) if _is_view(user) else {user}
    return out


def _ancestors(node) -> set:
    seen, stack = set(), list(node.all_input_nodes)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(n.all_input_nodes)
    return seen


def _safe(state_input, state_output) -> bool:
    writer = _writer(state_output)
    if writer is state_input or writer.op != "call_function":
        return False
    before = _ancestors(writer)
    for reader in _readers(state_input):
        if reader is writer:
            if not any(k in _name(writer) for k in ALIAS_SAFE):
                return False
        elif reader not in before:
            return False
    return True


def states_in_place(edge, methods, names: list[str]) -> list[str]:
    """The states (of `names`, the methods' explicit state in order) every method may update in one buffer."""
    safe = set(names)
    for method in methods:
        program = edge.exported_program(method)
        user_inputs = program.graph_signature.user_inputs
        placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
        output = next(n for n in program.graph.nodes if n.op == "output")
        state_inputs = [placeholders[name] for name in user_inputs[1:]]  # after the tokens
        state_outputs = list(output.args[0])[1:]  # after the logits
        if len(state_inputs) != len(names) or len(state_outputs) != len(names):
            return []
        for name, i, o in zip(names, state_inputs, state_outputs):
            if not (hasattr(o, "op") and _safe(i, o)):
                safe.discard(name)
    return [n for n in names if n in safe]
