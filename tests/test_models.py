"""The protocol properties every exporter relies on, for every family."""

import json

import pytest
import torch

from seqedge.models import FAMILIES, build_model, config_from_dict, model_from_config
from tests.conftest import FAMILY_NAMES

TOL = 1e-4  # fp32, max abs diff on logits


def _model(family):
    torch.manual_seed(0)
    return build_model(family, "tiny").eval()


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("T", [1, 7, 16])
def test_step_by_step_equals_prefill(family, T):
    model = _model(family)
    tokens = torch.randint(0, 256, (2, T))
    with torch.no_grad():
        full, _ = model.prefill(tokens, model.init_state(2))
        state, steps = model.init_state(2), []
        for t in range(T):
            logits, state = model.step(tokens[:, t : t + 1], state)
            steps.append(logits)
    diff = (full - torch.cat(steps, 1)).abs().max().item()
    assert full.shape == (2, T, 256)
    assert diff <= TOL, f"{family} T={T}: step vs prefill max abs diff {diff}"


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_split_prefill_carries_state(family):
    model = _model(family)
    tokens = torch.randint(0, 256, (1, 23))
    with torch.no_grad():
        full, s_full = model.prefill(tokens, model.init_state(1))
        a, s = model.prefill(tokens[:, :10], model.init_state(1))
        b, s = model.prefill(tokens[:, 10:], s)
    assert (full - torch.cat([a, b], 1)).abs().max().item() <= TOL
    assert list(s) == list(s_full)
    for name in s:
        assert (s[name].float() - s_full[name].float()).abs().max().item() <= TOL, name


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_state_spec_describes_init_state(family):
    model = _model(family)
    state = model.init_state(3)
    specs = model.state_spec(3)
    assert [s.name for s in specs] == list(state)
    for spec in specs:
        assert tuple(state[spec.name].shape) == spec.shape
        assert str(state[spec.name].dtype) == f"torch.{spec.dtype}"


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_last_only_matches_full_logits(family):
    model = _model(family)
    tokens = torch.randint(0, 256, (1, 9))
    with torch.no_grad():
        full, _ = model.prefill(tokens, model.init_state(1))
        last, _ = model.prefill(tokens, model.init_state(1), last_only=True)
    assert last.shape == (1, 1, 256)
    assert torch.allclose(full[:, -1:], last, atol=1e-6)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_presets_have_the_promised_sizes(family):
    presets = FAMILIES[family].presets
    tiny = build_model(family, "tiny").num_parameters()
    small = build_model(family, "small").num_parameters()
    assert 100_000 <= tiny <= 600_000, tiny
    assert 2_000_000 <= small <= 5_000_000, small
    assert {"tiny", "small"} <= set(presets)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_config_json_round_trip(family):
    model = _model(family)
    cfg = config_from_dict(json.loads(model.config.to_json()))
    assert cfg == model.config
    assert type(model_from_config(cfg)) is type(model)


def test_benchmark_shapes():
    llama = FAMILIES["transformer"].config("llama-135m")
    assert (llama.hidden_size, llama.num_hidden_layers, llama.num_attention_heads,
            llama.num_key_value_heads, llama.intermediate_size, llama.vocab_size) == (576, 30, 9, 3, 1536, 49152)
    mamba = FAMILIES["mamba"].config("mamba-130m")
    assert (mamba.hidden_size, mamba.num_hidden_layers, mamba.state_size, mamba.expand,
            mamba.vocab_size, mamba.time_step_rank) == (768, 24, 16, 2, 50280, 48)


# Hugging Face names: a fixed subset of LlamaForCausalLM / MambaForCausalLM state-dict keys with shapes.
HF_KEYS = {
    "transformer": {
        "model.embed_tokens.weight": (256, 64),
        "model.layers.0.self_attn.q_proj.weight": (64, 64),
        "model.layers.0.self_attn.k_proj.weight": (32, 64),
        "model.layers.0.self_attn.v_proj.weight": (32, 64),
        "model.layers.0.self_attn.o_proj.weight": (64, 64),
        "model.layers.0.mlp.gate_proj.weight": (192, 64),
        "model.layers.0.mlp.up_proj.weight": (192, 64),
        "model.layers.0.mlp.down_proj.weight": (64, 192),
        "model.layers.0.input_layernorm.weight": (64,),
        "model.layers.0.post_attention_layernorm.weight": (64,),
        "model.norm.weight": (64,),
        "lm_head.weight": (256, 64),
    },
    "mamba": {
        "backbone.embeddings.weight": (256, 96),
        "backbone.layers.0.norm.weight": (96,),
        "backbone.layers.0.mixer.A_log": (192, 8),
        "backbone.layers.0.mixer.D": (192,),
        "backbone.layers.0.mixer.conv1d.weight": (192, 1, 4),
        "backbone.layers.0.mixer.conv1d.bias": (192,),
        "backbone.layers.0.mixer.in_proj.weight": (384, 96),
        "backbone.layers.0.mixer.x_proj.weight": (6 + 16, 192),
        "backbone.layers.0.mixer.dt_proj.weight": (192, 6),
        "backbone.layers.0.mixer.dt_proj.bias": (192,),
        "backbone.layers.0.mixer.out_proj.weight": (96, 192),
        "backbone.norm_f.weight": (96,),
    },
}


@pytest.mark.parametrize("family", sorted(HF_KEYS))
def test_hugging_face_parameter_names(family):
    sd = {k: tuple(v.shape) for k, v in _model(family).state_dict().items()}
    for key, shape in HF_KEYS[family].items():
        assert sd.get(key) == shape, f"{key}: {sd.get(key)} != {shape}"


@pytest.mark.parametrize("options", [{}, {"qkv_bias": True, "mlp_bias": True}, {"attention_bias": True, "qk_norm": True},
                                     {"num_key_value_heads": 1}])
def test_fused_projections_compute_the_same_and_leave_the_model_alone(options):
    """exporters/projections.py: the exported copy has one qkv and one gate/up matmul per layer, equal logits
    and state; the caller's model (the parity reference) keeps its HF-named parameters."""
    from seqedge.exporters.projections import fuse_projections

    model = build_model("transformer", "tiny", **options).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_projections(model)
    names = {n for n, _ in fused.named_parameters()}
    assert "model.layers.0.self_attn.qkv_proj.weight" in names and "model.layers.0.mlp.gate_up_proj.weight" in names
    assert not {n.split(".")[-2] for n in names} & {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"}
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in model.parameters())
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert_same_prefill(fused, model)


def assert_same_prefill(copy, model, batch=2, T=9):
    """An export's copy of `model` (exporters/projections.py) gives its logits and state on random tokens."""
    tokens = torch.randint(0, model.config.vocab_size, (batch, T))
    with torch.no_grad():
        want, want_state = model.prefill(tokens, model.init_state(batch))
        got, got_state = copy.prefill(tokens, copy.init_state(batch))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got_state.keys() == want_state.keys()
    for k in want_state:
        torch.testing.assert_close(got_state[k], want_state[k], rtol=1e-5, atol=1e-5)
