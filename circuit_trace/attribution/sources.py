"""Edge rows from gradients (SPEC §3). A gradient g_l[p] read at the MLP output of layer l (or
at the embeddings) turns into edge weights by contraction with what each source wrote there:
    feature s:   A[t, s] = a_s * sum_{l_s <= l < l_t} W_dec^{l_s -> l}[s] . g_l[p_s]
    error (l,p): A[t, e] = e_l[p] . g_l[p]        embedding p: A[t, E_p] = emb[p] . g_emb[p]"""

from __future__ import annotations

import torch

from ..replacement.local import LocalReplacement


class Sources:
    """What each source wrote into the residual stream, ready to contract with gradients."""

    @torch.no_grad()
    def __init__(self, lr: LocalReplacement):
        tc, f = lr.rm.transcoders, lr.features
        self.L, self.P = lr.rm.n_layers, lr.n_pos
        self.n_feat = len(f)
        self.n_err = self.L * (self.P - 1)
        self.n_src = self.n_feat + self.n_err + self.P
        # per source layer: (first column, position segments [(p, lo, hi)], activation-scaled
        # decoders flattened over target layers [n, n_out * d]). Features come in canonical order
        # (layer, pos, feature), so a layer's sources, and each position's, are contiguous columns.
        self.by_layer: list[tuple[int, int, list[tuple[int, int, int]], torch.Tensor]] = []
        for layer in range(self.L):
            cols = (f.layer == layer).nonzero().squeeze(1)
            if cols.numel():
                assert int(cols[-1] - cols[0]) + 1 == cols.numel(), "features must be in canonical order"
                dec = tc.decoder_vectors(layer, f.index[cols]).float()  # [n, n_out, d]
                writes = (dec * f.activation[cols, None, None].float()).reshape(len(cols), -1)
                pos = f.pos[cols]
                uniq, counts = torch.unique_consecutive(pos, return_counts=True)
                ends = counts.cumsum(0).tolist()
                segs = [(int(p), hi - int(c), hi) for p, c, hi in zip(uniq.tolist(), counts.tolist(), ends)]
                self.by_layer.append((layer, int(cols[0]), segs, writes.contiguous()))
        self.errors = lr.errors[:, 1:].float()  # [L, P-1, d]
        self.embeds = lr.embeds.float()  # [P, d]

    @torch.no_grad()
    def rows(
        self, g_emb: torch.Tensor, g_mlp: list[torch.Tensor | None], out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """g_emb [B, P', d], g_mlp: per layer [B, P', d] or None (unreached) -> [B, n_src] edge rows.

        P' <= P: gradients of a prefix pass; sources after it get no edge (causality). `out`, if
        given, must hold zeros: only reachable sources are written (no [B, n_src] temporary)."""
        B, Pb, d = g_emb.shape
        out = torch.zeros(B, self.n_src, device=g_emb.device) if out is None else out
        g_mlp = [None if g is None else g.float() for g in g_mlp]
        for layer, c0, segs, writes in self.by_layer:
            # target layers reached by this backward pass: layer .. layer + j_max - 1
            reached = [j for j in range(writes.shape[1] // d) if g_mlp[layer + j] is not None]
            segs = [sg for sg in segs if sg[0] < Pb]
            if not reached or not segs:
                continue
            j_max = reached[-1] + 1
            last = g_mlp[layer + j_max - 1]
            assert last is not None  # layer + j_max - 1 is reached
            gs = [g if (g := g_mlp[layer + j]) is not None else torch.zeros_like(last) for j in range(j_max)]
            g_cat = gs[0] if j_max == 1 else torch.cat(gs, -1)  # [B, P', j_max * d]
            w = writes[:, : j_max * d]
            # one GEMM per source position: [B, j_max*d] x [j_max*d, n_p]
            for p, lo, hi in segs:
                out[:, c0 + lo : c0 + hi] = g_cat[:, p] @ w[lo:hi].T
        base = self.n_feat
        for layer, g in enumerate(g_mlp):
            if g is not None:
                lo = base + layer * (self.P - 1)
                out[:, lo : lo + Pb - 1] = _dots(g[:, 1:], self.errors[layer, : Pb - 1])
        lo = base + self.n_err
        out[:, lo : lo + Pb] = _dots(g_emb.float(), self.embeds[:Pb])
        return out


def _dots(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """g [B, P, d] . v [P, d] over d -> [B, P]: one [1, d] x [d, B] product per position, with no
    [B, P, d] temporary (about twice as fast as multiply-and-sum on a position-major gradient)."""
    return torch.bmm(v[:, None, :], g.permute(1, 2, 0))[:, 0].T


def batched_grads(
    out: torch.Tensor, seeds: torch.Tensor, fo, top: int, keep: bool = False
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Rows of d(seeds . out) for every seed (seeds [B, *out.shape]) with respect to the embeddings
    and the MLP outputs of layers < top: (g_emb [B, P', d], per layer [B, P', d] or None).
    `keep` retains the forward's graph for further passes."""
    grads = torch.autograd.grad(
        [out], [fo.embeds, *fo.mlp_out[:top]], [seeds], allow_unused=True, retain_graph=keep, is_grads_batched=True
    )
    g = [None if t is None else t[:, 0] for t in grads]  # drop the forward's batch of 1
    g_emb = g[0]
    if g_emb is None:  # every target reads the embeddings
        raise RuntimeError("the backward pass did not reach the embeddings")
    return g_emb, g[1:] + [None] * (len(fo.mlp_out) - top)
