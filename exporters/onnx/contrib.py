"""onnxscript handles for onnxruntime's `com.microsoft` contrib ops.

onnx itself has no schemas for these ops, and onnxscript needs one to emit a node, so the schema is
built from onnxruntime's own operator registry: what gets emitted is exactly what the installed
onnxruntime declares (inputs, optional inputs, attributes, type constraints).
"""

from __future__ import annotations

from functools import cache

from onnx.defs import OpSchema
from onnxscript.values import Op, Opset

DOMAIN = "com.microsoft"
MSFT = Opset(DOMAIN, 1)


@cache
def _ort_schemas() -> dict[str, object]:
    from onnxruntime.capi import _pybind_state

    return {s.name: s for s in _pybind_state.get_all_operator_schema() if s.domain == DOMAIN and s.since_version == 1}


def has_contrib_op(name: str) -> bool:
    return name in _ort_schemas()


@cache
def contrib_op(name: str, num_outputs: int | None = None) -> Op:
    """The op `name`; `num_outputs` keeps only the first outputs (trailing optional ones left unrequested)."""
    s = _ort_schemas()[name]
    P = OpSchema.FormalParameterOption

    def param(p):
        return OpSchema.FormalParameter(p.name, p.typeStr, "", param_option=getattr(P, str(p.option).split(".")[-1]))

    attrs = [OpSchema.Attribute(k, getattr(OpSchema.AttrType, str(a.type).split(".")[-1]), "", required=False)
             for k, a in s.attributes.items()]
    schema = OpSchema(name, DOMAIN, 1, inputs=[param(i) for i in s.inputs], outputs=[param(o) for o in s.outputs[:num_outputs]],
                      type_constraints=[(t.type_param_str, list(t.allowed_type_strs), "") for t in s.type_constraints],
                      attributes=attrs)
    return Op(MSFT, name, schema)
