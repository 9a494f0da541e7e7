"""Which layers an exporter can take: anything else is named (module path and type) in an error."""

from __future__ import annotations

from torch import nn

from seqedge.errors import UnsupportedError
from seqedge.models.base import RMSNorm
from seqedge.models.mamba2 import GatedRMSNorm
from seqedge.models.s4 import S4D

# leaf layers with parameters that both exporters take
EXPORTABLE_LAYERS = (nn.Linear, nn.Embedding, nn.Conv1d, nn.RNN, nn.LSTM, nn.GRU, nn.LayerNorm, nn.RMSNorm, RMSNorm,
                     GatedRMSNorm, S4D)

UNSUPPORTED_HINTS = {
    nn.MultiheadAttention: "use seqedge.ops.attention with an explicit KV cache",
    nn.RNNCell: "use nn.RNN (one layer), which seqedge exports with its state explicit",
    nn.LSTMCell: "use nn.LSTM (one layer), which seqedge exports with its state explicit",
    nn.GRUCell: "use nn.GRU (one layer), which seqedge exports with its state explicit",
}


def check_supported(model: nn.Module, supported: tuple[type, ...], target: str) -> None:
    """Raise UnsupportedError for the first module with a hint, or leaf with parameters not in `supported`."""
    for path, module in model.named_modules():
        hint = next((h for t, h in UNSUPPORTED_HINTS.items() if isinstance(module, t)), None)
        leaf_with_params = not any(True for _ in module.children()) and any(True for _ in module.parameters(False))
        if hint or (leaf_with_params and not isinstance(module, supported)):
            names = ", ".join(t.__name__ for t in supported)
            raise UnsupportedError(f"layer {path or '<root>'} ({type(module).__module__}.{type(module).__name__}) "
                                   f"is not supported for {target}", hint or f"supported layers: {names}")
