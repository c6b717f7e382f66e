"""TopK training on the active entries only.

A TopK transcoder's step written densely costs five products of [B, d] x [d, F] per layer (encoder
forward and weight gradient, decoder forward and both gradients), though only k of each row's F
activations are non-zero. Here only the encoder forward is dense; everything after the top-k choice
touches the B·k chosen entries:

    decoder forward, dL/da, dL/dW_dec    `F.embedding_bag` over the chosen rows of W_dec
    dL/dW_enc                            one sparse product G^T x, G [B, F] holding dL/dh at the
                                         chosen entries (all other entries of dL/dh are zero)

The numbers equal the dense formulation's up to float summation order (tests compare both). The
AuxK term reads only the encoder rows of dead features, so its cost follows how many are dead."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F

from .layer_params import LayerParams
from .sparse_decode import decode_rows, sum_by_target

__all__ = ["SparseTopK", "topk_sparse_forward", "aux_reconstruction"]

# dtypes whose sparse CSR x dense product torch has on every device; others scatter into a dense G
_CSR_DTYPES = (torch.float32, torch.float64)


@dataclass
class SparseTopK:
    """One batch's TopK activations, per layer: the chosen feature indices [B, k] and their
    activations [B, k] (ReLU of the pre-activation; a chosen entry may be 0)."""

    idx: list[torch.Tensor]
    acts: list[torch.Tensor]

    def fired(self, n_features: int) -> torch.Tensor:
        """[L, F] bool: features active (> 0) on at least one token of the batch."""
        out = torch.zeros(len(self.idx), n_features, dtype=torch.bool, device=self.idx[0].device)
        for l, (i, a) in enumerate(zip(self.idx, self.acts)):
            out[l, i[a > 0]] = True
        return out

    def l0(self) -> torch.Tensor:
        """Active features per token, summed over layers (mean over tokens)."""
        return cast(torch.Tensor, sum((a > 0).sum(-1).float().mean() for a in self.acts))


class _TopKEncode(torch.autograd.Function):
    """(x [B, d], W [F, d], b [F], k) -> (vals [B, k], idx [B, k]): the k largest pre-activations
    of each row of x W^T + b and their feature indices, with gradients to W and b at those entries
    only. x gets no gradient (training data)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, k: int):
        h = torch.addmm(b.to(x.dtype), x, w.T.to(x.dtype))  # [B, F]
        vals, idx = h.topk(min(k, h.shape[-1]), dim=-1)
        ctx.save_for_backward(x, idx)
        ctx.w_dtype = w.dtype
        ctx.n_features = w.shape[0]
        ctx.mark_non_differentiable(idx)
        return vals, idx

    @staticmethod
    def backward(ctx, g_vals: torch.Tensor, _g_idx: torch.Tensor | None):
        x, idx = ctx.saved_tensors
        g_vals = g_vals.to(x.dtype)
        flat_idx, flat_g = idx.reshape(-1), g_vals.reshape(-1)
        n_f = ctx.n_features
        if x.dtype in _CSR_DTYPES:
            order = torch.argsort(flat_idx, stable=True)  # feature-major order of the B·k entries
            rows = torch.div(order, idx.shape[1], rounding_mode="floor")  # their token
            crow = torch.zeros(n_f + 1, dtype=torch.long, device=x.device)
            torch.cumsum(torch.bincount(flat_idx, minlength=n_f), 0, out=crow[1:])
            with warnings.catch_warnings():  # torch calls CSR tensors beta (once per process); we use one product
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                g_t = torch.sparse_csr_tensor(crow, rows, flat_g[order], size=(n_f, x.shape[0]), check_invariants=False)
            g_w = g_t @ x  # [F, d]
        else:
            g_w = torch.zeros(x.shape[0], n_f, dtype=x.dtype, device=x.device).scatter_(1, idx, g_vals).T @ x
        g_b = torch.zeros(n_f, dtype=x.dtype, device=x.device).index_add_(0, flat_idx, flat_g)
        return None, g_w.to(ctx.w_dtype), g_b.to(ctx.w_dtype), None


def topk_sparse_forward(tc, x: torch.Tensor, params: LayerParams) -> tuple[SparseTopK, torch.Tensor]:
    """x [B, L, d] (params: `LayerParams.of(tc)`) -> (the chosen activations, ŷ [B, L, d] with b_dec and
    the skip term)."""
    assert tc.k is not None, "topk_sparse_forward needs a TopK transcoder"
    sel = SparseTopK([], [])
    contribs = {}
    for l in range(tc.n_layers):
        vals, idx = _TopKEncode.apply(x[:, l].to(tc.dtype), params.w_enc[l], params.b_enc[l], tc.k)
        acts = F.relu(vals)
        sel.idx.append(idx)
        sel.acts.append(acts)
        contribs[l] = decode_rows(tc, l, idx, acts)
    y_hat = sum_by_target(tc, contribs, x.shape[0], bias=True)
    skip = params.skip(x)
    return sel, y_hat if skip is None else y_hat + skip


def aux_reconstruction(tc, x: torch.Tensor, params: LayerParams, dead: torch.Tensor, aux_k: int) -> torch.Tensor | None:
    """AuxK's ê [B, L, d] (no bias): per layer, the top-min(aux_k, #dead) pre-activations among
    the dead features (``dead [L, F]`` bool), ReLU'd and decoded; None when no feature is dead."""
    contribs = {}
    for l in range(tc.n_layers):
        dead_idx = dead[l].nonzero().squeeze(1)  # [n_dead]
        if dead_idx.numel() == 0:
            continue
        h = F.linear(x[:, l].to(tc.dtype), params.w_enc[l][dead_idx], params.b_enc[l][dead_idx])  # [B, n_dead]
        vals, j = h.topk(min(aux_k, dead_idx.numel()), dim=-1)
        contribs[l] = decode_rows(tc, l, dead_idx[j], F.relu(vals))
    return sum_by_target(tc, contribs, x.shape[0], bias=False) if contribs else None
