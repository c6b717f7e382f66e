"""Decoding a training batch from its non-zero activations only.

`Transcoder.decode` multiplies dense activations [B, F] by the decoder while autograd needs dL/da
everywhere. In training only some entries can receive a gradient that matters: TopK's k chosen ones,
ReLU's active ones (its derivative is 0 elsewhere) and JumpReLU's active ones plus those within its
straight-through window below θ (where dL/dθ reads dL/da). Decoding through `F.embedding_bag` over
those entries gives the same ŷ, the same gradient to W_dec and, at every entry that reaches a
parameter, the same dL/da, at a cost that follows the number of entries instead of F."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["decode_rows", "decode_entries", "decode_masked", "sum_by_target"]


def decode_rows(tc, layer: int, idx: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """Σ_k acts[:, k] W_dec[layer][idx[:, k]] -> [B, n_out, d] (no bias)."""
    w = tc.W_dec[layer]  # [F, n_out, d]
    flat = F.embedding_bag(idx, w.reshape(w.shape[0], -1), per_sample_weights=acts.to(w.dtype), mode="sum")
    return flat.view(idx.shape[0], w.shape[1], w.shape[2])


def sum_by_target(tc, contribs: dict[int, torch.Tensor], batch: int, bias: bool) -> torch.Tensor:
    """Per source layer [B, n_out, d] -> ŷ [B, L, d] (each target's sum, plus b_dec if `bias`)."""
    parts: list[list[torch.Tensor]] = [[] for _ in range(tc.n_layers)]
    for l, c in contribs.items():
        for j, target in enumerate(tc.output_layers(l)):
            parts[target].append(c[:, j])
    out = []
    for l in range(tc.n_layers):
        y = tc.b_dec[l].expand(batch, tc.d_model) if bias else tc.b_dec.new_zeros(batch, tc.d_model)
        for p in parts[l]:
            y = y + p
        out.append(y)
    return torch.stack(out, 1)


def decode_entries(tc, layer: int, acts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_f acts[:, f] W_dec[layer][f] over the entries where ``mask`` [B, F] holds -> [B, n_out, d]
    (no bias); gradients reach ``acts`` at those entries only."""
    w = tc.W_dec[layer]  # [F, n_out, d]
    rows, cols = mask.nonzero(as_tuple=True)  # row-major: each token's entries are contiguous
    counts = torch.bincount(rows, minlength=mask.shape[0])
    offsets = torch.cumsum(counts, 0) - counts  # [B]: where each token's entries start
    vals = acts[rows, cols].to(w.dtype)
    flat = F.embedding_bag(cols, w.reshape(w.shape[0], -1), offsets, per_sample_weights=vals, mode="sum")
    return flat.view(mask.shape[0], w.shape[1], w.shape[2])


def decode_masked(tc, acts: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
    """Per layer activations [B, F] and masks [B, F] of the entries that matter -> ŷ [B, L, d]
    (b_dec included, skip excluded): `Transcoder.decode` restricted to the masked entries."""
    contribs = {l: decode_entries(tc, l, a, m) for l, (a, m) in enumerate(zip(acts, masks))}
    return sum_by_target(tc, contribs, acts[0].shape[0], bias=True)
