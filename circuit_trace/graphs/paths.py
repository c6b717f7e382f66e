"""Strongest paths through a graph: the chain of nodes that carries most of a source's effect.

A path's strength is the product of its normalised edge weights Â[t, s] (each step's share of its
target's input), found by dynamic programming over the DAG in layer order."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp

from ..arguments import check_type
from .influence import normalize

__all__ = ["format_prob", "node_name", "strongest_path"]

# One-line names of the non-feature nodes, filled from their node-table row (logits: `node_name`).
_NAME_FORMATS = {
    "embedding": "token {token!r} (pos {pos})",
    "error": "error L{layer} pos {pos}",
}


def format_prob(p: float) -> str:
    """0.998 -> '0.998'; tiny but nonzero -> scientific ('3.2e-05'), never '0.000'; exactly 0 -> '0'."""
    p = float(p)
    if p == 0.0 or not math.isfinite(p):
        return "0" if p == 0.0 else str(p)
    if p < 1e-3:
        return f"{p:.1e}"
    if p > 0.999 and p < 1.0:
        return f"{p:.5f}".rstrip("0")  # 0.99962 stays distinguishable from 1
    return f"{p:.3f}"


def _step_matrix(graph, positive_only: bool) -> sp.csc_array:
    a = graph.adjacency if sp.issparse(graph.adjacency) else sp.csr_array(graph.adjacency)
    a_hat = sp.csr_array(normalize(a))
    keep = (a > 0) if positive_only else (a != 0)
    return sp.csc_array(a_hat.multiply(keep))


def _topological(graph) -> np.ndarray:
    # Edges always go to a strictly higher layer: embeddings (-1) < features/errors < logits (L).
    return np.lexsort((graph.nodes["pos"].to_numpy(), graph.nodes["layer"].to_numpy()))


def _best_from(steps: sp.csc_array, order: np.ndarray, src: int) -> tuple[np.ndarray, np.ndarray]:
    """Best log-strength from `src` to every node, and each node's predecessor on that path."""
    best, prev = np.full(steps.shape[0], -np.inf), np.full(steps.shape[0], -1)  # pyright: ignore[reportOptionalSubscript]  # scipy stubs: shape is never None here
    best[src] = 0.0
    for s in order:
        if np.isfinite(best[s]):
            lo, hi = steps.indptr[s], steps.indptr[s + 1]
            for t, w in zip(steps.indices[lo:hi], steps.data[lo:hi]):
                if best[s] + np.log(w) > best[t]:
                    best[t], prev[t] = best[s] + np.log(w), s
    return best, prev


def _trace(prev: np.ndarray, src: int, node: int) -> list[int]:
    path = [node]
    while path[-1] != src:
        path.append(int(prev[path[-1]]))
    return path[::-1]


def strongest_path(
    graph, source: str | int, target: str | int, *, via: Iterable[int] | None = None, positive_only: bool = True
) -> list[int]:
    """Node indices of the strongest path source -> ... -> target; with `via`, the strongest one that
    passes through at least one of those nodes. With `positive_only`, only excitatory edges
    (A[t, s] > 0) are followed. [] when there is no such path."""
    from .graph import Graph

    check_type(graph, Graph, "strongest_path()", "graph", "a Graph")
    src = graph.index_of(source) if isinstance(source, str) else int(source)
    dst = graph.index_of(target) if isinstance(target, str) else int(target)
    steps, order = _step_matrix(graph, positive_only), _topological(graph)
    fwd, prev = _best_from(steps, order, src)
    if via is None:
        return _trace(prev, src, dst) if np.isfinite(fwd[dst]) else []
    # best path into each via node, then the best path from it to dst (DP on the reversed graph)
    bwd, nxt = _best_from(sp.csc_array(steps.T), order[::-1], dst)
    via = [int(v) for v in via if np.isfinite(fwd[int(v)]) and np.isfinite(bwd[int(v)])]
    if not via:
        return []
    v = max(via, key=lambda k: fwd[k] + bwd[k])
    return _trace(prev, src, v) + _trace(nxt, dst, v)[::-1][1:]


def node_name(graph, i: int) -> str:
    """A one-line human name of node `i` of `graph`, e.g. `feature L3#17 at ' Dallas' "Texas"` or
    `logit ' Austin' (p=0.412)` (probabilities by `format_prob`); for printing paths (`strongest_path`) and reports."""
    row = graph.nodes.iloc[i]
    if row["kind"] == "logit":
        return f"logit {row['token']!r} (p={format_prob(row['logit_prob'])})"
    if row["kind"] != "feature":
        return _NAME_FORMATS[row["kind"]].format(**row)
    label = f' "{row["label"]}"' if row["label"] else ""
    return f"feature L{row['layer']}#{row['feature']} at {row['token']!r}{label}"
