"""Logit effects of transcoder features: what each feature's decoder writes, read through the
unembedding.

For a CLT a feature writes to every layer from its own to the last, and all of those writes land
in the residual stream that the unembedding reads, so its direction is the SUM of its decoder
vectors over its output layers (SPEC §7); a PLT feature has one decoder vector. The direction is
scaled by the final norm's gain (Gemma: 1 + w) and multiplied by W_U: a linear read-out with the
norm's denominator left out, so values compare features with each other, not with real logits."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LogitEffects", "logit_effects"]


@dataclass
class LogitEffects:
    """Per feature of one layer: the n most promoted and most suppressed token ids and values."""

    top_ids: torch.Tensor  # [F, n]
    top_values: torch.Tensor  # [F, n]
    bottom_ids: torch.Tensor  # [F, n], most negative first
    bottom_values: torch.Tensor  # [F, n]


@torch.no_grad()
def feature_directions(rm, layer: int) -> torch.Tensor:
    """[F, d]: decoder summed over output layers, times the final norm's gain."""
    ad, tc = rm.adapter, rm.transcoders
    gain = getattr(ad.final_norm, "weight", None)
    gain = torch.ones(tc.d_model) if gain is None else gain.detach().float().cpu()
    if ad.norm_kind.offset_one:
        gain = 1.0 + gain
    return tc.decoder(layer).detach().float().cpu().sum(1) * gain


@torch.no_grad()
def logit_effects(rm, layer: int, n: int = 10, chunk: int = 2048) -> LogitEffects:
    """Top and bottom `n` logit effects of every feature of `layer`, in chunks of features so the
    [chunk, vocab] product stays small."""
    w_u = rm.adapter.unembed_weight().detach().float().cpu()  # [V, d]
    dirs = feature_directions(rm, layer)
    n = min(n, w_u.shape[0])
    parts: list[tuple[torch.Tensor, ...]] = []
    for lo in range(0, dirs.shape[0], chunk):
        eff = dirs[lo : lo + chunk] @ w_u.T  # [c, V]
        top = eff.topk(n, dim=1)
        bot = (-eff).topk(n, dim=1)
        parts.append((top.indices, top.values, bot.indices, -bot.values))
    return LogitEffects(*(torch.cat([p[i] for p in parts]) for i in range(4)))
