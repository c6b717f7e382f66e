"""The hand-written backward of the frozen model (replacement/backward.py) against autograd's
vmapped backward through the frozen forward: the same gradients at the embeddings and every MLP
output, for seeds at every layer and prefix length, LayerNorm (GPT-2) and RMSNorm with GQA (Llama,
Qwen3), seeds at the residual and at the pre-MLP norm's output, with and without a skip path. And
the families or settings it does not follow fall back to autograd (build gives None)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import cached_replacement, make_replacement, random_prompt

import circuit_trace as ct
from circuit_trace.attribution.options import AttributionOptions
from circuit_trace.attribution.sources import batched_grads
from circuit_trace.replacement.backward import FrozenBackward


def _dense(a) -> np.ndarray:
    return a.toarray() if hasattr(a, "toarray") else np.asarray(a)


def _autograd(lr, layer: int, seeds: torch.Tensor):
    """seeds [n_pos, B, d] at the transcoder input of `layer` -> (g_emb, g_mlp) as the engine's
    autograd path computes them ([B, n_pos, d] each)."""
    fo = lr.frozen_to_layer(layer, n_pos=seeds.shape[0])
    return batched_grads(fo.x[layer], seeds.transpose(0, 1)[:, None], fo, layer)


@pytest.mark.parametrize(
    "family,kind,skip,input_hook",
    [
        ("gpt2", "clt", True, "hook_resid_mid"),
        ("gpt2", "plt", False, "ln2.hook_normalized"),
        ("llama", "clt", False, "ln2.hook_normalized"),
        ("qwen3", "plt", True, "ln2.hook_normalized"),
        ("llama", "plt", True, "hook_resid_mid"),
    ],
)
def test_by_hand_equals_autograd(family, kind, skip, input_hook):
    rm = cached_replacement(family, kind, "jumprelu", skip, input_hook=input_hook)
    lr = rm.local_context(random_prompt(3, 6))
    fb = FrozenBackward.build(lr)
    assert fb is not None  # this configuration takes the hand-written path
    g = torch.Generator().manual_seed(0)
    for layer in range(rm.n_layers):
        for n_pos in (1, lr.n_pos // 2 + 1, lr.n_pos):
            seeds = torch.randn(n_pos, 5, rm.adapter.d_model, generator=g)
            got_emb, got_mlp = fb.grads(layer, seeds)
            want_emb, want_mlp = _autograd(lr, layer, seeds)
            torch.testing.assert_close(got_emb, want_emb, rtol=1e-4, atol=1e-5)
            assert want_emb.abs().max() > 0.1  # real gradients compared
            for got, want in zip(got_mlp, want_mlp, strict=True):
                assert (got is None) == (want is None)
                if got is not None:
                    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_other_families_fall_back(family):
    lr = cached_replacement(family).local_context(random_prompt(1, 4))
    assert FrozenBackward.build(lr) is None


def test_other_dtypes_fall_back():
    rm = make_replacement("llama", "plt")  # a fresh one: it is converted
    assert FrozenBackward.build(rm.local_context(random_prompt(2, 4))) is not None
    rm.to(dtype=torch.float64)
    assert FrozenBackward.build(rm.local_context(random_prompt(2, 4))) is None


@pytest.mark.parametrize("family,kind,skip", [("gpt2", "plt", True), ("llama", "clt", False)])
def test_graph_same_by_hand_and_autograd(family, kind, skip):
    """Whole graphs: the hand-written passes, in chunks of 3 rows (chunk edges inside a position
    and across layers), against autograd's passes; and chunk_rows is checked."""
    rm = cached_replacement(family, kind, "jumprelu", skip)
    prompt = random_prompt(5, 6)
    by_hand = ct.attribute(rm, prompt, batch_size=8, progress=False, options=AttributionOptions(chunk_rows=3))
    plain = ct.attribute(rm, prompt, batch_size=8, progress=False, options=AttributionOptions(by_hand=False))
    assert by_hand.nodes["node_id"].tolist() == plain.nodes["node_id"].tolist()
    a, b = _dense(by_hand.adjacency), _dense(plain.adjacency)
    assert np.abs(b).max() > 0.1
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())
    with pytest.raises(ValueError, match="chunk_rows"):
        AttributionOptions(chunk_rows=0)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_head_removed_by_a_hook_is_seen(family):
    """Inside `remove_heads` (a hook on the output projection) the hand-written pass, which reads
    the weights, would miss the edit: build gives None and the graph is autograd's, which differs
    from the graph with the head in place."""
    from circuit_trace.attention import remove_heads

    rm = make_replacement(family, "plt")
    prompt = random_prompt(4, 6)
    with remove_heads(rm, {0: [0]}):
        assert FrozenBackward.build(rm.local_context(prompt)) is None
        removed = ct.attribute(rm, prompt, progress=False)
    assert FrozenBackward.build(rm.local_context(prompt)) is not None  # the hook is gone again
    kept = ct.attribute(rm, prompt, progress=False)
    a, b = _dense(removed.adjacency), _dense(kept.adjacency)
    assert a.shape != b.shape or not np.allclose(a, b, atol=1e-6)
