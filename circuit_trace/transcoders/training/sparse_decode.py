"""Decoding a training batch from its non-zero activations only.

`Transcoder.decode` multiplies dense activations [B, F] by the decoder while autograd needs dL/da
everywhere. In training only some entries can receive a gradient that matters: TopK's k chosen ones,
ReLU's active ones (its derivative is 0 elsewhere) and JumpReLU's active ones plus those within its
straight-through window below θ (where dL/dθ reads dL/da). Decoding through `F.embedding_bag` over
those entries gives the same ŷ, the same gradient to W_dec and, at every entry that reaches a
parameter, the same dL/da, at a cost that follows the number of entries instead of F.

In float32 and float64 the backward is two sparse products instead of `embedding_bag`'s own:
dL/dW = Aᵀ·g over the entries grouped by feature (CSR), and dL/da = g·Wᵀ sampled at the entries
(`torch.sparse.sampled_addmm`); on a 2-core CPU, 30-layer SmolLM2 JumpReLU steps ran 7 % faster and
ReLU steps 15 % (benchmarks/RESULTS.md)."""

from __future__ import annotations

import warnings
from typing import cast

import torch
import torch.nn.functional as F

__all__ = [
    "decode_entries",
    "decode_masked",
    "sum_by_target",
    "CSR_DTYPES",
    "csr",
    "feature_order",
    "grouped_product",
    "sampled_products",
]

# dtypes whose sparse CSR products (x dense, and sampled) torch has on every device; others keep autograd's
CSR_DTYPES = (torch.float32, torch.float64)


def csr(crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A CSR matrix from its parts (trusted: no invariant checks)."""
    with warnings.catch_warnings():  # torch calls CSR tensors beta (once per process)
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, cols, values, size=size, check_invariants=False)


def feature_order(cols: torch.Tensor, n_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entries listed token by token with features ``cols [nnz]`` -> (order [nnz] grouping them by
    feature, tokens in their original order within one; crow [n_features + 1] of that grouping): the
    pattern of the transposed [F, B] CSR matrix, shared by every set of values on the same entries."""
    order = torch.argsort(cols, stable=True)
    crow = torch.zeros(n_features + 1, dtype=torch.long, device=cols.device)
    torch.cumsum(torch.bincount(cols, minlength=n_features), 0, out=crow[1:])
    return order, crow


def grouped_product(
    order: torch.Tensor, crow: torch.Tensor, rows: torch.Tensor, values: torch.Tensor, dense: torch.Tensor
) -> torch.Tensor:
    """Aᵀ·dense [F, n] for A [B, F] holding ``values [nnz]`` at (``rows [nnz]``, the entries' features),
    the entries listed token by token and grouped by (order, crow) from `feature_order`."""
    return csr(crow, rows[order], values[order].to(dense.dtype), (crow.shape[0] - 1, dense.shape[0])) @ dense


def sampled_products(crow: torch.Tensor, cols: torch.Tensor, g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """g [B, n], W [F, n] -> [nnz]: g_b · W_f at each entry (b, f) of the token-major pattern (crow [B + 1],
    cols [nnz]), without forming g·Wᵀ."""
    pattern = csr(crow, cols, g.new_zeros(cols.shape[0]), (g.shape[0], w.shape[0]))
    return torch.sparse.sampled_addmm(pattern, g, w.T, beta=0.0).values()


class _DecodeEntries(torch.autograd.Function):
    """(cols [nnz], offsets [B], vals [nnz], W [F, n]) -> [B, n]: row b sums vals·W[cols] over its
    entries (b's entries are cols[offsets[b] : offsets[b + 1]]), with the sparse backward above."""

    @staticmethod
    def forward(ctx, cols: torch.Tensor, offsets: torch.Tensor, vals: torch.Tensor, w: torch.Tensor):
        ctx.save_for_backward(cols, offsets, vals, w)
        return F.embedding_bag(cols, w, offsets, per_sample_weights=vals, mode="sum")

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # g [B, n]
        cols, offsets, vals, w = ctx.saved_tensors
        g = g.contiguous().to(w.dtype)
        n_rows = offsets.shape[0]
        crow = torch.cat([offsets, offsets.new_tensor([cols.shape[0]])])
        g_vals = g_w = None
        if ctx.needs_input_grad[2]:
            g_vals = sampled_products(crow, cols, g, w).to(vals.dtype)
        if ctx.needs_input_grad[3]:
            rows = torch.repeat_interleave(
                torch.arange(n_rows, device=cols.device), torch.diff(crow)
            )  # entries' tokens
            g_w = grouped_product(*feature_order(cols, w.shape[0]), rows, vals, g)
        return None, None, g_vals, g_w


def _decode(idx_flat: torch.Tensor, offsets: torch.Tensor, vals: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The entries' sum per token [B, n] (see `_DecodeEntries`); autograd's `embedding_bag` where the
    sparse products are missing (half precisions)."""
    vals = vals.to(w.dtype)
    if w.dtype in CSR_DTYPES:
        return cast(torch.Tensor, _DecodeEntries.apply(idx_flat, offsets, vals, w))
    return F.embedding_bag(idx_flat, w, offsets, per_sample_weights=vals, mode="sum")


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
    flat = _decode(cols, offsets, acts[rows, cols], w.reshape(w.shape[0], -1))
    return flat.view(mask.shape[0], w.shape[1], w.shape[2])


def decode_masked(tc, acts: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
    """Per layer activations [B, F] and masks [B, F] of the entries that matter -> ŷ [B, L, d]
    (b_dec included, skip excluded): `Transcoder.decode` restricted to the masked entries."""
    contribs = {l: decode_entries(tc, l, a, m) for l, (a, m) in enumerate(zip(acts, masks))}
    return sum_by_target(tc, contribs, acts[0].shape[0], bias=True)
