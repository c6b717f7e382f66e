"""`models.mlp_hooks`: capture, replace, add to and stand in for MLP outputs at a transcoder's hook
points, on tiny models of every family; everything removed on exit, also after an error."""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import FAMILIES, make_hf_model

from circuit_trace.models import get_adapter, mlp_hooks, mlp_io, module_input

IDS = torch.tensor([[0, 5, 9, 12, 4, 33], [0, 8, 8, 2, 70, 11]])  # [2, 6]
IN, OUT = "mlp.hook_in", "hook_mlp_out"


@functools.cache
def adapter_of(family):
    return get_adapter(make_hf_model(family, seed=3))


def n_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("family", FAMILIES)
def test_capture_matches_nnsight_reader(family):
    ad = adapter_of(family)
    xs, ys = {}, {}
    with torch.no_grad(), mlp_hooks(ad, IN, OUT, on_input=xs.__setitem__, on_output=ys.__setitem__):
        ad.model(IDS)
    x, y = mlp_io(ad, IDS, IN, OUT)
    torch.testing.assert_close(torch.stack([xs[l] for l in range(ad.n_layers)]), x)
    torch.testing.assert_close(torch.stack([ys[l] for l in range(ad.n_layers)]), y)
    assert n_hooks(ad.model) == 0


@pytest.mark.parametrize("family", ["gpt2", "gemma2"])
def test_add_at_one_layer_moves_only_that_output_and_later(family):
    ad = adapter_of(family)
    clean, edited = {}, {}
    delta = torch.zeros(ad.d_model)
    delta[3] = 0.5

    def add(layer, y):
        return y + delta if layer == 1 else None

    with torch.no_grad():
        with mlp_hooks(ad, IN, OUT, on_output=clean.__setitem__):
            ad.model(IDS)
        with mlp_hooks(ad, IN, OUT, on_output=add), mlp_hooks(ad, IN, OUT, on_output=edited.__setitem__):
            ad.model(IDS)
    torch.testing.assert_close(edited[0], clean[0])
    torch.testing.assert_close(edited[1], clean[1] + delta)  # hooks run in registration order
    assert not torch.allclose(edited[2], clean[2])


def test_output_forward_stands_in_for_the_module_and_layers_select():
    ad = adapter_of("llama")
    called = []

    def standin(layer):
        def forward(*args, **kwargs):
            called.append(layer)
            return torch.zeros_like(module_input(args, kwargs))

        return forward

    mlp0 = ad.model.get_submodule("model.layers.0.mlp")
    before = mlp0.__dict__.get("forward")  # nnsight may have set one; ours must go on exit
    with torch.no_grad(), mlp_hooks(ad, IN, OUT, layers=[0, 2], output_forward=standin):
        out = ad.model(IDS).logits
    assert called == [0, 2]
    with torch.no_grad():
        assert not torch.allclose(out, ad.model(IDS).logits)
    assert mlp0.__dict__.get("forward") is before


def test_errors_leave_no_hooks():
    ad = adapter_of("gpt2")

    def boom(layer, x):
        raise RuntimeError("read failed")

    with pytest.raises(RuntimeError, match="read failed"), mlp_hooks(ad, IN, OUT, on_input=boom):
        ad.model(IDS)
    assert n_hooks(ad.model) == 0
    with (
        pytest.raises(ValueError, match="not both"),
        mlp_hooks(ad, IN, OUT, on_output=lambda l, y: None, output_forward=lambda l: None),
    ):
        pass
    with (
        pytest.raises(ValueError, match="not a module output"),
        mlp_hooks(ad, IN, "mlp.hook_in", on_output=lambda l, y: None),
    ):
        pass
    assert n_hooks(ad.model) == 0
