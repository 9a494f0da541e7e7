"""Quantization: named recipes (recipe.py), their ONNX and ExecuTorch implementations (onnx.py,
executorch.py) and the size/accuracy report that gates every export (report.py)."""

from seqedge.quant.recipe import QUANT_FORMATS, RECIPES, Parity, Recipe

__all__ = ["QUANT_FORMATS", "RECIPES", "Parity", "Recipe"]
