"""Node and edge pruning by logit influence (SPEC §4), entirely on the sparse pattern of A.

Every edge-level array here is aligned with the stored entries of `as_csr(adjacency)` (length nnz),
so a 100k-node graph never needs an N x N array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from ..arguments import check_number, check_type
from .defaults import EDGE_THRESHOLD, NODE_THRESHOLD
from .influence import (
    Adjacency,
    as_csr,
    indptr_from_rows,
    influence,
    normalized_csr,
    row_normalise_data,
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
    return _threshold_with_zeros(scores, 0, threshold)


def _find_threshold_full(scores: np.ndarray, threshold: float) -> float:
    """Reference implementation: sorts every score (used for negative / NaN scores)."""
    if scores.size == 0:
        return 0.0
    ordered = np.sort(scores)[::-1]  # [n] descending
    total = ordered.sum()
    if not total > 0:
        return 0.0
    cumulative = np.cumsum(ordered) / total
    idx = int(np.searchsorted(cumulative, threshold, side="left"))
    return float(ordered[min(idx, ordered.size - 1)])  # idx == n only by rounding at 1.0


def _threshold_with_zeros(values: np.ndarray, n_zeros: int, threshold: float) -> float:
    """`find_threshold(concat(values, zeros(n_zeros)))`, bit for bit, sorting only the nonzeros.

    Edge scores after node pruning are zero on all but a few percent of the entries. Zeros sit at
    the end of the descending order and add nothing to the cumulative sum, so only the positive
    scores need sorting; the total is summed over an array laid out exactly like the reference's
    (same length, same values, same strides), so pairwise summation rounds identically.
    """
    n = values.size + n_zeros
    if n == 0:
        return 0.0
    nz = values[values != 0]
    if nz.size and not bool((nz > 0).all()):  # negative or NaN scores: the reference path
        full = np.zeros(n, dtype=np.float64)
        full[: values.size] = values
        return _find_threshold_full(full, threshold)
    k = nz.size
    asc = np.zeros(n, dtype=np.float64)
    asc[n - k :] = np.sort(nz)
    ordered = asc[::-1]  # [n] descending, as np.sort(scores)[::-1]
    total = ordered.sum()
    if not total > 0:
        return 0.0
    cumulative = np.cumsum(ordered[:k]) / total  # the rest of the reference's cumsum is flat
    idx = int(np.searchsorted(cumulative, threshold, side="left"))
    # idx == k: the threshold is not reached even at the last positive score (rounding at 1.0);
    # the reference then lands past the end and takes the smallest score.
    return float(ordered[idx] if idx < k else ordered[n - 1])


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
    node_threshold: float = NODE_THRESHOLD,
    edge_threshold: float = EDGE_THRESHOLD,
    max_iter: int = 1000,
) -> PruneMasks:
    """SPEC §4 pruning on bare arrays: weights [N], is_feature / is_error / always_keep [N] bool."""
    for name, t in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {t}")
    csr = as_csr(adjacency)
    n, nnz = csr.shape[0], csr.nnz  # pyright: ignore[reportOptionalSubscript]  # scipy stubs: shape is never None here
    w = np.asarray(weights, dtype=np.float64)
    idx_dtype = csr.indices.dtype
    rows = row_of_entries(csr, idx_dtype)  # [nnz] target of each edge
    cols = csr.indices  # [nnz] source of each edge

    # 1. Node scores on the full graph; logits score their own weight.
    ahat = normalized_csr(csr)
    score = influence(ahat, w, max_iter=max_iter) + w
    del ahat
    node_mask = score >= find_threshold(score, node_threshold)
    node_mask |= always_keep  # logits and embeddings always stay

    # 2. Edge scores on the node-pruned graph: Â renormalised there, scores recomputed. Only the
    # alive entries are kept: dropped entries would be explicit zeros, which change no row sum,
    # product or score (x + 0.0 == x), so this is bit-identical to working on the full pattern.
    alive = np.flatnonzero(node_mask[rows] & node_mask[cols])  # [n_alive] entry indices
    r2 = rows[alive]
    indptr2 = indptr_from_rows(r2, n)
    ahat2_data = row_normalise_data(csr.data[alive], indptr2)
    ahat2 = sp.csr_array((ahat2_data, cols[alive], indptr2), shape=(n, n))
    score2 = influence(ahat2, w, max_iter=max_iter) + w
    edge_score = ahat2_data * score2[r2]  # Â'[t, s] x score'(t); logits: their weight
    thr = _threshold_with_zeros(edge_score, nnz - alive.size, edge_threshold)
    kept = alive[edge_score >= thr]  # [n_kept] entry indices, ascending
    del ahat2, ahat2_data, edge_score, r2, alive

    # 3. Drop feature/error nodes with no kept outgoing edge and features with no kept incoming
    # edge; each drop can strand others, so repeat (about n_layers rounds at most).
    prunable_out = is_feature | is_error  # errors have no inputs, so only the outgoing rule
    kr, kc = rows[kept], cols[kept]
    while True:
        has_out = np.bincount(kc, minlength=n) > 0
        has_in = np.bincount(kr, minlength=n) > 0
        new_mask = node_mask & ~(prunable_out & ~has_out) & ~(is_feature & ~has_in)
        live = new_mask[kr] & new_mask[kc]
        kept, kr, kc = kept[live], kr[live], kc[live]
        if np.array_equal(new_mask, node_mask):
            break
        node_mask = new_mask
    edge_keep = np.zeros(nnz, dtype=bool)
    edge_keep[kept] = True

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

    def __repr__(self) -> str:  # the dataclass default would print every mask and array
        n_all = int(self.node_mask.shape[0])
        return (
            f"PruneResult(kept {int(self.node_mask.sum())} of {n_all} nodes and {self.n_edges} of "
            f"{int(self.edge_mask.nnz)} edges; node_threshold={self.node_threshold}, "
            f"edge_threshold={self.edge_threshold})"
        )

    @property
    def kept_nodes(self) -> np.ndarray:
        """Original indices of the kept nodes [n_kept], ascending (= rows of `graph`)."""
        return np.flatnonzero(self.node_mask)

    @property
    def n_edges(self) -> int:
        return int(self.edge_mask.data.sum())


def prune(graph: Graph, node_threshold: float = NODE_THRESHOLD, edge_threshold: float = EDGE_THRESHOLD) -> PruneResult:
    """Prune `graph` per SPEC §4 (defaults 0.8 / 0.98) and re-index it to the kept nodes."""
    from .graph import Graph  # not at the top: graph.py imports this module

    check_type(graph, Graph, "prune()", "graph", "a Graph (from ct.attribute or Graph.load)")
    check_number(node_threshold, "prune()", "node_threshold")
    check_number(edge_threshold, "prune()", "edge_threshold")
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
    # masks.csr is private to this call, so the mask may share its index arrays.
    edge_mask = sp.csr_array((masks.edge_keep, csr.indices, csr.indptr), shape=csr.shape)
    kept = np.flatnonzero(masks.node_mask)
    # Kept edges only, with the original float weights, restricted to kept rows/columns.
    kidx = np.flatnonzero(masks.edge_keep)  # ascending = row-major, like csr itself
    kindptr = indptr_from_rows(row_of_entries(csr)[kidx], csr.shape[0], csr.indptr.dtype)  # pyright: ignore[reportOptionalSubscript]  # scipy stubs: shape is never None here
    kept_edges = sp.csr_array((csr.data[kidx], csr.indices[kidx], kindptr), shape=csr.shape)
    sub = kept_edges[kept][:, kept]
    pruned = graph.subgraph(kept, sub)
    # The pruned graph carries its nodes' scores on the full graph and says it is pruned, so
    # exporters write it as it is instead of pruning it again.
    pruned.add_influence(masks.node_influence[kept], masks.cumulative_influence[kept])
    pruned.mark_pruned(node_threshold, edge_threshold)
    return PruneResult(
        node_mask=masks.node_mask,
        edge_mask=edge_mask,
        node_influence=masks.node_influence,
        cumulative_influence=masks.cumulative_influence,
        graph=pruned,
        node_threshold=float(node_threshold),
        edge_threshold=float(edge_threshold),
    )
