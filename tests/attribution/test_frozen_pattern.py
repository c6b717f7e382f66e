"""The frozen attention pattern's own backward (models/freeze.py `apply_frozen_pattern`) against
autograd's through the plain product, for one and several seeds (the engine's vmapped backward),
a batch-1 and a batched forward (the per-head path and the batched path), with and without GQA."""

import pytest
import torch

from circuit_trace.models.freeze import apply_frozen_pattern


def _plain(pattern: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    n_rep = pattern.shape[1] // v.shape[2]
    return torch.matmul(pattern, v.transpose(1, 2).repeat_interleave(n_rep, 1)).transpose(1, 2)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (8, 2)])
def test_frozen_pattern_matches_autograd(batch, heads, kv_heads):
    g = torch.Generator().manual_seed(batch * 100 + heads)
    pattern = torch.softmax(torch.randn(1, heads, 6, 6, generator=g), -1)
    v = torch.randn(batch, 6, kv_heads, 5, generator=g, requires_grad=True)
    out, ref = apply_frozen_pattern(pattern, v), _plain(pattern, v)
    assert out.shape == (batch, 6, heads, 5)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    seeds = torch.randn(7, *out.shape, generator=g)
    got = torch.autograd.grad(out, v, seeds, is_grads_batched=True, retain_graph=True)[0]
    want = torch.autograd.grad(ref, v, seeds, is_grads_batched=True, retain_graph=True)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    one = torch.autograd.grad(out, v, seeds[0])[0]
    torch.testing.assert_close(one, want[0], rtol=0, atol=1e-6)
    assert want.abs().max() > 0.1  # the check compares real gradients
