"""Influence, pruning and scores of the toy graph (conftest.py), every number worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from graphs_toy import E0, E1, ERR, F0, F1, F2, L0, L1, toy_adjacency

from circuit_trace.graphs import influence, normalize, prune
from circuit_trace.graphs.prune import find_threshold

P = np.array([0, 0, 0, 0, 0, 0, 0.75, 0.25])  # logit weights

# Â = |A| with rows scaled to sum 1 (each nonzero row of |A| sums to 4):
AHAT = np.zeros((8, 8))
AHAT[F0, E1], AHAT[F0, E0] = 2 / 4, 2 / 4
AHAT[F1, E1], AHAT[F1, E0] = 3 / 4, 1 / 4
AHAT[F2, F0], AHAT[F2, F1], AHAT[F2, ERR] = 1 / 4, 1 / 4, 2 / 4
AHAT[L0, F2], AHAT[L0, F0] = 3 / 4, 1 / 4
AHAT[L1, F1], AHAT[L1, E1] = 2 / 4, 2 / 4

# Influence pᵀ(Â + Â² + …), one power at a time:
#   pᵀÂ : L0 (.75) -> F2 .75*.75 = .5625, F0 .75*.25 = .1875 ; L1 (.25) -> F1 .125, E1 .125
#   pᵀÂ²: F0 .1875 -> E1 .09375, E0 .09375 ; F1 .125 -> E1 .09375, E0 .03125 ;
#         F2 .5625 -> F0 .140625, F1 .140625, Err .28125
#   pᵀÂ³: F0 .140625 -> E1 .0703125, E0 .0703125 ; F1 .140625 -> E1 .10546875, E0 .03515625
#   pᵀÂ⁴ = 0 (embeddings and errors have no inputs)
# Sums: F0 .1875+.140625 = .328125 ; F1 .125+.140625 = .265625 ; F2 .5625 ; Err .28125 ;
#       E0 .09375+.03125+.0703125+.03515625 = .23046875 ; E1 .125+.09375+.09375+.0703125+.10546875
#       = .48828125 ; logits 0. Sources (E0 + E1 + Err) sum to 1 = Σp, as row-normalisation implies.
INFLUENCE = np.array([0.328125, 0.265625, 0.5625, 0.28125, 0.23046875, 0.48828125, 0.0, 0.0])
# Node score = influence + p (logits take their probability). Total = 3.15625 = 101/32.
SCORE = INFLUENCE + P


def test_normalised_matrix(toy_graph):
    ahat = normalize(toy_graph.adjacency)
    dense = ahat.toarray() if sp.issparse(ahat) else ahat
    np.testing.assert_array_equal(dense, AHAT)  # all entries are exact binary fractions


def test_zero_rows_stay_zero():
    a = np.zeros((3, 3))
    a[2, 0] = -5.0
    ahat = normalize(a)
    np.testing.assert_array_equal(ahat, [[0, 0, 0], [0, 0, 0], [1, 0, 0]])


def test_influence_and_node_scores(toy_graph):
    infl = influence(normalize(toy_graph.adjacency), P)
    np.testing.assert_array_equal(infl, INFLUENCE)
    np.testing.assert_array_equal(toy_graph.node_influence(), SCORE)


def test_scores(toy_graph):
    s = toy_graph.scores()
    # replacement = (E0 + E1) / (E0 + E1 + Err) = .71875 / (.71875 + .28125) = .71875 = 23/32
    assert s.replacement == pytest.approx(23 / 32, abs=1e-15)
    # completeness: only F2 has an error input, share Â[F2, Err] = .5; every other node 1.
    # (Σ score - .5 * score(F2)) / Σ score = (3.15625 - .28125) / 3.15625 = 2.875 / 3.15625 = 92/101
    assert s.completeness == pytest.approx(92 / 101, abs=1e-15)


def test_find_threshold_semantics():
    # sorted .5 .3 .2, cumulative .5 .8 1.0: threshold .6 -> first rank reaching it is .3
    assert find_threshold(np.array([0.2, 0.5, 0.3]), 0.6) == 0.3
    assert find_threshold(np.array([0.2, 0.5, 0.3]), 0.5) == 0.5  # reached exactly at rank 0
    assert find_threshold(np.array([0.2, 0.5, 0.3]), 1.0) == 0.2
    assert find_threshold(np.zeros(3), 0.8) == 0.0  # nothing to rank: keep everything


def test_cumulative_influence_is_json_influence(toy_graph):
    r = prune(toy_graph)
    # Sorted scores: L0 .75, F2 .5625, E1 .48828125, F0 .328125, Err .28125, F1 .265625, L1 .25,
    # E0 .23046875; cumulative sums .75 1.3125 1.80078125 2.12890625 2.41015625 2.67578125
    # 2.92578125 3.15625, each / 3.15625.
    total = 3.15625
    expected = np.empty(8)
    expected[[L0, F2, E1, F0, ERR, F1, L1, E0]] = (
        np.array([0.75, 1.3125, 1.80078125, 2.12890625, 2.41015625, 2.67578125, 2.92578125, 3.15625]) / total
    )
    np.testing.assert_allclose(r.cumulative_influence, expected, rtol=1e-15)
    np.testing.assert_array_equal(r.node_influence, SCORE)


def test_default_thresholds_keep_the_whole_toy_graph(toy_graph):
    # Node 0.8: cumulative shares (above) first reach .8 at F1 (2.67578125/3.15625 = .848) ->
    # keep score >= .265625: everything but L1 (.25) and E0 (.23), which are always kept.
    # Edge 0.98: edge scores Â[t,s] x score(t) sorted: L0<-F2 .5625, F2<-Err .28125,
    # F1<-E1 .19921875, L0<-F0 .1875, F0<-E1/E0 .1640625 x2, F2<-F0/F1 .140625 x2,
    # L1<-F1/E1 .125 x2, F1<-E0 .06640625; total 2.15625; .98 is first reached by the last one
    # (2.08984375/2.15625 = .969 before it) -> every edge kept.
    r = prune(toy_graph)
    assert r.node_mask.all()
    assert r.n_edges == 11
    np.testing.assert_array_equal(r.edge_mask.toarray(), toy_adjacency() != 0)


def test_prune_outcome_at_chosen_thresholds(toy_graph):
    r = prune(toy_graph, node_threshold=0.7, edge_threshold=0.6)
    # Node pruning at .7: cumulative .674 after F0, .764 after Err -> threshold = score(Err)
    # = .28125; F1 (.265625) dropped; L1 and E0 are below too but always kept.
    #
    # Edge pruning on the graph without F1 (rows/columns of F1 removed, Â renormalised):
    #   F0 <- E1 .5, E0 .5 ; F2 <- F0 1/3, Err 2/3 ; L0 <- F2 .75, F0 .25 ; L1 <- E1 1
    # Influence: pᵀÂ = F2 .5625, F0 .1875, E1 .25 ; pᵀÂ² = E1 .09375, E0 .09375, F0 .1875,
    #   Err .375 ; pᵀÂ³ = E1 .09375, E0 .09375.  F0 .375, F2 .5625, Err .375.
    # Edge scores Â'[t,s] x (score'(t)):
    #   F0<-E1 .5*.375 = .1875, F0<-E0 .1875, F2<-F0 (1/3)*.5625 = .1875, F2<-Err (2/3)*.5625
    #   = .375, L0<-F2 .75*.75 = .5625, L0<-F0 .25*.75 = .1875, L1<-E1 1*.25 = .25; F1's edges 0.
    #   Total 1.9375; sorted .5625 .375 .25 then .1875 x4: cumulative .290 .484 .613 -> the cut
    #   at .6 falls on L1<-E1, threshold .25: keep L0<-F2, F2<-Err, L1<-E1.
    # Clean-up: F0 has no kept outgoing edge -> dropped. F2 keeps in (Err) and out (L0); Err
    # keeps out (F2). E0 has no edges but embeddings always stay.
    kept = {F2, ERR, E0, E1, L0, L1}
    assert set(np.flatnonzero(r.node_mask)) == kept
    kept_edges = {(L0, F2), (F2, ERR), (L1, E1)}
    em = r.edge_mask.toarray()
    assert set(zip(*np.nonzero(em))) == kept_edges
    # The edge mask has exactly the pattern of A (explicit False where dropped).
    assert r.edge_mask.nnz == 11

    g = r.graph
    assert g.n_nodes == 6
    assert list(g.nodes["node_id"]) == ["1_3_1", "0_-1_1", "E_1_0", "E_42_1", "3_11_1", "3_22_1"]
    assert g.is_sparse == toy_graph.is_sparse
    a = g.adjacency.toarray() if g.is_sparse else g.adjacency
    expected = np.zeros((6, 6), dtype=np.float32)
    expected[4, 0] = 3.0  # L0 <- F2
    expected[0, 1] = 2.0  # F2 <- Err
    expected[5, 3] = 2.0  # L1 <- E1
    np.testing.assert_array_equal(a, expected)
    np.testing.assert_array_equal(g.bias_terms, toy_graph.bias_terms[sorted(kept)])


def test_node_pruned_graph_keeps_all_remaining_edges_at_edge_threshold_098(toy_graph):
    # Same node pruning (F1 gone). Edge scores as above, total 1.9375; .98 is first reached by
    # the last .1875 (1.75/1.9375 = .903 before) -> threshold .1875 keeps all 7 live edges, none
    # of F1's (score 0). No node loses its last edge, so only F1 is gone.
    r = prune(toy_graph, node_threshold=0.7, edge_threshold=0.98)
    assert set(np.flatnonzero(~r.node_mask)) == {F1}
    assert r.n_edges == 7


def test_dense_and_sparse_prune_identically():
    from graphs_toy import make_toy_graph

    for thresholds in [(0.8, 0.98), (0.7, 0.6), (0.5, 0.5), (0.0, 0.0), (1.0, 1.0)]:
        rd = prune(make_toy_graph(sparse=False), *thresholds)
        rs = prune(make_toy_graph(sparse=True), *thresholds)
        np.testing.assert_array_equal(rd.node_mask, rs.node_mask)
        np.testing.assert_array_equal(rd.edge_mask.toarray(), rs.edge_mask.toarray())
        np.testing.assert_array_equal(rd.cumulative_influence, rs.cumulative_influence)
        assert rd.graph.equals(rs.graph) is False  # storage differs ...
        np.testing.assert_array_equal(rd.graph.adjacency, rs.graph.adjacency.toarray())  # ... values not


def test_thresholds_out_of_range(toy_graph):
    with pytest.raises(ValueError):
        prune(toy_graph, node_threshold=1.5)
    with pytest.raises(ValueError):
        prune(toy_graph, edge_threshold=-0.1)


def test_node_name_names_every_kind(toy_graph):
    from circuit_trace.graphs import node_name

    assert [node_name(toy_graph, i) for i in (F0, F1, ERR, E1, L0)] == [
        "feature L0#5 at '' \"cat-ish\"",
        "feature L0#7 at ''",
        "error L0 pos 1",
        "token ' cat' (pos 1)",
        "logit ' dog' (p=0.750)",
    ]
    toy_graph.nodes.loc[L0, "logit_prob"] = 0.99976  # near 1: not rounded up to "1.000"
    assert node_name(toy_graph, L0) == "logit ' dog' (p=0.99976)"
