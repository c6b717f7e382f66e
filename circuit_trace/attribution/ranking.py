"""Greedy node selection: estimated influence of every feature on the weighted logit targets
through the rows computed so far (circuit-tracer's ranking, computed without N x N work)."""

from __future__ import annotations

import numpy as np
import torch


def logit_influence(
    logit_abs: torch.Tensor,
    logit_sum: torch.Tensor,
    weights: torch.Tensor,
    feat_abs: torch.Tensor,
    feat_sum: torch.Tensor,
    visited: list[int],
    n_cols: int,
) -> torch.Tensor:
    """Influence on the weighted targets of source columns [:n_cols] through the rows so far.

    Rows are the K logit rows (|row| in logit_abs [K, n_src], row sums |.|_1 in logit_sum [K],
    weights [K]) and the k feature rows computed so far (|row| in feat_abs [k, n_src], feat_sum [k]
    their |.|_1; row j is the node of source column visited[j]). With Â = |rows| / row sums and
    x_0 = weights on the logit rows, influence = Σ_t x_t Â with x_{t+1}[j] = (x_t Â)[visited[j]].
    By linearity that is (Σ_t x_t) Â, and the propagation only needs Â's columns of the visited
    features ([k, k]): the [k, n_src] matrix is read once, by one mat-vec, instead of normalised
    copies and one full mat-vec per step."""
    inv_l = 1.0 / logit_sum.clamp_min(1e-30)
    inv_f = 1.0 / feat_sum.clamp_min(1e-30)
    total = (weights * inv_l) @ logit_abs[:, :n_cols]
    k = feat_abs.shape[0]
    if k:
        cols = torch.as_tensor(visited, dtype=torch.long)
        x = weights @ (logit_abs[:, cols] * inv_l[:, None])  # [k] weight reaching each feature row
        x_total = propagate(x, feat_abs[:, cols] * inv_f[:, None])  # [k, k] Â between them
        total += (x_total * inv_f) @ feat_abs[:, :n_cols]
    return total


def logit_influence_top(
    logit_abs: torch.Tensor,
    logit_sum: torch.Tensor,
    weights: torch.Tensor,
    top_idx: torch.Tensor,
    top_val: torch.Tensor,
    visited: list[int],
    n_cols: int,
) -> torch.Tensor:
    """`logit_influence` when each feature row keeps only its largest entries: top_idx [k, r]
    (columns < n_cols) and top_val [k, r] (Â there, i.e. already divided by the full row's |.|_1).
    Equal to it when r covers every nonzero column; a lower bound otherwise."""
    inv_l = 1.0 / logit_sum.clamp_min(1e-30)
    total = (weights * inv_l) @ logit_abs[:, :n_cols]
    k = top_idx.shape[0]
    if k:
        cols = torch.as_tensor(visited, dtype=torch.long)
        x = weights @ (logit_abs[:, cols] * inv_l[:, None])
        slot = torch.full((n_cols,), -1, dtype=torch.long)
        slot[cols] = torch.arange(k)
        j = slot[top_idx]  # [k, r]: visited slot of each kept column, or -1
        hit = j >= 0
        m = torch.zeros(k, k)
        m[hit.nonzero(as_tuple=True)[0], j[hit]] = top_val[hit]
        x_total = propagate(x, m)
        del m
        total.index_add_(0, top_idx.reshape(-1), (x_total[:, None] * top_val).reshape(-1))
    return total


def propagate(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Σ_t x m^t for a DAG's [k, k] normalised adjacency m (x vanishes after its longest path)."""
    x_total = torch.zeros_like(x)
    for _ in range(m.shape[0]):
        if not bool((x > 0).any()):
            break
        x_total += x
        x = x @ m
    return x_total


def left_out_share(
    logit_abs: torch.Tensor,
    logit_sum: torch.Tensor,
    weights: torch.Tensor,
    kept_abs: torch.Tensor,
    lost_abs: torch.Tensor,
    row_sum: torch.Tensor,
    kept: np.ndarray,
    n_feat: int,
) -> float:
    """Share of the targets' influence that ends on the active features left out by the cap.

    With Â = |A| / row |.|_1 (the sum over every source: all active features, errors, embeddings),
    mass x_0 = weights starts on the logit rows and moves back through the kept features only:
    x_{t+1}[j] = (x_t Â)[kept[j]]. Every unit of mass that reaches a source column of a feature
    left out stops there (its row was never computed); the share is that mass over Σ weights, in
    [0, 1]. It is the influence the greedy ranking assigns to the unselected features once every
    kept row is known, normalised by the total target weight.

    logit_abs [K, n_src], logit_sum [K]: |logit rows| and their |.|_1; weights [K].
    kept_abs [n_v, n_v]: |A| between the kept features (rows and columns in the order of `kept`);
    lost_abs [n_v]: each kept row's |.|_1 over the left-out feature columns; row_sum [n_v]: its
    full |.|_1; kept [n_v]: the kept features' source columns (< n_feat)."""
    inv_l = 1.0 / logit_sum.double().clamp_min(1e-30)
    w = weights.double()
    left = torch.ones(n_feat, dtype=torch.bool)
    left[torch.as_tensor(kept, dtype=torch.long)] = False
    direct = (w * inv_l) @ logit_abs[:, :n_feat][:, left].double().sum(1)  # mass landing there at once
    if len(kept):
        cols = torch.as_tensor(kept, dtype=torch.long)
        inv_f = 1.0 / row_sum.double().clamp_min(1e-30)
        x = ((w * inv_l) @ logit_abs[:, cols].double()).float()  # [n_v] mass reaching each kept feature directly
        x_total = propagate(x, kept_abs * inv_f.float()[:, None])  # all the mass through each kept row (float32)
        direct = direct + x_total.double() @ (lost_abs.double() * inv_f)
    return float(direct / w.sum().clamp_min(1e-30))
