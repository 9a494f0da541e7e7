"""Text generation over the prefill/step protocol, for any model or runtime that implements it.

    text = generate(model, b"def ", max_new_tokens=64)           # byte-level models: greedy (temperature 0)
    ids = generate_ids(model, tok.encode("Hi"), 64, eos_ids=tok.eos_ids)   # any tokenizer (seqedge.tokenizer)

`model` is anything with `init_state(batch)`, `prefill(tokens, state)` and `step(token, state)` that
returns logits whose last position is the next-byte distribution: a `SequenceModel` or a runtime adapter.
"""

from __future__ import annotations

import torch

from seqedge.errors import BadInputError


def generate_ids(model, prompt: list[int], max_new_tokens: int = 64, temperature: float = 0.0, seed: int = 0,
                 eos_ids: tuple[int, ...] = ()) -> list[int]:
    """Token ids after `prompt`: greedy (temperature 0) or sampled; stops after an id in `eos_ids` (not
    returned) or after `max_new_tokens`."""
    if not prompt:
        raise BadInputError("the prompt is empty", 'pass --prompt "some text"')
    if max_new_tokens < 0:
        raise BadInputError(f"--max-new-tokens must be >= 0, got {max_new_tokens}", "e.g. --max-new-tokens 64")
    limit = getattr(model, "max_seq_len", None)
    if limit is not None and len(prompt) + max_new_tokens > limit:
        raise BadInputError(f"prompt ({len(prompt)} tokens) + {max_new_tokens} new tokens exceeds the model's "
                            f"maximum sequence length {limit}", "shorten the prompt or ask for fewer tokens")
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.tensor([prompt], dtype=torch.long)  # (1, T)
    out: list[int] = []
    with torch.no_grad():
        logits, state = model.prefill(tokens, model.init_state(1))
        for i in range(max_new_tokens):
            last = logits[0, -1].float()  # (V,)
            if temperature > 0:
                # in float64 and shifted by the max: a tiny temperature sharpens towards greedy instead of overflowing
                scaled = (last.double() - last.max()) / temperature  # (V,) <= 0
                nxt = int(torch.multinomial(torch.softmax(scaled, -1), 1, generator=gen))
            else:
                nxt = int(last.argmax())
            if nxt in eos_ids:
                break
            out.append(nxt)
            if i + 1 < max_new_tokens:
                logits, state = model.step(torch.tensor([[nxt]], dtype=torch.long), state)
    return out


def generate(model, prompt: bytes, max_new_tokens: int = 64, temperature: float = 0.0, seed: int = 0) -> bytes:
    """Byte-level models: bytes in, bytes out."""
    return bytes(generate_ids(model, list(prompt), max_new_tokens, temperature, seed))
