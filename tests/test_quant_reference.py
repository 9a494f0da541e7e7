"""The reference grid int4 exports are held to: seqedge's PyTorch Q4_0 equals llama.cpp's (the `gguf`
package's quantize + dequantize) bit for bit, and so do the codes seqedge's int4 kernel takes (int4_blocks);
rounding onto it twice changes nothing."""

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from seqedge.models import build_model  # noqa: E402
from seqedge.ops.int4_matmul.reference import int4_blocks, unpack_codes  # noqa: E402
from seqedge.quant.reference import ROWS, on_grid, q4_0  # noqa: E402


@pytest.mark.parametrize("scale", [1e-3, 0.05, 3.0])
def test_q4_0_equals_llama_cpp(scale):
    torch.manual_seed(0)
    w = torch.randn(ROWS + 48, 256) * scale  # more rows than q4_0 rounds at a time
    w[3, :32] = w[ROWS + 3, 64:96] = 0.0  # an all-zero block
    w[5, 40] = w[ROWS + 5, 200] = 50 * scale  # one outlier owns its block's scale
    want = gguf.dequantize(gguf.quantize(w.numpy(), gguf.GGMLQuantizationType.Q4_0), gguf.GGMLQuantizationType.Q4_0)
    got = q4_0(w).numpy()
    assert np.array_equal(got, want.reshape(got.shape))
    assert torch.equal(q4_0(q4_0(w)), q4_0(w))
    codes, scales = int4_blocks(w)  # seqedge's int4 kernel's operands (ExecuTorch's Int4Linear): the same grid
    assert codes.shape == (w.shape[0], 8, 16) and scales.dtype == torch.float16
    assert np.array_equal((unpack_codes(codes) * scales[..., None].float()).reshape(w.shape).numpy(), got)


def test_int4_blocks_zero_pad_a_partial_last_block():
    """A width that is not a multiple of 32 (Mamba's dt_proj): the last block is padded with zeros, which are code 8
    (the value 0) and do not move the block's scale, so the real weights land on Q4_0's grid of the padded row."""
    torch.manual_seed(0)
    w = torch.randn(40, 48)
    codes, scales = int4_blocks(w)
    assert codes.shape == (40, 2, 16) and scales.shape == (40, 2)
    got = (unpack_codes(codes) * scales[..., None].float()).flatten(1)  # (40, 64)
    assert torch.equal(got, q4_0(torch.nn.functional.pad(w, (0, 16))))
    assert (unpack_codes(codes)[:, 1, 16:] == 0).all()


def test_on_grid_rounds_matrices_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = build_model("transformer", "tiny")
    before = {n: p.clone() for n, p in model.named_parameters()}
    grid = on_grid(model, "q4_0")
    for name, p in grid.named_parameters():
        assert torch.equal(dict(model.named_parameters())[name], before[name])  # the original is untouched
        if p.ndim == 2 and p.shape[-1] % 32 == 0:
            assert torch.equal(p, q4_0(before[name])) and not torch.equal(p, before[name]), name
        else:
            assert torch.equal(p, before[name]), name
