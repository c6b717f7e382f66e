"""Per-head access to attention, for `circuit_trace.attention` (head loadings, QK attribution).

* `head_inputs`: records, or edits, each layer's output-projection input z [B, P, H * dh] (the
  heads' outputs side by side, before W_O), inside whatever forward pass runs in the context.
* `query_key`: the query and key vectors a family hands to its attention function (after its own
  projections, QK-norm, RoPE; norms frozen), for hidden states put at one layer's input.

Architecture knowledge stays here: callers see layers, heads and tensors, never module names."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .adapters import ModelAdapter
from .freeze import ATTN_IMPL, FrozenState, freeze_mode, patched_forward

__all__ = ["HeadGeometry", "QueryKey", "head_geometry", "head_inputs", "out_projection", "query_key"]

QK_IMPL = "circuit_trace_qk"


@dataclass(frozen=True)
class HeadGeometry:
    n_heads: int  # query heads
    n_kv_heads: int  # key/value heads (GQA: n_heads // n_kv_heads query heads share one)
    head_dim: int

    def kv_head(self, head: int) -> int:
        """The key/value head query head `head` reads (transformers' repeat_kv order)."""
        return head // (self.n_heads // self.n_kv_heads)


def head_geometry(adapter: ModelAdapter) -> HeadGeometry:
    cfg: Any = adapter.config
    n_heads = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or adapter.d_model // n_heads)
    return HeadGeometry(n_heads, n_kv, head_dim)


def out_projection(adapter: ModelAdapter, layer: int) -> nn.Module:
    """The module whose input is the heads' concatenated outputs (W_O): o_proj, or GPT-2's c_proj."""
    attn = adapter.attention(layer)
    for name in ("o_proj", "c_proj"):
        if hasattr(attn, name):
            return getattr(attn, name)
    raise ValueError(f"{type(attn).__name__} has no output projection this adapter knows")


@contextmanager
def head_inputs(
    adapter: ModelAdapter,
    layers: Iterable[int],
    fn: Callable[[int, torch.Tensor], torch.Tensor | None],
) -> Iterator[None]:
    """Inside, every forward pass calls fn(layer, z) with z [B, P, H * dh], the input of the layer's
    output projection; a returned tensor replaces z (to remove or hold heads), None keeps it."""
    handles = []

    def pre_hook(layer: int):
        def pre(_module, args, kwargs):
            z = args[0] if args else kwargs["input"]
            new = fn(layer, z)
            if new is None:
                return None
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "input": new})

        return pre

    try:
        for layer in layers:
            handles.append(out_projection(adapter, layer).register_forward_pre_hook(pre_hook(layer), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


# -- query and key vectors ---------------------------------------------------------------------------
@dataclass
class QueryKey:
    query: torch.Tensor  # [N, H, P, dh] as the family's attention function receives it
    key: torch.Tensor  # [N, Hkv, P, dh]
    scaling: float  # the score is scaling * q . k (before any softcap and the mask)
    softcap: float | None  # Gemma-2: score -> softcap * tanh(score / softcap) before the softmax


class _Capture(threading.local):
    layer: int | None = None
    result: QueryKey | None = None


_CAPTURE = _Capture()


class _Captured(Exception):
    """Stops the forward pass once the layer's query and key are captured."""


def _capture_attention(module, query, key, value, attention_mask, scaling=None, softcap=None, **kwargs):
    if module.layer_idx == _CAPTURE.layer:
        scale = query.shape[-1] ** -0.5 if scaling is None else float(scaling)  # as models.freeze does
        _CAPTURE.result = QueryKey(query.detach(), key.detach(), scale, softcap)
        raise _Captured
    frozen = ALL_ATTENTION_FUNCTIONS[ATTN_IMPL]
    return frozen(module, query, key, value, attention_mask, scaling=scaling, softcap=softcap, **kwargs)


AttentionInterface.register(QK_IMPL, _capture_attention)
AttentionMaskInterface.register(QK_IMPL, eager_mask)


@torch.no_grad()
def query_key(adapter: ModelAdapter, state: FrozenState, layer: int, hidden: torch.Tensor) -> QueryKey:
    """Query and key vectors of `layer` when its input (the residual stream, before its attention
    norm) is `hidden` [N, P, d] (P <= the recorded prompt's length): norms, QK-norms included, use
    the denominators recorded in `state`, so q and k are affine functions of `hidden`."""
    model: Any = adapter.model
    n, n_pos, _ = hidden.shape
    dtype = next(model.parameters()).dtype

    def replace_input(_module, args, kwargs):
        return (
            ((hidden.to(dtype), *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden.to(dtype)})
        )

    attn = adapter.attention(layer)
    handle = adapter.layers[layer].register_forward_pre_hook(replace_input, with_kwargs=True)
    embeds = torch.zeros(1, n_pos, adapter.d_model, dtype=dtype, device=hidden.device)  # layers below: unused
    _CAPTURE.layer, _CAPTURE.result = layer, None
    try:
        with freeze_mode(adapter, "frozen", state):
            # the family's own attention forward (GPT-2's frozen pass computes only the values)
            with patched_forward([(attn, type(attn).forward.__get__(attn))]):
                model.set_attn_implementation(QK_IMPL)
                try:
                    model(inputs_embeds=embeds, logits_to_keep=1)
                except _Captured:
                    pass
                finally:
                    model.set_attn_implementation(ATTN_IMPL)
    finally:
        handle.remove()
        _CAPTURE.layer = None
    if _CAPTURE.result is None:
        raise RuntimeError(f"layer {layer}'s attention function was not reached")
    out, _CAPTURE.result = _CAPTURE.result, None
    return out
