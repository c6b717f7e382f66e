"""TopK training on the active entries only.

A TopK transcoder's step written densely costs five products of [B, d] x [d, F] per layer (encoder
forward and weight gradient, decoder forward and both gradients), though only k of each row's F
activations are non-zero. Here only the encoder forward is dense; everything after the top-k choice
touches the B·k chosen entries:

    decoder forward         `F.embedding_bag` over the chosen rows of W_dec
    dL/da                   g·W_decᵀ at the chosen entries only (`torch.sparse.sampled_addmm`)
    dL/dW_dec, dL/dW_enc    sparse products Aᵀg and Gᵀx, A and G [B, F] holding the activations and
                            dL/dh at the chosen entries (zero elsewhere), grouped by feature once

In half precisions, where torch lacks those sparse products, the backward scatters A and G into
dense matrices instead.
The numbers equal the dense formulation's up to float summation order (tests compare both). The
AuxK term reads only the encoder and decoder rows of dead features, so its cost follows how many are
dead."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .layer_params import LayerParams
from .sparse_decode import CSR_DTYPES, feature_order, grouped_product, sampled_products, sum_by_target

__all__ = ["SparseTopK", "topk_sparse_forward", "aux_reconstruction"]


@dataclass
class SparseTopK:
    """One batch's TopK activations, per layer: the chosen feature indices [B, k] and their
    activations [B, k] (ReLU of the pre-activation; a chosen entry may be 0)."""

    idx: list[torch.Tensor]
    acts: list[torch.Tensor]

    def fired(self, n_features: int) -> torch.Tensor:
        """[L, F] bool: features active (> 0) on at least one token of the batch."""
        idx = torch.stack(self.idx).flatten(1)  # [L, B·k]
        on = (torch.stack(self.acts) > 0).flatten(1).int()
        # counts, not a scatter of booleans: one feature may be chosen at 0 on a token and > 0 on another
        counts = torch.zeros(len(self.idx), n_features, dtype=torch.int32, device=idx.device)
        return counts.scatter_add_(1, idx, on) > 0

    def l0(self) -> torch.Tensor:
        """Active features per token, summed over layers (mean over tokens)."""
        return (torch.stack(self.acts) > 0).sum(-1).float().mean(-1).sum()


class _TopKLayer(torch.autograd.Function):
    """One layer: (x [B, d], W_enc [F, d], b_enc [F], W_dec [F, n], k) -> (ŷ [B, n] without bias,
    the k largest pre-activations of each row of x W_encᵀ + b_enc [B, k], their features [B, k]).
    ŷ sums ReLU(pre-activation)·W_dec over the chosen entries. Gradients reach W_enc, b_enc and
    W_dec at those entries only; x is training data. The backward groups the B·k entries by feature
    once, for the gradients of both weights."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w_enc: torch.Tensor, b_enc: torch.Tensor, w_dec: torch.Tensor, k: int):
        h = torch.addmm(b_enc.to(x.dtype), x, w_enc.T.to(x.dtype))  # [B, F]
        vals, idx = h.topk(min(k, h.shape[-1]), dim=-1)
        acts = F.relu(vals).to(w_dec.dtype)
        y = F.embedding_bag(idx, w_dec, per_sample_weights=acts, mode="sum")  # each row a bag of k
        ctx.save_for_backward(x, idx, acts, w_dec)
        ctx.w_enc_dtype = w_enc.dtype
        ctx.mark_non_differentiable(vals, idx)
        return y, vals, idx

    @staticmethod
    def backward(ctx, g_y: torch.Tensor, _g_vals: torch.Tensor | None, _g_idx: torch.Tensor | None):
        x, idx, acts, w_dec = ctx.saved_tensors
        g_y = g_y.contiguous().to(w_dec.dtype)  # [B, n]
        n_tok, k = idx.shape
        n_f = w_dec.shape[0]
        flat_idx = idx.reshape(-1)
        sparse = x.dtype in CSR_DTYPES and w_dec.dtype in CSR_DTYPES
        if sparse:
            crow_tok = torch.arange(0, n_tok * k + 1, k, device=x.device)
            g_acts = sampled_products(crow_tok, flat_idx, g_y, w_dec).view(n_tok, k)
        else:
            g_acts = (g_y @ w_dec.T).gather(1, idx)
        g_h = torch.where(acts > 0, g_acts, 0.0).to(x.dtype)  # ReLU's derivative at the chosen entries
        if sparse:
            order, crow = feature_order(flat_idx, n_f)  # grouped once for both products
            rows = torch.arange(n_tok, device=x.device).repeat_interleave(k)  # each entry's token
            g_w_enc = grouped_product(order, crow, rows, g_h.reshape(-1), x)  # [F, d]
            g_w_dec = grouped_product(order, crow, rows, acts.reshape(-1), g_y)  # [F, n]
        else:
            g_w_enc = torch.zeros(n_tok, n_f, dtype=x.dtype, device=x.device).scatter_(1, idx, g_h).T @ x
            g_w_dec = torch.zeros(n_tok, n_f, dtype=g_y.dtype, device=x.device).scatter_(1, idx, acts).T @ g_y
        g_b = torch.zeros(n_f, dtype=x.dtype, device=x.device).index_add_(0, flat_idx, g_h.reshape(-1))
        return None, g_w_enc.to(ctx.w_enc_dtype), g_b.to(ctx.w_enc_dtype), g_w_dec, None


