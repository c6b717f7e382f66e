"""The frozen local replacement model differentiated by hand, for attribution's feature passes.

With attention patterns, norm denominators and MLP outputs frozen, a layer of a plain pre-norm model
(x + attn(norm(x)), then + MLP output; GPT-2, Llama: `ModelAdapter.attention_weights`) is linear in
its residual input, so the gradient of a seed at layer l with respect to the embeddings and every
MLP output below l is a fixed chain of matrix products, one attention block per layer:

    g_o,h = g W_O,h^T        g_v,j = sum_(h in group j) P'_h^T g_o,h        g += sum_j g_v,j M_j

with the frozen norm folded into the weights: its per-position scale s_k into the pattern
(P'_h[q, k] = P_h[q, k] s_k) and its gain w and centring C (LayerNorm) into M_j = W_V,j^T diag(w) C.
A live skip path (transcoder with W_skip) adds g_mlp,l W_skip,l (through the pre-MLP norm when the
transcoder reads the norm's output).

The same numbers as autograd's through the frozen forward, up to float rounding (the exactness
tests compare both against brute-force Jacobians), without running that forward per pass, without
autograd's per-op bookkeeping or the vmapped backward's small batched products: gradients are kept
position-major, [P, B, d], so every step above is one large matrix product per head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from ..models.adapters import AttentionWeights, ModelAdapter
from ..models.heads import out_projection

if TYPE_CHECKING:
    from .local import LocalReplacement

__all__ = ["FrozenBackward"]

# transcoder hooks this module follows (others: the autograd path)
_RESID_MID = ("hook_resid_mid",)
_NORM_OUT = ("ln2.hook_normalized", "mlp.hook_in")
_MLP_OUT = ("hook_mlp_out", "mlp.hook_out")


@dataclass
class _FrozenNormBwd:
    """A frozen norm's backward, g -> s * C(g w): scale s [P] per position, gain w [d]."""

    scale: torch.Tensor  # [P]
    gain: torch.Tensor  # [d]
    centre: bool

    def __call__(self, g: torch.Tensor) -> torch.Tensor:  # g [P', B, d] -> [P', B, d]
        g = g * self.gain
        if self.centre:
            g = g - g.mean(-1, keepdim=True)
        return g * self.scale[: g.shape[0], None, None]


@dataclass
class _Attention:
    """One layer's frozen attention block, folded (see the module docstring)."""

    w_o: list[torch.Tensor]  # n_heads x [d, d_head]: W_O,h^T
    m_v: list[torch.Tensor]  # n_kv_heads x [d_head, d]: W_V,j^T diag(w) C
    pattern_t: torch.Tensor  # [H, K, Q]: P'_h^T over the whole prompt
    skip: torch.Tensor | None  # [d, d] W_skip of this layer (g_x = g_y W_skip), or None
    pre_mlp: _FrozenNormBwd | None  # the pre-MLP norm, where the transcoder reads its output

    def backward(self, g: torch.Tensor) -> torch.Tensor:
        """g [P', B, d] at the block's output (residual after attention) -> at its input (a new tensor)."""
        n_pos, batch, d = g.shape
        rep = len(self.w_o) // len(self.m_v)
        flat = g.reshape(n_pos * batch, d)
        out = flat.clone()
        pt = self.pattern_t[:, :n_pos, :n_pos]
        for j, m in enumerate(self.m_v):
            g_v = None  # [K, B * d_head]
            for h in range(j * rep, (j + 1) * rep):
                g_o = torch.mm(flat, self.w_o[h]).view(n_pos, -1)  # [Q, B * d_head]
                g_v = torch.mm(pt[h], g_o) if g_v is None else g_v.addmm_(pt[h], g_o)
            assert g_v is not None  # rep >= 1
            out.addmm_(g_v.view(n_pos * batch, -1), m)
        return out.view(n_pos, batch, d)

    def skip_backward(self, g: torch.Tensor) -> torch.Tensor:
        """g [P', B, d] at the MLP output -> its part through the skip path at the residual (a new tensor)."""
        assert self.skip is not None
        g_x = torch.mm(g.reshape(-1, g.shape[-1]), self.skip).view(g.shape)
        return g_x if self.pre_mlp is None else self.pre_mlp(g_x)


def _hooked(ad: ModelAdapter, layer: int) -> bool:
    """Whether a hook edits this layer's attention (e.g. `attention.remove_heads` on the output
    projection): the hand-written pass reads the weights and would not see it, so autograd runs."""
    mods = (ad.attention(layer), out_projection(ad, layer))
    return any(m._forward_hooks or m._forward_pre_hooks for m in mods)


