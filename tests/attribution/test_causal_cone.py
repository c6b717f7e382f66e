"""Causal-cone batching: a prefix of the frozen pass is exactly the full pass's first positions,
and the backward schedule gives each pass features of one layer, in canonical order, in equal
batches."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from helpers import FAMILIES, cached_replacement, ct_settings, random_prompt
from hypothesis import given
from hypothesis import strategies as st

from circuit_trace.attribution.engine import schedule


@ct_settings(max_examples=10)
@given(family=st.sampled_from(FAMILIES), skip=st.booleans(), seed=st.integers(0, 3), data=st.data())
def test_frozen_prefix_equals_full_pass(family, skip, seed, data):
    rm = cached_replacement(family, "clt", "jumprelu", skip, seed=seed)
    lr = rm.local_context(random_prompt(seed, 7))
    n = data.draw(st.integers(1, lr.n_pos), label="n_pos")
    full = lr.frozen_forward(requires_grad=False)
    part = lr.frozen_forward(requires_grad=False, n_pos=n)
    for layer in range(rm.n_layers):
        assert part.x[layer].shape[1] == n
        torch.testing.assert_close(part.x[layer], full.x[layer][:, :n], rtol=1e-5, atol=1e-6)
    if n == lr.n_pos:
        torch.testing.assert_close(part.logits, full.logits)


def test_frozen_prefix_length_out_of_range():
    rm = cached_replacement("llama")
    lr = rm.local_context(random_prompt(0, 4))
    for bad in (0, lr.n_pos + 1):
        with pytest.raises(ValueError, match="n_pos"):
            lr.frozen_forward(n_pos=bad)


@given(layers=st.lists(st.integers(0, 5), max_size=60), bsz=st.integers(1, 9), data=st.data())
def test_schedule_batches_one_layer_canonical(layers, bsz, data):
    layer = torch.tensor(sorted(layers), dtype=torch.long)  # canonical order sorts by layer first
    feats = SimpleNamespace(layer=layer)
    chosen = data.draw(st.sets(st.integers(0, max(0, len(layers) - 1))) if layers else st.just(set()))
    order = data.draw(st.permutations(sorted(chosen)))
    batches = schedule(feats, order, bsz)
    assert [f for b in batches for f in b] == sorted(chosen)  # every feature once, canonical order
    for b in batches:
        assert 1 <= len(b) <= bsz
        assert len({int(layer[f]) for f in b}) == 1
    # per layer: the fewest batches that fit, sizes within one of each other
    per_layer: dict[int, list[int]] = {}
    for b in batches:
        per_layer.setdefault(int(layer[b[0]]), []).append(len(b))
    for sizes in per_layer.values():
        assert len(sizes) == -(-sum(sizes) // bsz)
        assert max(sizes) - min(sizes) <= 1
