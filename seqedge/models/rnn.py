"""Stacked streaming recurrent language models: Elman RNN (tanh or ReLU), LSTM and GRU.

Each layer is its own single-layer `nn.RNN`/`nn.LSTM`/`nn.GRU` (`layers.{i}`), so every layer's state is a
named tensor (`h.{i}`, and `c.{i}` for LSTM) and exporters emit one native ONNX RNN/LSTM/GRU per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from seqedge.models.base import ModelConfig, SequenceModel, State, TensorSpec


@dataclass
class RNNConfig(ModelConfig):
    vocab_size: int = 256
    embed_size: int = 64
    hidden_size: int = 128
    num_layers: int = 2
    tie_word_embeddings: bool = False


@dataclass
class ElmanConfig(RNNConfig):
    family = "rnn"
    nonlinearity: str = "tanh"  # nn.RNN's: "tanh" or "relu"

    def __post_init__(self):
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {self.nonlinearity!r}"[:160])


@dataclass
class LSTMConfig(RNNConfig):
    family = "lstm"


@dataclass
class GRUConfig(RNNConfig):
    family = "gru"


class _RNNLM(SequenceModel):
    cell: type[nn.RNNBase]
    state_names: tuple[str, ...]

    def __init__(self, cfg: RNNConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_size)
        sizes = [cfg.embed_size] + [cfg.hidden_size] * cfg.num_layers
        self.layers = nn.ModuleList(self.cell(sizes[i], sizes[i + 1], batch_first=True, **self.cell_options(cfg))
                                    for i in range(cfg.num_layers))
        self.proj = nn.Linear(cfg.hidden_size, cfg.embed_size, bias=False)
        self.lm_head = nn.Linear(cfg.embed_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed.weight

    def cell_options(self, cfg: RNNConfig) -> dict:
        return {}

    def state_spec(self, batch: int | str = "batch") -> list[TensorSpec]:
        shape = (batch, self.config.hidden_size)
        return [TensorSpec(f"{n}.{i}", "float32", shape) for i in range(self.config.num_layers) for n in self.state_names]

    def prefill(self, tokens: Tensor, state: State, last_only: bool = False) -> tuple[Tensor, State]:
        x = self.embed(tokens)  # (B, T, E)
        new: State = {}
        for i, layer in enumerate(self.layers):
            x, layer_state = self._run_layer(layer, x, [state[f"{n}.{i}"] for n in self.state_names])
            new.update({f"{n}.{i}": s for n, s in zip(self.state_names, layer_state)})
        if last_only:
            x = x[:, -1:]  # (B, 1, H)
        return self.lm_head(self.proj(x)), new  # (B, T or 1, V)

    def _run_layer(self, layer, x, states):
        """One layer over x; the cells whose state is h alone (RNN, GRU) run here, LSTM adds c."""
        (h,) = states  # (B, H)
        y, h = layer(x, h[None])  # y (B, T, H); h (1, B, H)
        return y, (h[0],)


class ElmanRNN(_RNNLM):
    cell = nn.RNN
    state_names = ("h",)

    def cell_options(self, cfg: ElmanConfig) -> dict:
        return {"nonlinearity": cfg.nonlinearity}


class LSTM(_RNNLM):
    cell = nn.LSTM
    state_names = ("h", "c")

    def _run_layer(self, layer, x, states):
        h, c = states  # (B, H) each
        y, (h, c) = layer(x, (h[None], c[None]))  # y (B, T, H); h, c (1, B, H)
        return y, (h[0], c[0])


class GRU(_RNNLM):
    cell = nn.GRU
    state_names = ("h",)


__all__ = ["GRU", "LSTM", "ElmanConfig", "ElmanRNN", "GRUConfig", "LSTMConfig"]