class FrozenBackward:
    """Feature-pass gradients of one recorded prompt (see the module docstring); `build` gives None
    where the model or transcoders are outside what it follows (then autograd's path runs)."""

    def __init__(self, blocks: list[_Attention], seed_norm: list[_FrozenNormBwd | None]):
        self.blocks = blocks
        self.seed_norm = seed_norm  # per layer: the pre-MLP norm when seeds sit at its output

    @classmethod
    @torch.no_grad()
    def build(cls, lr: LocalReplacement) -> FrozenBackward | None:
        rm, ad, tc = lr.rm, lr.rm.adapter, lr.rm.transcoders
        reads_norm = tc.feature_input_hook in _NORM_OUT
        plain = (
            (tc.feature_input_hook in _RESID_MID or reads_norm)
            and tc.feature_output_hook in _MLP_OUT
            and ad.post_mlp_norm_name is None
            and rm.dtype == torch.float32
            and tc.dtype == torch.float32
            and tc.device == rm.device
        )
        plain = plain and not any(_hooked(ad, l) for l in range(ad.n_layers))
        weights = [ad.attention_weights(l) for l in range(ad.n_layers)] if plain else []
        if not plain or any(w is None or w.w_v.device != rm.device for w in weights):  # incl. device_map
            return None
        pre = [_norm_bwd(lr, ad, _pre_mlp_norm(ad, l)) if reads_norm else None for l in range(ad.n_layers)]
        blocks = [_attention(lr, ad, l, w, pre[l]) for l, w in enumerate(weights) if w is not None]
        return cls(blocks, pre)

    @torch.no_grad()
    def grads(self, layer: int, seeds: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """seeds [P', B, d] at the transcoder input of `layer` -> (g_emb [B, P', d], per layer
        [B, P', d] for the MLP outputs below `layer`, else None): views of position-major tensors."""
        g = seeds if (norm := self.seed_norm[layer]) is None else norm(seeds)  # at the residual
        g_mlp: list[torch.Tensor | None] = [None] * len(self.blocks)
        for l in range(layer, -1, -1):
            if l < layer:  # g is at layer l's MLP output: keep it, and follow the skip path
                g_mlp[l] = g
                if self.blocks[l].skip is not None:
                    g = g + self.blocks[l].skip_backward(g)
            g = self.blocks[l].backward(g)  # now at layer l's residual input
        return g.transpose(0, 1), [None if t is None else t.transpose(0, 1) for t in g_mlp]


def _pre_mlp_norm(ad: ModelAdapter, layer: int) -> nn.Module:
    return ad.hook_module("hook_resid_mid", layer)[0]  # the module whose input is resid_mid


def _norm_bwd(lr: LocalReplacement, ad: ModelAdapter, norm: nn.Module) -> _FrozenNormBwd:
    kind = ad.norm_kind
    w = cast(torch.Tensor, norm.weight).detach().float()
    gain = 1.0 + w if kind.offset_one else w
    scale = lr.state.norm_scales[id(norm)].reshape(-1).float()  # [P]: recorded [1, P, 1]
    return _FrozenNormBwd(scale=scale, gain=gain, centre=kind.centre)


def _attention(
    lr: LocalReplacement, ad: ModelAdapter, layer: int, w: AttentionWeights, pre_mlp: _FrozenNormBwd | None
) -> _Attention:
    norm = _norm_bwd(lr, ad, w.norm)
    d_head = w.w_o.shape[0] // w.n_heads
    w_o = w.w_o.detach().float()
    m = w.w_v.detach().float().T * norm.gain  # [Hkv * dh, d]: W_V^T diag(w)
    if norm.centre:
        m = m - m.mean(-1, keepdim=True)  # ... C: each row minus its mean
    pattern = lr.state.patterns[layer][0].float() * norm.scale  # [H, Q, K] * s_k
    tc = lr.rm.transcoders
    return _Attention(
        w_o=[w_o[h * d_head : (h + 1) * d_head].T.contiguous() for h in range(w.n_heads)],
        m_v=[m[j * d_head : (j + 1) * d_head].contiguous() for j in range(w.n_kv_heads)],
        pattern_t=pattern.transpose(1, 2).contiguous(),
        skip=None if tc.W_skip is None else tc.W_skip[layer].detach().float(),
        pre_mlp=pre_mlp,
    )
