"""Model adapters (hook names -> HF modules) for every supported family, the nnsight reader of MLP
inputs/outputs, and the freeze machinery (recorded attention patterns and norm denominators)."""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import FAMILIES, GEMMA, make_hf_model

from circuit_trace.models import HOOK_NAMES, UnsupportedArchitectureError, get_adapter, mlp_io
from circuit_trace.models.freeze import FrozenState, freeze_mode

IDS = torch.tensor([[0, 5, 9, 12, 4, 33, 7, 61], [0, 8, 8, 2, 70, 11, 3, 5]])  # [2, 8]; > sliding window 4

# family -> (layers path, pre-MLP norm, post-MLP norm or None)
LAYOUT = {
    "gpt2": ("transformer.h", "ln_2", None),
    "llama": ("model.layers", "post_attention_layernorm", None),
    "qwen3": ("model.layers", "post_attention_layernorm", None),
    "gemma2": ("model.layers", "pre_feedforward_layernorm", "post_feedforward_layernorm"),
    "gemma3": ("model.layers", "pre_feedforward_layernorm", "post_feedforward_layernorm"),
}


@functools.cache
def model_of(family):
    return make_hf_model(family, seed=11)


@pytest.fixture(params=FAMILIES)
def ad(request):
    return get_adapter(model_of(request.param))


def fam(ad) -> str:
    return ad.model.config.model_type.replace("_text", "")


# -- static mapping --------------------------------------------------------------------------------
def test_adapter_attributes(ad):
    f = fam(ad)
    assert ad.family == {"gpt2": "gpt2", "llama": "llama", "qwen3": "llama"}.get(f, "gemma")
    assert (ad.n_layers, ad.d_model, ad.vocab_size, ad.n_ctx) == (3, 32, 100, 16)
    assert ad.unembed_weight().shape == (100, 32)
    assert ad.final_logit_softcap == (8.0 if f == "gemma2" else None)
    n_norms = {"gpt2": 2, "llama": 2, "qwen3": 4, "gemma3": 6}.get(
        f, 4
    ) * ad.n_layers + 1  # qwen3, gemma3: + q_norm, k_norm
    norms = ad.norm_modules()
    assert len(norms) == n_norms == len({id(m) for m in norms})
    assert any(m is ad.final_norm for m in norms)
    if f == "qwen3":  # q/k norms inside attention are frozen too (QK attribution needs q, k affine)
        assert any(m is ad.layers[0].self_attn.q_norm for m in norms)


@pytest.mark.parametrize("layer", [0, 2])
def test_hook_module_mapping(ad, layer):
    layers_path, pre_norm, post_norm = LAYOUT[fam(ad)]
    base = f"{layers_path}.{layer}"
    expected = {
        "hook_resid_mid": (f"{base}.{pre_norm}", "input"),
        "ln2.hook_normalized": (f"{base}.mlp", "input"),
        "mlp.hook_in": (f"{base}.mlp", "input"),
        "mlp.hook_out": (f"{base}.mlp", "output"),
        "hook_mlp_out": (f"{base}.{post_norm or 'mlp'}", "output"),
    }
    assert set(expected) == set(HOOK_NAMES)
    for name, (path, io) in expected.items():
        for spelled in (name, f"blocks.{layer}.{name}"):
            module, got_io, got_path = ad.hook_module(spelled, layer)
            assert (got_path, got_io) == (path, io), spelled
            assert module is ad.model.get_submodule(path)


def test_unknown_hook_name_and_layer(ad):
    for bad in ("hook_resid_pre", "attn.hook_z", "blocks.0.hook_resid_post", ""):
        with pytest.raises(ValueError, match="unknown hook name") as e:
            ad.hook_module(bad, 0)
        assert "hook_resid_mid" in str(e.value) and "hook_mlp_out" in str(e.value)
    for layer in (-1, 3):
        with pytest.raises(ValueError, match="out of range"):
            ad.hook_module("hook_resid_mid", layer)


def test_unsupported_architecture_lists_families():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    model = GPTNeoXForCausalLM(
        GPTNeoXConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32, vocab_size=50)
    )
    with pytest.raises(UnsupportedArchitectureError, match="gpt_neox") as e:
        get_adapter(model)
    assert all(f in str(e.value) for f in ("gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3"))


# -- what each hook point holds in a real forward pass ------------------------------------------------
def capture(ad, ids, points):
    """points: {key: (module, "input" | "output")} -> {key: tensor} from one plain forward."""
    got, hooks = {}, []
    for key, (mod, io) in points.items():
        if io == "input":
            hooks.append(
                mod.register_forward_pre_hook(
                    lambda _m, a, kw, key=key: got.__setitem__(key, (a[0] if a else next(iter(kw.values()))).clone()),
                    with_kwargs=True,
                )
            )
        else:
            hooks.append(
                mod.register_forward_hook(
                    lambda _m, _a, o, key=key: got.__setitem__(key, (o[0] if isinstance(o, tuple) else o).clone())
                )
            )
    try:
        with torch.no_grad():
            ad.model(ids)
    finally:
        for h in hooks:
            h.remove()
    return got


