"""Node and edge pruning by logit influence (SPEC §4), entirely on the sparse pattern of A.

Every edge-level array here is aligned with the stored entries of `as_csr(adjacency)` (length nnz),
so a 100k-node graph never needs an N x N array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from .influence import (
    Adjacency,
    _row_normalise_data,
    as_csr,
    influence,
    row_of_entries,
)

if TYPE_CHECKING:  # graph.py imports this module; only the type is needed here
    from .graph import Graph

__all__ = ["PruneResult", "PruneMasks", "find_threshold", "prune_masks", "prune"]


def find_threshold(scores: np.ndarray, threshold: float) -> float:
    """Smallest score s.t. the nodes/edges scoring at least it cover `threshold` of the total.

    Same semantics as circuit-tracer's find_threshold: sort descending, take the first rank whose
    cumulative share reaches the threshold, keep everything scoring >= that rank's score (so ties
    at the cut are all kept). A zero total keeps everything.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        return 0.0
    ordered = np.sort(scores)[::-1]  # [n] descending
    total = ordered.sum()
    if not total > 0:
        return 0.0
    cumulative = np.cumsum(ordered) / total
    idx = int(np.searchsorted(cumulative, threshold, side="left"))
    return float(ordered[min(idx, ordered.size - 1)])  # idx == n only by rounding at 1.0


def cumulative_share(scores: np.ndarray) -> np.ndarray:
    """Per node [N]: share of the total score held by the nodes ranked at or above it.

    This is the JSON `influence` (lower = more important). Ties rank by node index (stable sort).
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    total = scores.sum()
    cum = np.cumsum(scores[order]) / total if total > 0 else np.ones(scores.size)
    out = np.empty_like(scores)
    out[order] = cum
    return out


@dataclass
class PruneMasks:
    """Array-level pruning outcome; edge arrays are aligned with `csr.data` [nnz]."""

    csr: sp.csr_array  # canonical float64 copy of A [N, N]
    node_mask: np.ndarray  # [N] bool
    edge_keep: np.ndarray  # [nnz] bool
    node_influence: np.ndarray  # [N] wᵀB + w on the unpruned graph
    cumulative_influence: np.ndarray  # [N] cumulative share at each node's rank


def prune_masks(
    adjacency: Adjacency,
    weights: np.ndarray,
    is_feature: np.ndarray,
    is_error: np.ndarray,
    always_keep: np.ndarray,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    max_iter: int = 1000,
) -> PruneMasks:
    """SPEC §4 pruning on bare arrays: weights [N], is_feature / is_error / always_keep [N] bool."""
    for name, t in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {t}")
    csr = as_csr(adjacency)
    n = csr.shape[0]
    w = np.asarray(weights, dtype=np.float64)
    rows = row_of_entries(csr)  # [nnz] target of each edge
    cols = csr.indices.astype(np.int64)  # [nnz] source of each edge

    def normalised(data: np.ndarray) -> sp.csr_array:
        # Â over the same pattern; entries zeroed by pruning stay as explicit zeros (harmless).
        return sp.csr_array(
            (_row_normalise_data(data, rows, n), csr.indices, csr.indptr), shape=(n, n)
        )

    # 1. Node scores on the full graph; logits score their own weight.
    score = influence(normalised(csr.data), w, max_iter=max_iter) + w
    node_mask = score >= find_threshold(score, node_threshold)
    node_mask |= always_keep  # logits and embeddings always stay

    # 2. Edge scores on the node-pruned graph: Â renormalised there, scores recomputed.
    alive = node_mask[rows] & node_mask[cols]
    ahat2 = normalised(np.where(alive, csr.data, 0.0))
    score2 = influence(ahat2, w, max_iter=max_iter) + w
    edge_score = ahat2.data * score2[rows]  # Â'[t, s] x score'(t); logits: their weight
    edge_keep = (edge_score >= find_threshold(edge_score, edge_threshold)) & alive

    # 3. Drop feature/error nodes with no kept outgoing edge and features with no kept incoming
    # edge; each drop can strand others, so repeat (about n_layers rounds at most).
    prunable_out = is_feature | is_error  # errors have no inputs, so only the outgoing rule
    while True:
        has_out = np.bincount(cols[edge_keep], minlength=n) > 0
        has_in = np.bincount(rows[edge_keep], minlength=n) > 0
        new_mask = node_mask & ~(prunable_out & ~has_out) & ~(is_feature & ~has_in)
        edge_keep &= new_mask[rows] & new_mask[cols]
        if np.array_equal(new_mask, node_mask):
            break
        node_mask = new_mask

    return PruneMasks(csr, node_mask, edge_keep, score, cumulative_share(score))


@dataclass
class PruneResult:
    """Outcome of `prune(graph)`.

    node_mask [N] bool and edge_mask (CSR bool [N, N], the pattern of the canonical adjacency:
    nonzeros of A, explicit False where an edge is dropped) index the *original* graph;
    node_influence [N] = wᵀB + w on the unpruned graph; cumulative_influence [N] is the JSON
    `influence`; graph is the pruned Graph (kept nodes in original order, kept edges only).
    """

    node_mask: np.ndarray
    edge_mask: sp.csr_array
    node_influence: np.ndarray
    cumulative_influence: np.ndarray
    graph: Graph
    node_threshold: float
    edge_threshold: float

    @property
    def kept_nodes(self) -> np.ndarray:
        """Original indices of the kept nodes [n_kept], ascending (= rows of `graph`)."""
        return np.flatnonzero(self.node_mask)

    @property
    def n_edges(self) -> int:
        return int(self.edge_mask.data.sum())


def prune(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> PruneResult:
    """Prune `graph` per SPEC §4 (defaults 0.8 / 0.98) and re-index it to the kept nodes."""
    kind = graph.nodes["kind"].to_numpy()
    masks = prune_masks(
        graph.adjacency,
        graph.logit_weights(),
        is_feature=kind == "feature",
        is_error=kind == "error",
        always_keep=(kind == "logit") | (kind == "embedding"),
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
    )
    csr = masks.csr
    edge_mask = sp.csr_array(
        (masks.edge_keep, csr.indices.copy(), csr.indptr.copy()), shape=csr.shape
    )
    kept = np.flatnonzero(masks.node_mask)
    # Kept edges only, with the original float weights, restricted to kept rows/columns.
    # (eliminate_zeros works in place on indices/indptr, so it must not share edge_mask's arrays.)
    kept_edges = sp.csr_array(
        (np.where(masks.edge_keep, csr.data, 0.0), csr.indices.copy(), csr.indptr.copy()),
        shape=csr.shape,
    )
    kept_edges.eliminate_zeros()
    sub = kept_edges[kept][:, kept]
    pruned = graph.subgraph(kept, sub)
    return PruneResult(
        node_mask=masks.node_mask,
        edge_mask=edge_mask,
        node_influence=masks.node_influence,
        cumulative_influence=masks.cumulative_influence,
        graph=pruned,
        node_threshold=float(node_threshold),
        edge_threshold=float(edge_threshold),
    )
