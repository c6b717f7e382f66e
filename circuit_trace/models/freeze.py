"""Recording and freezing the nonlinear parts of a forward pass: attention patterns and norm
denominators. With both frozen (and MLP outputs held constant elsewhere) the model is an affine
function of its embeddings and MLP outputs, which is what makes attribution exact.

Attention is swapped through transformers' AttentionInterface, so every family's own attention
module (rotary, GQA, softcaps, sliding-window masks) is used unchanged up to the softmax."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from .adapters import ModelAdapter

ATTN_IMPL = "circuit_trace_frozen"


@dataclass
class FrozenState:
    """Constants of one prompt's forward pass (batch 1)."""

    patterns: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [1, H, P, P]
    norm_scales: dict[int, torch.Tensor] = field(default_factory=dict)  # id(norm) -> [1, P, (H,) 1]


FREEZABLE = frozenset({"attention", "norms"})


class _Mode(threading.local):
    mode: str | None = None  # None (plain eager), "record" or "frozen"
    state: FrozenState | None = None
    parts: frozenset[str] = FREEZABLE  # what "frozen" holds at its recorded value


_MODE = _Mode()


def _repeat_kv(t: torch.Tensor, n_rep: int) -> torch.Tensor:
    return t if n_rep == 1 else t.repeat_interleave(n_rep, dim=1)


class _FrozenPattern(torch.autograd.Function):
    """out[b, q, h] = sum_k pattern[h, q, k] v[b, k, h // n_rep]: a frozen pattern [1, H, Q, K]
    applied to values v [B, K, Hkv, dh], heads last in and out (as the projections lay them out).

    Its backward is what attribution runs most: autograd's own (matmul over [B, H, Q, K]) under the
    vmapped backward expands the pattern to every seed row and makes the head-split gradients
    contiguous (three copies per layer); here each head is one matrix product pattern_h^T @ g_h,
    whose seed rows fold into the product's columns, and one stack writes the heads-last result."""

    generate_vmap_rule = True

    @staticmethod
    def forward(pattern: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        vh = _repeat_kv(v.transpose(1, 2), pattern.shape[1] // v.shape[2])  # [B, H, K, dh]
        return torch.matmul(pattern, vh).transpose(1, 2).contiguous()  # [B, Q, H, dh]

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.n_kv = inputs[1].shape[2]

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # g [B, Q, H, dh] -> (None, [B, K, Hkv, dh])
        (pattern,) = ctx.saved_tensors
        n_heads, n_kv = pattern.shape[1], ctx.n_kv
        n_rep = n_heads // n_kv
        pt = pattern[0].transpose(1, 2)  # [H, K, Q]
        # a batched forward, or an accelerator (one product per head would be H launches per layer,
        # not measured there): autograd's own batched product
        if g.shape[0] != 1 or pattern.shape[0] != 1 or g.device.type != "cpu":
            gv = torch.matmul(pattern.transpose(2, 3), g.transpose(1, 2))  # [B, H, K, dh]
            if n_rep > 1:  # reshape, not unflatten: the vmapped backward has no rule for unflatten
                gv = gv.reshape(gv.shape[0], n_kv, n_rep, *gv.shape[2:]).sum(2)
            return None, gv.transpose(1, 2)
        heads = [torch.mm(pt[h], g[0, :, h]) for h in range(n_heads)]  # H x [K, dh]
        if n_rep > 1:
            heads = [sum(heads[j * n_rep + 1 : (j + 1) * n_rep], heads[j * n_rep]) for j in range(n_kv)]
        return None, torch.stack(heads, 1)[None]  # [1, K, Hkv, dh]


def apply_frozen_pattern(pattern: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """pattern [1, H, Q, K] (a constant), v [B, K, Hkv, dh] -> [B, Q, H, dh] (see _FrozenPattern)."""
    return _FrozenPattern.apply(pattern.detach(), v)


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **_):
    """query [B, H, Q, dh], key/value [B, Hkv, K, dh] -> (out [B, Q, H, dh], pattern [B, H, Q, K])."""
    layer = module.layer_idx
    state = _MODE.state
    if _MODE.mode == "frozen" and "attention" in _MODE.parts:
        # a prefix of the recorded prompt (causal: its patterns are the recorded ones' top-left block)
        assert state is not None  # set with the mode by freeze_mode
        pattern = state.patterns[layer][..., : query.shape[-2], : key.shape[-2]].to(value.dtype)
        # value as the projection wrote it, [B, K, Hkv, dh] (undoes HF's transpose: a view)
        return apply_frozen_pattern(pattern, value.transpose(1, 2)), pattern
    n_rep = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if _MODE.mode == "record":
        assert state is not None  # set with the mode by freeze_mode
        state.patterns[layer] = pattern[:1].detach()
    out = torch.matmul(pattern, value).transpose(1, 2).contiguous()
    return out, pattern


AttentionInterface.register(ATTN_IMPL, _attention)
AttentionMaskInterface.register(ATTN_IMPL, eager_mask)


class _FrozenNorm(torch.autograd.Function):
    """y = (x - mean(x) if centre else x) * gain, with gain = scale * weight [1, P, d] a constant.

    Autograd's own chain for the centring materialises several full-size temporaries per norm
    (neg, the expanded mean's division, an add); this backward is one multiply and one mean.
    (Not in place: under the vmapped backward an in-place `sub_` can fall back to a per-row loop.)"""

    generate_vmap_rule = True  # torch.func transforms (the exactness tests' jacrev) run through it

    @staticmethod
    def forward(x: torch.Tensor, gain: torch.Tensor, centre: bool) -> torch.Tensor:
        return (x - x.mean(-1, keepdim=True) if centre else x) * gain

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[1])
        ctx.centre = inputs[2]

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (gain,) = ctx.saved_tensors
        gx = g * gain
        if ctx.centre:  # sum / n, not mean: the vmapped backward has a batching rule for sum only
            gx = gx - gx.sum(-1, keepdim=True) * (1.0 / gx.shape[-1])
        return gx, None, None


def _norm_forward(module: nn.Module, original: Callable, centre: bool, offset_one: bool, eps: float):
    bias = getattr(module, "bias", None)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if _MODE.mode is None or (_MODE.mode == "frozen" and "norms" not in _MODE.parts):
            return original(x)
        xf = x.float()
        state = _MODE.state
        assert state is not None  # set with the mode by freeze_mode
        if _MODE.mode == "record":
            if centre:
                xf = xf - xf.mean(-1, keepdim=True)
            state.norm_scales[id(module)] = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)[:1].detach()
            return original(x)
        weight = cast(torch.Tensor, module.weight).float()
        # a prefix pass: cut the recorded scale to x's positions, wherever they sit (dim 1, or dim 2
        # for per-head QK-norms applied after the heads' transpose, as Gemma-3 does)
        scale = state.norm_scales[id(module)]
        scale = scale[(slice(None), *(slice(0, n) for n in x.shape[1:-1]))]
        gain = scale * (1.0 + weight if offset_one else weight)
        out = _FrozenNorm.apply(xf, gain, centre)  # positions: dim 1 of the recorded scale
        if bias is not None:
            out = out + bias.float()
        return out.to(x.dtype)

    return forward


