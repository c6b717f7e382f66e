"""Strongest paths through a graph: the chain of nodes that carries most of a source's effect."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .influence import normalize


def strongest_path(graph, source: str | int, target: str | int, *, positive_only: bool = True) -> list[int]:
    """Node indices of the path source -> ... -> target maximising the product of normalised edge
    weights Â[t, s] (each step's share of its target's input), by dynamic programming over the DAG.
    With `positive_only`, only edges with A[t, s] > 0 (excitatory) are followed. [] if none exists."""
    src = graph.index_of(source) if isinstance(source, str) else int(source)
    dst = graph.index_of(target) if isinstance(target, str) else int(target)
    a = sp.csr_array(graph.adjacency) if not sp.issparse(graph.adjacency) else graph.adjacency
    a_hat = sp.csr_array(normalize(a))
    sign_ok = (a > 0) if positive_only else (a != 0)
    a_hat = sp.csr_array(a_hat.multiply(sign_ok))
    n = graph.n_nodes
    # Topological order: embeddings, then features/errors by layer, then logits (edges go upward).
    layer = graph.nodes["layer"].to_numpy()
    order = np.lexsort((graph.nodes["pos"].to_numpy(), layer))
    best = np.full(n, -np.inf)  # best log-product from src
    prev = np.full(n, -1)
    best[src] = 0.0
    a_csc = a_hat.tocsc()
    for s in order:
        if not np.isfinite(best[s]):
            continue
        col = a_csc[:, [s]]
        targets, weights = col.nonzero()[0], col.data
        for t, w in zip(targets, weights):
            score = best[s] + np.log(w)
            if score > best[t]:
                best[t], prev[t] = score, s
    if not np.isfinite(best[dst]):
        return []
    path = [dst]
    while path[-1] != src:
        path.append(int(prev[path[-1]]))
    return path[::-1]
