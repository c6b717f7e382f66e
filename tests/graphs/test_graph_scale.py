"""A 100k-node sparse graph prunes and scores without any N x N allocation.

Speed is a benchmark figure (benchmarks/bench_prune_scale.py), not asserted here."""

from __future__ import annotations

import tracemalloc

import numpy as np

from circuit_trace.graphs import random_graph


def test_100k_node_graph_prunes_sparse():
    n_layers, n_pos = 10, 40
    n_other = n_layers * (n_pos - 1) + n_pos + 3  # errors + embeddings + logits
    g = random_graph(n_layers, n_pos, 100_000 - n_other, seed=0, sparse=True)
    n = g.n_nodes
    assert n == 100_000 and g.is_sparse

    tracemalloc.start()
    r = g.prune()
    scores = g.scores()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    dense_bytes = n * n * 4  # 40 GB for a float32 N x N
    assert peak < dense_bytes / 100, f"peak {peak / 1e6:.0f} MB"
    assert peak < 400e6
    assert r.node_mask[g.logit_indices].all() and r.node_mask[g.embedding_indices].all()
    assert 0 < r.node_mask.sum() < n
    assert r.graph.is_sparse and r.graph.n_nodes == int(r.node_mask.sum())
    assert 0.0 < scores.replacement <= 1.0 and 0.0 < scores.completeness <= 1.0
    assert np.isclose(r.cumulative_influence.max(), 1.0)
