"""onnxscript handles for onnxruntime's `com.microsoft` contrib ops, and the contract each fused
lowering holds with them.

onnx itself has no schemas for these ops, and onnxscript needs one to emit a node, so the schema is
built from onnxruntime's own operator registry. Those schemas change between onnxruntime releases
(1.32 gave CausalConvWithState a third output), so a lowering never emits "whatever is declared": it
states a `ContribUse` — the inputs it passes (by position, name and dtype), the attributes it sets (name
and type) and the leading outputs it reads — and emits exactly that. `ContribUse.problems()` checks the
contract against the installed onnxruntime; the exporter falls back to the portable lowering when it
fails, and tests/test_contrib_contract.py fails naming the op, the field and the version.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from onnx.defs import OpSchema
from onnxscript.values import Op, Opset

DOMAIN = "com.microsoft"
MSFT = Opset(DOMAIN, 1)


@cache
def ort_schemas() -> dict[str, object]:
    """onnxruntime's registered `com.microsoft` schemas (version 1), by op name."""
    from onnxruntime.capi import _pybind_state

    return {s.name: s for s in _pybind_state.get_all_operator_schema() if s.domain == DOMAIN and s.since_version == 1}


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _option(p) -> str:
    return str(p.option).split(".")[-1]  # "Single" | "Optional" | "Variadic"


def _allowed(schema, type_str: str) -> set[str]:
    """The tensor types a formal parameter accepts: its type constraint's list, or the literal type."""
    for c in schema.type_constraints:
        if c.type_param_str == type_str:
            return set(c.allowed_type_strs)
    return {type_str}


@dataclass(frozen=True)
class ContribUse:
    """What one lowering needs of one contrib op. `inputs`/`outputs`: (schema name, dtype) in position
    order — the leading ones the lowering passes or reads; `attributes`: (name, "INT"|"FLOAT"|"STRING");
    `gpu`: onnxruntime's CUDA provider has a kernel for it too (not only the CPU provider)."""

    op: str
    inputs: tuple[tuple[str, str], ...]
    attributes: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, str], ...]
    gpu: bool = False

    def problems(self, schemas: dict[str, object] | None = None) -> list[str]:
        """Every way the installed onnxruntime's schema breaks this contract (empty when it holds)."""
        schemas = ort_schemas() if schemas is None else schemas
        s = schemas.get(self.op)
        if s is None:
            return [f"{DOMAIN}.{self.op} is not registered"]
        out = []
        for kind, wanted, declared in (("input", self.inputs, list(s.inputs)), ("output", self.outputs, list(s.outputs))):
            for i, (name, dtype) in enumerate(wanted):
                if i >= len(declared):
                    out.append(f"{kind} {i} ({name}) is not declared (the op has {len(declared)} {kind}s)")
                elif declared[i].name != name:
                    out.append(f"{kind} {i} is {declared[i].name!r}, not {name!r}")
                elif f"tensor({dtype})" not in _allowed(s, declared[i].typeStr):
                    out.append(f"{kind} {i} ({name}) does not accept tensor({dtype})")
            if kind == "input":
                out += [f"input {j} ({p.name}) is required but not passed"
                        for j, p in enumerate(declared) if j >= len(wanted) and _option(p) == "Single"]
        for name, typ in self.attributes:
            a = s.attributes.get(name)
            if a is None:
                out.append(f"attribute {name!r} is not declared")
            elif str(a.type).split(".")[-1] != typ:
                out.append(f"attribute {name!r} is {str(a.type).split('.')[-1]}, not {typ}")
        given = {n for n, _ in self.attributes}
        out += [f"attribute {k!r} is required but not set" for k, a in s.attributes.items() if a.required and k not in given]
        return [f"{DOMAIN}.{self.op}: {p}" for p in out]

    def __call__(self, *inputs, **attributes):
        """Emit the node (inside an onnxscript translation): exactly the declared inputs and outputs."""
        if len(inputs) != len(self.inputs) or set(attributes) - {n for n, _ in self.attributes}:
            raise TypeError(f"{self.op}: the lowering passes what its ContribUse does not declare")
        return contrib_op(self.op, len(self.outputs))(*inputs, **attributes)


@cache
def contrib_op(name: str, num_outputs: int) -> Op:
    """The op `name` with only its first `num_outputs` outputs in the schema (trailing optional ones are
    left unrequested, so the node has exactly the outputs a lowering unpacks)."""
    s = ort_schemas()[name]
    P = OpSchema.FormalParameterOption

    def param(p):
        return OpSchema.FormalParameter(p.name, p.typeStr, "", param_option=getattr(P, _option(p)))

    attrs = [OpSchema.Attribute(k, getattr(OpSchema.AttrType, str(a.type).split(".")[-1]), "", required=False)
             for k, a in s.attributes.items()]
    schema = OpSchema(name, DOMAIN, 1, inputs=[param(i) for i in s.inputs],
                      outputs=[param(o) for o in s.outputs[:num_outputs]],
                      type_constraints=[(t.type_param_str, list(t.allowed_type_strs), "") for t in s.type_constraints],
                      attributes=attrs)
    return Op(MSFT, name, schema)