@contextmanager
def patched_forward(modules_and_forwards: list[tuple[nn.Module, Callable]]) -> Iterator[None]:
    """Temporarily replace `module.forward` (instance attribute), restoring in reverse order."""
    saved = []
    try:
        for module, fwd in modules_and_forwards:
            saved.append((module, module.__dict__.get("forward")))
            module.forward = fwd
        yield
    finally:
        for module, old in reversed(saved):
            if old is None:
                del module.forward
            else:
                module.forward = old


@contextmanager
def freeze_mode(
    adapter: ModelAdapter, mode: str, state: FrozenState, parts: frozenset[str] = FREEZABLE
) -> Iterator[FrozenState]:
    """Run the model with attention and norms in `mode` ("record": compute normally and store the
    patterns and denominators in `state`; "frozen": use the stored ones, making them constants).
    `parts` (frozen mode): which of "attention" (patterns) and "norms" (denominators) are held; the
    others are computed live."""
    if mode not in ("record", "frozen"):
        raise ValueError(f"mode must be 'record' or 'frozen', got {mode!r}")
    if not parts <= FREEZABLE:
        raise ValueError(f"parts must be a subset of {sorted(FREEZABLE)}, got {sorted(parts)}")
    model: Any = adapter.model  # an HF PreTrainedModel (config, set_attn_implementation)
    kind = adapter.norm_kind
    patches = []
    for norm in adapter.norm_modules():
        eps = float(getattr(norm, kind.eps_attr, getattr(norm, "eps", 1e-5)))
        patches.append((norm, _norm_forward(norm, norm.forward, kind.centre, kind.offset_one, eps)))
    if mode == "frozen" and "attention" in parts:
        patches += adapter.frozen_pass_patches(lambda layer, n: state.patterns[layer][..., :n, :n])
    previous_impl = model.config._attn_implementation
    previous_mode = (_MODE.mode, _MODE.state, _MODE.parts)
    model.set_attn_implementation(ATTN_IMPL)
    _MODE.mode, _MODE.state, _MODE.parts = mode, state, frozenset(parts)
    try:
        with patched_forward(patches):
            yield state
    finally:
        _MODE.mode, _MODE.state, _MODE.parts = previous_mode
        model.set_attn_implementation(previous_impl)
