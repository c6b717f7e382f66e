"""Property tests: power series vs matrix inverse, dense vs sparse, Cantor pairing, cycles."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from circuit_trace.graphs import (
    InfluenceDidNotConvergeError,
    cantor_pair,
    cantor_unpair,
    influence,
    node_scores,
    normalize,
    random_graph,
)
from circuit_trace.graphs.prune import prune_masks


@st.composite
def random_dag(draw):
    """Strictly lower-triangular A (so a DAG), a random sparsity pattern and logit weights."""
    n = draw(st.integers(2, 25))
    seed = draw(st.integers(0, 2**31 - 1))
    density = draw(st.floats(0.05, 0.9))
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n)) * (rng.random((n, n)) < density)
    a = np.tril(a, k=-1)
    w = np.zeros(n)
    k = draw(st.integers(1, min(3, n)))
    w[-k:] = rng.dirichlet(np.ones(k))  # the last k nodes act as logits
    return a, w


@settings(max_examples=60, deadline=None)
@given(random_dag())
def test_power_series_equals_inverse(dag):
    a, w = dag
    ahat = normalize(a)
    n = a.shape[0]
    expected = w @ (np.linalg.inv(np.eye(n) - ahat) - np.eye(n))  # B = (I - Â)⁻¹ - I
    np.testing.assert_allclose(influence(ahat, w), expected, rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(random_dag())
def test_dense_and_sparse_agree(dag):
    a, w = dag
    np.testing.assert_allclose(normalize(sp.csr_array(a)).toarray(), normalize(a), rtol=1e-15, atol=0)
    np.testing.assert_allclose(node_scores(sp.csr_array(a), w), node_scores(a, w), rtol=1e-12, atol=1e-15)
    n = a.shape[0]
    is_logit = w > 0
    kinds = dict(is_feature=~is_logit, is_error=np.zeros(n, bool), always_keep=is_logit)
    md = prune_masks(a, w, **kinds, node_threshold=0.6, edge_threshold=0.9)
    ms = prune_masks(sp.csr_array(a), w, **kinds, node_threshold=0.6, edge_threshold=0.9)
    np.testing.assert_array_equal(md.node_mask, ms.node_mask)
    np.testing.assert_array_equal(md.edge_keep, ms.edge_keep)


@given(st.integers(0, 10_000), st.integers(0, 10**12))
def test_cantor_round_trip(layer, index):
    z = cantor_pair(layer, index)
    assert cantor_unpair(z) == (layer, index)


@given(st.integers(0, 10**15))
def test_cantor_unpair_is_inverse(z):
    assert cantor_pair(*cantor_unpair(z)) == z


def test_cantor_known_values():
    # (l + i)(l + i + 1) / 2 + i
    assert cantor_pair(0, 0) == 0
    assert cantor_pair(1, 0) == 1
    assert cantor_pair(0, 1) == 2
    assert cantor_pair(3, 253) == 256 * 257 // 2 + 253


def test_cycle_is_an_error():
    a = np.array([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(InfluenceDidNotConvergeError):
        influence(normalize(a), np.array([1.0, 0.0]), max_iter=50)


def test_non_finite_adjacency_is_rejected():
    with pytest.raises(ValueError):
        normalize(np.array([[0.0, np.nan], [0.0, 0.0]]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_graph_prunes_identically_dense_and_sparse(seed):
    gd = random_graph(3, 6, 80, seed=seed)
    gs = random_graph(3, 6, 80, seed=seed, sparse=True)
    rd, rs = gd.prune(), gs.prune()
    np.testing.assert_array_equal(rd.node_mask, rs.node_mask)
    np.testing.assert_array_equal(rd.edge_mask.toarray(), rs.edge_mask.toarray())
    np.testing.assert_array_equal(rd.graph.adjacency, rs.graph.adjacency.toarray())
    assert gd.scores() == gs.scores()


@pytest.mark.parametrize("seed", [0, 1])
def test_random_graph_is_a_valid_graph(seed):
    g = random_graph(4, 7, 150, seed=seed)
    kinds = g.kinds
    # contract order: features, errors, embeddings, logits
    order = {"feature": 0, "error": 1, "embedding": 2, "logit": 3}
    assert list(np.array([order[k] for k in kinds])) == sorted(order[k] for k in kinds)
    feats = g.feature_nodes()
    assert list(zip(feats.layer, feats.pos, feats.feature)) == sorted(zip(feats.layer, feats.pos, feats.feature))
    assert (feats.pos >= 1).all()  # BOS has no features
    assert len(g.error_nodes()) == 4 * 6
    assert g.nodes["node_id"].is_unique
    probs = g.logit_nodes()["logit_prob"].to_numpy()
    assert (np.diff(probs) <= 0).all()
    # h_t = Σ_s A[t, s] + bias_t for features and logits
    t = (kinds == "feature") | (kinds == "logit")
    np.testing.assert_allclose(g.adjacency.sum(axis=1)[t] + g.bias_terms[t], g.target_values[t], rtol=1e-5, atol=1e-5)
    # DAG: sources at strictly lower layers and no later positions; no inputs to errors/embeddings
    tgt, src = np.nonzero(g.adjacency)
    assert (g.nodes.layer.to_numpy()[src] < g.nodes.layer.to_numpy()[tgt]).all()
    assert (g.nodes.pos.to_numpy()[src] <= g.nodes.pos.to_numpy()[tgt]).all()
    assert set(kinds[tgt]) <= {"feature", "logit"}
