"""Quantization recipes: one registry of named recipes, each implemented per format by the library made
for that format (quant/onnx.py: onnxruntime.quantization; quant/executorch.py: torchao for XNNPACK).

    recipe = RECIPES["int4"]
    recipe.check(format="onnx", group_size=64)      # BadInputError / UnsupportedError, naming what can
    recipe.parity                                   # how close the artifact must stay to the fp32 model

A recipe says what it promises (bits, group sizes, calibration, the default accuracy gate and the parity
tolerance verification uses); the format modules say how. Which format implements which recipe is read
from the format modules' `IMPLEMENTS` tables, so it cannot drift from the code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace

from seqedge.errors import BadInputError, UnsupportedError
from seqedge.registry import Registry

QUANT_FORMATS = {"onnx": "seqedge.quant.onnx", "executorch": "seqedge.quant.executorch"}


@dataclass(frozen=True)
class Parity:
    """Verification rule. `tolerance`: max |Δ logits|; `min_token_agreement`: share of greedy tokens equal;
    `max_mean_kl`: mean KL(fp32 ‖ artifact) of the next-token distributions, nats per step. None: not gated,
    reported only. Quantized recipes gate on KL: greedy tokens of near-tied logits flip under any rounding
    (random-weight models, and 49k-token vocabularies), while KL measures how far the distributions moved.
    `baseline`: a reference grid (quant/reference.py) applied to the same fp32 weights; the KL gate then
    becomes max(max_mean_kl, baseline_factor x the baseline's own mean KL on the same tokens), so a real
    model that any 4-bit grid moves far is judged against what llama.cpp's format loses on it."""

    tolerance: float | None
    min_token_agreement: float | None
    note: str
    max_mean_kl: float | None = None
    baseline: str | None = None
    baseline_factor: float | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    weight_bits: int
    summary: str
    parity: Parity
    max_bpb_increase: float | None  # default accuracy gate (relative), None: parity alone gates
    group_sizes: tuple[int, ...] = ()  # allowed --group-size values (group-wise recipes)
    default_group: int | None = None
    calibrated: bool = False

    def formats(self) -> list[str]:
        return [f for f, mod in QUANT_FORMATS.items() if self.name in importlib.import_module(mod).IMPLEMENTS]

    def check(self, format: str, group_size: int | None = None) -> int | None:
        """Validate the recipe for `format` and the group size; returns the group size to use."""
        if self.name not in importlib.import_module(QUANT_FORMATS[format]).IMPLEMENTS:
            can = self.formats()
            raise UnsupportedError(f"recipe {self.name!r} is not available for --format {format}",
                                   f"formats that do {self.name}: {', '.join(can) or 'none'}; or choose another "
                                   f"--quant ({', '.join(RECIPES.names())})")
        if group_size is None:
            return self.default_group
        if not self.group_sizes:
            raise BadInputError(f"--group-size applies to group-wise recipes only, not {self.name!r}",
                                f"drop --group-size, or use --quant int4 (groups {', '.join(map(str, RECIPES['int4'].group_sizes))})")
        if group_size not in self.group_sizes:
            raise BadInputError(f"--group-size {group_size} is not allowed for {self.name}",
                                f"use one of {', '.join(map(str, self.group_sizes))}")
        return group_size


RECIPES: Registry[Recipe] = Registry("quantization recipe")

EXACT = Parity(1e-3, 1.0, "fp32: logits within 1e-3 and every greedy token equal")
RECIPES.add("fp32", Recipe("fp32", 32, "no quantization", EXACT, None))
RECIPES.add("fp16", Recipe(
    "fp16", 16, "weights and compute in float16 (inputs/outputs stay float32)",
    Parity(None, None, "fp16: mean KL(fp32 ‖ artifact) <= 0.005 nats per token; logit differences and greedy "
           "agreement reported", 0.005), 0.01))
RECIPES.add("int8", Recipe(
    "int8", 8, "int8 weights per output channel, activations quantized dynamically",
    Parity(None, None, "int8: mean KL(fp32 ‖ artifact) <= 0.02 nats per token; logit differences and greedy "
           "agreement reported", 0.02), 0.01))
RECIPES.add("int4", Recipe(
    "int4", 4, "int4 weights in groups along the input dimension, 8-bit dynamic activations (seqedge's int4 "
    "kernel for AVX2 CPUs in both formats; elsewhere ExecuTorch XNNPACK 8da4w and onnxruntime MatMulNBits)",
    Parity(None, None, "int4: mean KL(fp32 ‖ artifact) <= max(0.1, 1.5 x the mean KL of llama.cpp's Q4_0 grid on "
           "the same weights and tokens) nats per token (bits/byte is the accuracy gate); logit differences and "
           "greedy agreement reported", 0.1, baseline="q4_0", baseline_factor=1.5), 0.05,
    group_sizes=(32, 64, 128), default_group=32))
RECIPES.add("int4-head8", replace(
    RECIPES["int4"], name="int4-head8", summary="int4 as above, with the output head kept at 8 bits per output "
    "channel (ExecuTorch's 8da4w_output_8da8w; llama.cpp's Q4_0 files keep theirs at 6-8 bits): SmolLM2-135M's KL "
    "0.26 nats instead of 0.39, for 14 MB more"))
RECIPES.add("int8-static", Recipe(
    "int8-static", 8, "int8 weights per channel and int8 activations with static scales calibrated on "
    "sample text (QDQ), the form mobile NPUs take",
    Parity(None, None, "int8-static: mean KL(fp32 ‖ artifact) <= 0.05 nats per token; logit differences and "
           "greedy agreement reported", 0.05), 0.02,
    calibrated=True))
RECIPES.add("w8a16", Recipe(
    "w8a16", 8, "int8 symmetric weights per tensor and uint16 activations with static scales calibrated on "
    "sample text (QDQ in the encodings Qualcomm's HTP takes)",
    Parity(None, None, "w8a16: mean KL(fp32 ‖ artifact) <= 0.05 nats per token; logit differences and greedy "
           "agreement reported", 0.05), 0.03,
    calibrated=True))
RECIPES.add("w8a8", Recipe(
    "w8a8", 8, "int8 symmetric weights per tensor and uint8 activations with static scales calibrated on "
    "sample text (QDQ in the encodings Qualcomm's HTP takes; coarser than w8a16)",
    Parity(None, None, "w8a8: mean KL(fp32 ‖ artifact) <= 0.2 nats per token; logit differences and greedy "
           "agreement reported", 0.2), 0.1,
    calibrated=True))

# fp32 weights with float16 KV caches (--kv-cache float16): each cached key and value rounded once, as the fp16
# recipe rounds weights, so the fp16 recipe's KL gate (a real SmolLM2-135M's logits moved up to 0.013, past EXACT's
# 1e-3, for a mean KL of 3.5e-7 nats)
HALF_CACHES = replace(RECIPES["fp16"].parity, note=RECIPES["fp16"].parity.note.replace(
    "fp16:", "fp32 weights, float16 KV caches:", 1))


def parity_rule(recipe: str, half_caches: bool) -> Parity:
    """The verification rule of an artifact of `recipe`; an exact recipe's is HALF_CACHES where its attention
    caches are float16."""
    rule = RECIPES[recipe].parity
    return HALF_CACHES if half_caches and rule.tolerance is not None else rule
