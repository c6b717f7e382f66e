"""Replacement and completeness scores of an (unpruned) graph, SPEC §4."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .influence import Adjacency, as_csr, influence, normalized_csr, row_of_entries

__all__ = ["GraphScores", "graph_scores"]


@dataclass(frozen=True)
class GraphScores:
    """replacement: share of the logits' influence that starts at embeddings rather than errors.
    completeness: influence-weighted mean of the non-error share of each node's normalised input.
    Both are 1.0 for a graph whose error nodes have no edges."""

    replacement: float
    completeness: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def graph_scores(
    adjacency: Adjacency,
    weights: np.ndarray,
    is_embedding: np.ndarray,
    is_error: np.ndarray,
    max_iter: int = 1000,
) -> GraphScores:
    """Scores from bare arrays: adjacency [N, N] (rows targets), weights [N], masks [N] bool."""
    csr = as_csr(adjacency)
    n = csr.shape[0]  # pyright: ignore[reportOptionalSubscript]  # scipy stubs: shape is never None here
    rows = row_of_entries(csr)
    ahat = normalized_csr(csr)
    del csr  # ahat shares its index arrays; the float64 copy of A is no longer needed
    w = np.asarray(weights, dtype=np.float64)
    infl = influence(ahat, w, max_iter=max_iter)  # wᵀB [N]

    emb = float(infl[is_embedding].sum())
    err = float(infl[is_error].sum())
    replacement = emb / (emb + err) if emb + err > 0 else float("nan")

    # Error share of each row of Â [N]: the part of a node's input that the transcoder missed.
    error_share = np.bincount(rows, weights=ahat.data * is_error[ahat.indices], minlength=n)
    out_weight = infl + w  # logits weigh their own probability
    total = out_weight.sum()
    completeness = float(((1.0 - error_share) * out_weight).sum() / total) if total > 0 else float("nan")
    return GraphScores(replacement=replacement, completeness=completeness)
