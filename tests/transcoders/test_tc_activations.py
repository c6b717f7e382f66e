"""Activation functions: values, TopK's hard cap, and JumpReLU's straight-through θ-gradient."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from circuit_trace.transcoders.activations import (
    apply_activation,
    jumprelu,
    jumprelu_ste,
    relu,
    step_ste,
    topk,
)

torch.set_num_threads(1)


def test_jumprelu_values():
    h = torch.tensor([[-1.0, 0.5, 1.0, 2.0]])
    theta = torch.tensor([0.0, 0.6, 0.9, 2.0])
    # strictly greater than θ fires; equal does not
    assert torch.equal(jumprelu(h, theta), torch.tensor([[0.0, 0.0, 1.0, 0.0]]))
    assert torch.equal(jumprelu_ste(h, theta, 0.1), jumprelu(h, theta))


def test_jumprelu_ste_h_gradient_is_exact_mask():
    h = torch.randn(4, 7, requires_grad=True)
    theta = torch.rand(7)
    jumprelu_ste(h, theta, 0.5).sum().backward()
    assert torch.equal(h.grad, (h > theta).float())


def test_jumprelu_ste_theta_gradient_matches_kernel_formula():
    torch.manual_seed(0)
    h = torch.randn(3, 5, 6)
    theta = (0.5 + torch.rand(6)).requires_grad_()
    eps = 0.3
    g_out = torch.randn(3, 5, 6)
    (jumprelu_ste(h, theta, eps) * g_out).sum().backward()
    inside = ((h - theta.detach()).abs() < eps / 2).float()
    expected = (-(theta.detach() / eps) * inside * g_out).sum(dim=(0, 1))
    assert theta.grad.shape == (6,)
    torch.testing.assert_close(theta.grad, expected)


def test_ste_gradients_approximate_the_expected_value_derivative():
    # With h densely spread (spacing δ), Σ_i h_i 1[h_i > θ] falls by ≈ θ per δ of θ, and
    # Σ_i 1[h_i > θ] by ≈ 1 per δ: the kernel estimators must recover -θ/δ and -1/δ.
    delta = 1e-3
    h = torch.arange(0.0, 3.0, delta)[:, None]  # [N, 1]
    theta = torch.tensor([1.3], requires_grad=True)
    jumprelu_ste(h, theta, 0.05).sum().backward()
    assert theta.grad.item() == pytest.approx(-1.3 / delta, rel=0.03)
    theta.grad = None
    step_ste(h, theta, 0.05).sum().backward()
    assert theta.grad.item() == pytest.approx(-1 / delta, rel=0.03)


def test_step_ste_values_and_no_h_gradient():
    h = torch.randn(5, 4, requires_grad=True)
    theta = torch.zeros(4, requires_grad=True)
    out = step_ste(h, theta, 0.1)
    assert torch.equal(out, (h > 0).float())
    out.sum().backward()
    assert torch.count_nonzero(h.grad) == 0


def test_bandwidth_must_be_positive():
    with pytest.raises(ValueError):
        jumprelu_ste(torch.zeros(2), torch.zeros(2), 0.0)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 6),
    n=st.integers(1, 40),
    k=st.integers(1, 45),
    seed=st.integers(0, 2**16),
)
def test_topk_keeps_exactly_k_largest(rows, n, k, seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.rand(rows, n, generator=g) + 0.01  # positive: every kept value is active
    a = topk(h, k)
    kk = min(k, n)
    assert torch.equal((a != 0).sum(-1), torch.full((rows,), kk))
    # the kept entries are the row's largest ones, unchanged
    kept_min = torch.where(a != 0, h, torch.inf).min(-1).values
    dropped_max = torch.where(a == 0, h, -torch.inf).max(-1).values
    assert (kept_min >= dropped_max).all()
    assert torch.equal(a[a != 0], h[a != 0])


def test_topk_relu_on_kept_values_and_grad():
    h = torch.tensor([[-3.0, -1.0, -2.0, 0.5]], requires_grad=True)
    a = topk(h, 2)
    assert torch.equal(a, torch.tensor([[0.0, 0.0, 0.0, 0.5]]))  # -1 is in the top 2 but ReLU'd
    a.sum().backward()
    assert torch.equal(h.grad, torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
    with pytest.raises(ValueError):
        topk(h, 0)


def test_apply_activation_dispatch():
    h = torch.randn(3, 8)
    theta = torch.full((8,), 0.2)
    assert torch.equal(apply_activation("relu", h), relu(h))
    assert torch.equal(apply_activation("jumprelu", h, threshold=theta), jumprelu(h, theta))
    assert torch.equal(apply_activation("topk", h, k=3), topk(h, 3))
    for bad in [dict(name="jumprelu"), dict(name="topk"), dict(name="gelu")]:
        with pytest.raises(ValueError):
            apply_activation(bad["name"], h)
