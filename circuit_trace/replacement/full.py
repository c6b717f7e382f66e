"""The full replacement model: every MLP output replaced by the transcoder's reconstruction (for
fidelity metrics, error ablation and `ReplacementModel.replaced`), and the KL divergence that
compares two next-token distributions (replacement fidelity, interventions, validation)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..models.adapters import ModelAdapter
from ..models.mlp_hooks import mlp_hooks

__all__ = ["decode_layer", "kl_divergence", "reconstruct_layer", "replace_mlps"]


def decode_layer(tc, acts: dict[int, torch.Tensor], layer: int) -> torch.Tensor:
    """ŷ_layer [..., d] from the activations [..., F] of the source layers that write to `layer`."""
    out = tc.b_dec[layer]
    for src, a in acts.items():
        if layer not in tc.output_layers(src):
            continue
        active = (a != 0).reshape(-1, a.shape[-1]).any(0).nonzero().squeeze(1)  # [k]
        dec = tc.decoder_vectors(src, active)[:, layer - src]  # [k, d]
        out = out + a[..., active] @ dec
    return out


def reconstruct_layer(tc, acts: dict[int, torch.Tensor], x: torch.Tensor, layer: int) -> torch.Tensor:
    """The transcoder's MLP output at `layer` [..., d]: decoded source activations plus the skip
    term of the layer's input x [..., d] (acts of later layers are ignored)."""
    return decode_layer(tc, acts, layer) + tc.skip(x.to(tc.dtype), layer)


@contextmanager
def replace_mlps(
    adapter: ModelAdapter,
    tc,
    positions: torch.Tensor | None = None,
    *,
    errors: dict[int, torch.Tensor] | None = None,
    active: dict[int, torch.Tensor] | None = None,
) -> Iterator[None]:
    """Inside, every MLP output of `adapter.model` is the transcoder's reconstruction; with
    ``positions`` (``[B, P]`` bool, the batch's shape) only there, the rest keeping the model's own.
    ``errors`` (layer -> [B, P, d]): a constant added to each reconstruction (a clean pass's MLP
    error, so the MLP answers as its transcoder would). ``active`` (layer -> [B, P, F] bool): the
    features allowed to be on, each passing its pre-activation through (no feature turns on or off).

    A CLT's layer-l output needs the features of layers <= l: each layer's input is encoded as it
    passes by (on the transcoder's device), and its activations kept for the rest of the pass."""
    acts: dict[int, torch.Tensor] = {}  # layer -> [B, P, F]
    xs: dict[int, torch.Tensor] = {}  # layer -> [B, P, d]

    def read(layer: int, x: torch.Tensor) -> None:
        x = xs[layer] = x.to(tc.device, tc.dtype)
        if active is None:
            acts[layer] = tc.encode(x, layer)
        else:
            acts[layer] = tc.pre_activations(x, layer) * active[layer]

    def write(layer: int, y: torch.Tensor) -> torch.Tensor:
        y_hat = reconstruct_layer(tc, acts, xs[layer], layer).to(y.device, y.dtype)
        if errors is not None:
            if errors[layer].shape != y_hat.shape:
                got, want = tuple(y_hat.shape), tuple(errors[layer].shape)
                raise ValueError(f"MLP errors frozen for outputs of shape {want}, got outputs of shape {got}")
            y_hat = y_hat + errors[layer]
        return y_hat if positions is None else torch.where(positions.to(y.device)[..., None], y_hat, y)

    with mlp_hooks(adapter, tc.feature_input_hook, tc.feature_output_hook, on_input=read, on_output=write):
        yield


def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """KL(P ‖ Q) in nats per row [...] of the softmax distributions of two logit tensors [..., V],
    computed in `dtype` from log-probabilities (no clamping of tiny probabilities)."""
    lp, lq = F.log_softmax(p_logits.to(dtype), -1), F.log_softmax(q_logits.to(dtype), -1)
    return (lp.exp() * (lp - lq)).sum(-1)