def test_hook_points_hold_what_their_names_say(ad):
    f = fam(ad)
    points = {}
    for l in range(ad.n_layers):
        for name in HOOK_NAMES:
            mod, io, _ = ad.hook_module(name, l)
            points[(name, l)] = (mod, io)
        layer = ad.layers[l]
        points[("block_in", l)] = (layer, "input")
        points[("block_out", l)] = (layer, "output")
        points[("attn_out", l)] = (ad.attention(l), "output")
        pre_norm = ad.hook_module("hook_resid_mid", l)[0]
        points[("pre_norm_out", l)] = (pre_norm, "output")
        if f in GEMMA:
            points[("attn_post_norm", l)] = (layer.post_attention_layernorm, "output")
            points[("post_norm_in", l)] = (layer.post_feedforward_layernorm, "input")
    v = capture(ad, IDS, points)
    tol = dict(atol=1e-5, rtol=1e-5)
    for l in range(ad.n_layers):
        resid_mid = v[("hook_resid_mid", l)]
        attn = v[("attn_post_norm", l)] if f in GEMMA else v[("attn_out", l)]
        # resid_mid = residual stream after attention (and Gemma's post-attention norm)
        torch.testing.assert_close(resid_mid, v[("block_in", l)] + attn, **tol)
        # ln2.hook_normalized = mlp.hook_in = the pre-MLP norm's output = the MLP's input
        torch.testing.assert_close(v[("ln2.hook_normalized", l)], v[("pre_norm_out", l)], **tol)
        torch.testing.assert_close(v[("mlp.hook_in", l)], v[("pre_norm_out", l)], **tol)
        # hook_mlp_out is what the block adds to the residual stream after attention
        torch.testing.assert_close(resid_mid + v[("hook_mlp_out", l)], v[("block_out", l)], **tol)
        if f in GEMMA:  # hook_mlp_out = post_feedforward_norm(mlp.hook_out)
            torch.testing.assert_close(v[("post_norm_in", l)], v[("mlp.hook_out", l)], **tol)
            assert not torch.allclose(v[("hook_mlp_out", l)], v[("mlp.hook_out", l)])
        else:
            torch.testing.assert_close(v[("hook_mlp_out", l)], v[("mlp.hook_out", l)], **tol)


@pytest.mark.parametrize("hooks", [("hook_resid_mid", "hook_mlp_out"), ("ln2.hook_normalized", "mlp.hook_out")])
def test_mlp_io_matches_torch_hooks(ad, hooks):
    in_hook, out_hook = hooks
    x, y = mlp_io(ad, IDS, in_hook, out_hook)
    assert x.shape == y.shape == (ad.n_layers, *IDS.shape, ad.d_model)
    points = {}
    for l in range(ad.n_layers):
        points[("x", l)] = ad.hook_module(in_hook, l)[:2]
        points[("y", l)] = ad.hook_module(out_hook, l)[:2]
    v = capture(ad, IDS, points)
    for l in range(ad.n_layers):
        torch.testing.assert_close(x[l], v[("x", l)], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(y[l], v[("y", l)], atol=1e-6, rtol=1e-6)
    xs, ys = mlp_io(ad, IDS, in_hook, out_hook, layers=[2, 0])
    torch.testing.assert_close(xs, x[[2, 0]])
    torch.testing.assert_close(ys, y[[2, 0]])


# -- freezing -------------------------------------------------------------------------------------------
def test_freeze_record_and_frozen_reproduce_logits(ad):
    model = ad.model
    ids = IDS[:1]
    impl = model.config._attn_implementation
    forwards = [m.__dict__.get("forward") for m in ad.norm_modules()]
    with torch.no_grad():
        plain = model(ids).logits
        state = FrozenState()
        with freeze_mode(ad, "record", state):
            recorded = model(ids).logits
        assert set(state.patterns) == set(range(ad.n_layers))
        assert len(state.norm_scales) == len(ad.norm_modules())
        with freeze_mode(ad, "frozen", state):
            frozen = model(ids).logits
        again = model(ids).logits
    scale = 1 + plain.abs().max().item()
    assert (recorded - plain).abs().max().item() <= 1e-5 * scale
    assert (frozen - plain).abs().max().item() <= 1e-5 * scale
    torch.testing.assert_close(again, plain, atol=0, rtol=0)  # everything restored
    assert model.config._attn_implementation == impl
    assert [m.__dict__.get("forward") for m in ad.norm_modules()] == forwards


def test_frozen_mode_holds_patterns_and_denominators(ad):
    """In frozen mode the recorded patterns are used whatever the input, and every norm is linear."""
    model = ad.model
    ids = IDS[:1]
    state = FrozenState()
    with torch.no_grad():
        with freeze_mode(ad, "record", state):
            model(ids)
        emb = ad.embed_tokens(ids)
        other = emb * 3.0 + torch.randn(emb.shape, generator=torch.Generator().manual_seed(0))
        patterns = {}
        hooks = [
            ad.attention(l).register_forward_hook(lambda _m, _a, o, l=l: patterns.__setitem__(l, o[1]))
            for l in range(ad.n_layers)
        ]
        try:
            with freeze_mode(ad, "frozen", state):
                model(inputs_embeds=other)
                # a frozen norm is linear in its input: norm(2x) - b = 2 (norm(x) - b)
                norm = ad.final_norm
                x = torch.randn(1, ids.shape[1], ad.d_model, generator=torch.Generator().manual_seed(1))
                b = getattr(norm, "bias", None)
                b = 0 if b is None else b
                torch.testing.assert_close(norm(2 * x) - b, 2 * (norm(x) - b), atol=1e-5, rtol=1e-5)
        finally:
            for h in hooks:
                h.remove()
    for l in range(ad.n_layers):
        torch.testing.assert_close(patterns[l], state.patterns[l])
    with pytest.raises(ValueError, match="mode"):
        with freeze_mode(ad, "thaw", state):
            pass
