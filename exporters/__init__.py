"""Exporters (installed as `seqedge.exporters`): one subpackage per format, registered by name.

    from seqedge.exporters import export, ExportPlan
    artifact = export(model, ExportPlan(format="onnx", out="art"))

Each format's module is imported only when used, so ExecuTorch is not loaded for an ONNX export.
"""

from __future__ import annotations

import importlib

from seqedge.exporters.plan import ExportPlan
from seqedge.registry import Registry

FORMATS: Registry[str] = Registry("export format")
FORMATS.add("onnx", "seqedge.exporters.onnx.export")
FORMATS.add("executorch", "seqedge.exporters.executorch.export")


def export(model, plan: ExportPlan):
    """Export `model` as `plan` says; returns the artifact's manifest (dict) after verification."""
    module = importlib.import_module(FORMATS[plan.format])
    return module.export(model, plan)


__all__ = ["FORMATS", "ExportPlan", "export"]