def topk_sparse_forward(tc, x: torch.Tensor, params: LayerParams) -> tuple[SparseTopK, torch.Tensor]:
    """x [B, L, d] (params: `LayerParams.of(tc)`) -> (the chosen activations, ŷ [B, L, d] with b_dec and
    the skip term)."""
    assert tc.k is not None, "topk_sparse_forward needs a TopK transcoder"
    sel = SparseTopK([], [])
    contribs = {}
    for l in range(tc.n_layers):
        w_dec = tc.W_dec[l]  # [F, n_out, d]
        y, vals, idx = _TopKLayer.apply(
            x[:, l].to(tc.dtype), params.w_enc[l], params.b_enc[l], w_dec.reshape(w_dec.shape[0], -1), tc.k
        )
        sel.idx.append(idx)
        sel.acts.append(F.relu(vals))
        contribs[l] = y.view(x.shape[0], w_dec.shape[1], w_dec.shape[2])
    y_hat = sum_by_target(tc, contribs, x.shape[0], bias=True)
    skip = params.skip(x)
    return sel, y_hat if skip is None else y_hat + skip


def aux_reconstruction(
    tc, x: torch.Tensor, params: LayerParams, dead: torch.Tensor, aux_k: int, pad_to: int = 64
) -> torch.Tensor | None:
    """AuxK's ê [B, L, d] (no bias): per layer, the top-min(aux_k, #dead) pre-activations among
    the dead features (``dead [L, F]`` bool), ReLU'd and decoded; None when no feature is dead.
    Decoded densely over the dead features: aux_k (d/2 by default) is a large share of them, and a
    sparse decode of that many entries per token was 3-4x slower than the product.
    The dead set is padded to a multiple of ``pad_to`` columns (pre-activation -inf: never chosen,
    zero activation and gradient) so the products' shapes repeat from step to step: oneDNN compiles
    a kernel for every new bf16 GEMM shape (~1 ms and fresh code pages each), and the number of
    dead features changes every step (700 compilations a step on a 30-layer model)."""
    contribs = {}
    for l in range(tc.n_layers):
        dead_idx = dead[l].nonzero().squeeze(1)  # [n_dead]
        n_dead = dead_idx.numel()
        if n_dead == 0:
            continue
        idx = F.pad(dead_idx, (0, -n_dead % pad_to))  # [n_pad]; the padding repeats feature 0
        h = F.linear(x[:, l].to(tc.dtype), params.w_enc[l][idx], params.b_enc[l][idx])  # [B, n_pad]
        h = h.masked_fill(torch.arange(idx.numel(), device=h.device) >= n_dead, -torch.inf)
        if aux_k >= n_dead:  # every dead feature is chosen: top-k is the identity
            a = F.relu(h)  # [B, n_pad]
        else:
            vals, j = h.topk(aux_k, dim=-1, sorted=False)  # order is not needed: 3x faster
            a = torch.zeros_like(h).scatter(1, j, F.relu(vals))
        w = tc.W_dec[l][idx]  # [n_pad, n_out, d]
        contribs[l] = (a @ w.reshape(w.shape[0], -1).to(a.dtype)).view(x.shape[0], w.shape[1], w.shape[2])
    return sum_by_target(tc, contribs, x.shape[0], bias=False) if contribs else None
