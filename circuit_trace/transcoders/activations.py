"""Feature nonlinearities: JumpReLU (with a straight-through gradient for θ), ReLU and TopK.

Attribution only needs activation *values* (and the gradient of a w.r.t. h, which is 1 on active
features for all three), so the forward passes here are plain tensor ops. Training JumpReLU needs a
gradient for the threshold, which the step function does not have; `jumprelu_ste` / `step_ste`
supply the pseudo-derivative of GemmaScope / Anthropic (a rectangle kernel of width `bandwidth`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "ACTIVATIONS",
    "ActivationName",
    "jumprelu",
    "jumprelu_ste",
    "step_ste",
    "relu",
    "topk",
    "apply_activation",
]

ActivationName = Literal["jumprelu", "relu", "topk"]
ACTIVATIONS: tuple[str, ...] = ("jumprelu", "relu", "topk")


def _rectangle(u: torch.Tensor) -> torch.Tensor:
    """K(u) = 1[-1/2 < u < 1/2]: the kernel whose integral over one bandwidth is 1."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


def jumprelu(h: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """a = h · 1[h > θ]; h [..., F], θ [F] (broadcast). No gradient reaches θ (use the STE)."""
    return h * (h > threshold).to(h.dtype)


class _JumpReLUSTE(torch.autograd.Function):
    """JumpReLU whose θ-gradient is the kernel pseudo-derivative
    ∂a/∂θ ≈ -(θ/ε) · K((h − θ)/ε); the h-gradient is the exact 1[h > θ]."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(h, threshold)
        ctx.bandwidth = bandwidth
        return h * (h > threshold).to(h.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        h, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_h = grad_out * (h > threshold).to(grad_out.dtype) if ctx.needs_input_grad[0] else None
        grad_t = None
        if ctx.needs_input_grad[1]:
            g = -(threshold / eps) * _rectangle((h - threshold) / eps) * grad_out
            # θ is broadcast over the leading (batch/position) dims: sum them back to θ's shape.
            grad_t = g.sum_to_size(threshold.shape)
        return grad_h, grad_t, None


class _StepSTE(torch.autograd.Function):
    """H(h − θ) (the L0 indicator) with ∂/∂θ ≈ -(1/ε) · K((h − θ)/ε) and no gradient to h,
    as in GemmaScope's L0 loss."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(h, threshold)
        ctx.bandwidth = bandwidth
        return (h > threshold).to(h.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        h, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_h = torch.zeros_like(h) if ctx.needs_input_grad[0] else None
        grad_t = None
        if ctx.needs_input_grad[1]:
            g = -(1.0 / eps) * _rectangle((h - threshold) / eps) * grad_out
            grad_t = g.sum_to_size(threshold.shape)
        return grad_h, grad_t, None


def jumprelu_ste(h: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """JumpReLU (same values as `jumprelu`) with a straight-through gradient for θ.

    h [..., F], threshold [F] or broadcastable; bandwidth ε > 0 is the kernel width in units of h.
    """
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    return _JumpReLUSTE.apply(h, threshold, float(bandwidth))


def step_ste(h: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """1[h > θ] as a float tensor with a straight-through gradient for θ (for L0 penalties)."""
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    return _StepSTE.apply(h, threshold, float(bandwidth))


def relu(h: torch.Tensor) -> torch.Tensor:
    """a = max(h, 0)."""
    return F.relu(h)


def topk(h: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest entries of each row (last dim), zero the rest, then ReLU the kept ones
    (so a row never has more than k active features, and fewer only if some of its top k are ≤ 0).

    Exactly k indices are selected per row even with ties (torch.topk picks k), so the active count
    is a hard cap.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(int(k), h.shape[-1])
    vals, idx = h.topk(k, dim=-1)  # [..., k]
    return torch.zeros_like(h).scatter(-1, idx, F.relu(vals))


def apply_activation(
    name: str,
    h: torch.Tensor,
    *,
    threshold: torch.Tensor | None = None,
    k: int | None = None,
    bandwidth: float | None = None,
) -> torch.Tensor:
    """Dispatch on the activation name. For JumpReLU, a `bandwidth` switches on the θ-STE (only
    useful when θ requires grad; values are identical either way)."""
    if name == "jumprelu":
        if threshold is None:
            raise ValueError("jumprelu needs a threshold")
        if bandwidth is not None and threshold.requires_grad and torch.is_grad_enabled():
            return jumprelu_ste(h, threshold, bandwidth)
        return jumprelu(h, threshold)
    if name == "relu":
        return relu(h)
    if name == "topk":
        if k is None:
            raise ValueError("topk needs k")
        return topk(h, k)
    raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
