"""onnxruntime adapter for `--via optimum` artifacts: optimum's decoder graph behind seqedge's protocol.

The state is the graph's `past_key_values.{i}.key|value`, starting empty (length 0) and growing by the
tokens of each call; `attention_mask` and `position_ids` are derived from the cache length.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from seqedge.runtimes.onnxruntime import OnnxRuntimeAdapter


class OptimumOnnxAdapter(OnnxRuntimeAdapter):
    name = "onnxruntime-optimum"

    def _prepare_binding(self, path) -> None:
        """optimum's graph keeps its own names (state fed through numpy); its interface is still checked."""
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = set(self.output_names)
        expected_out = {"logits", *(n.replace("past_key_values.", "present.") for n in self.state_names)}
        if "input_ids" not in inputs or not set(self.state_names) <= inputs or not expected_out <= outputs:
            from seqedge.errors import CorruptFileError

            raise CorruptFileError(f"{path} is not the optimum decoder graph its manifest describes (inputs: "
                                   f"{', '.join(sorted(inputs))})"[:300], "re-export the artifact")

    def init_state(self, batch: int = 1) -> dict[str, Tensor]:
        return {s["name"]: torch.zeros([batch if d == "batch" else 0 if isinstance(d, str) else d
                                        for d in s["shape"]], dtype=torch.float32) for s in self.manifest["state"]}

    @property
    def max_seq_len(self) -> int | None:
        return self.manifest.get("max_seq_len")

    def prefill(self, tokens: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        B, T = tokens.shape
        past = next(iter(state.values())).shape[2] if state else 0
        feeds = {"input_ids": np.ascontiguousarray(tokens.numpy(), dtype=np.int64),
                 "attention_mask": np.ones((B, past + T), dtype=np.int64),
                 "position_ids": np.broadcast_to(np.arange(past, past + T, dtype=np.int64), (B, T)).copy()}
        feeds.update({n: state[n].numpy() for n in self.state_names})
        wanted = {i.name for i in self.session.get_inputs()}
        outs = self.session.run(self.output_names, {k: v for k, v in feeds.items() if k in wanted})
        named = dict(zip(self.output_names, outs))
        new = {n: torch.from_numpy(named[n.replace("past_key_values.", "present.")]) for n in self.state_names}
        return torch.from_numpy(named["logits"]), new
