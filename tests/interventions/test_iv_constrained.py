"""Constrained mode measures exactly what the graph's edges say (SPEC §2-§5).

With attention, norms and every MLP output frozen, nothing between a source and a target responds
to the source except through linear paths, so removing source s moves any target t by exactly
-A[t, s] (features: pre-activation; logits: centred logit), and scaling s by c moves it by
(c - 1) A[t, s]."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from iv_fixtures import PROMPT, graph_of, replacement

from circuit_trace.interventions import (
    ablate_errors,
    intervene,
    scale_feature,
    set_feature,
)
from circuit_trace.interventions.intervene import constrained_mlp_outputs
from circuit_trace.replacement.local import LocalReplacement


def _targets(rm, lr, graph, mlp):
    """Pre-activations of every graph feature and centred logits of every logit node, frozen model."""
    fo = lr.frozen_forward(1, mlp_out=mlp, requires_grad=False)
    tc, nodes = rm.transcoders, graph.nodes
    out = np.zeros(len(nodes))
    for i in graph.feature_indices:
        r = nodes.iloc[i]
        out[i] = float(tc.pre_activations(fo.x[int(r.layer)][0, int(r.pos)], int(r.layer))[int(r.feature)])
    W = rm.adapter.unembed_weight().double()
    z = fo.z[0, 0].double()
    for i in graph.logit_indices:
        t = int(nodes.iloc[i].token_id)
        out[i] = float(z @ (W[t] - W.mean(0)))
    return out


CASES = [("gpt2", "clt", False), ("gpt2", "clt", True), ("llama", "plt", False), ("gemma2", "clt", False)]


@pytest.mark.parametrize("family,kind,skip", CASES)
def test_removal_moves_every_target_by_its_edge(family, kind, skip):
    rm, graph = replacement(family, kind, skip), graph_of(family, kind, skip)
    lr = LocalReplacement.record(rm, rm.tokenize(PROMPT))
    A = np.asarray(
        graph.adjacency.todense() if hasattr(graph.adjacency, "todense") else graph.adjacency, dtype=np.float64
    )
    clean = _targets(rm, lr, graph, lr.y)
    targets = np.concatenate([graph.feature_indices, graph.logit_indices])
    rng = np.random.default_rng(0)
    sources = rng.choice(graph.feature_indices, size=6, replace=False)
    for s in sources:
        r = graph.nodes.iloc[s]
        for factor in (0.0, -2.0):
            e = scale_feature(int(r.layer), int(r.feature), factor, [int(r.pos)])
            mlp, _ = constrained_mlp_outputs(lr, [e], frozenset(range(rm.n_layers)))
            delta = _targets(rm, lr, graph, mlp) - clean
            expected = (factor - 1.0) * A[targets, s]
            scale = max(1.0, np.abs(expected).max())
            np.testing.assert_allclose(delta[targets], expected, atol=2e-4 * scale, rtol=1e-3)


@pytest.mark.parametrize("family,kind", [("gpt2", "clt"), ("llama", "plt")])
def test_error_ablation_moves_targets_by_error_edges(family, kind):
    rm, graph = replacement(family, kind), graph_of(family, kind)
    lr = LocalReplacement.record(rm, rm.tokenize(PROMPT))
    A = np.asarray(graph.adjacency, dtype=np.float64)
    clean = _targets(rm, lr, graph, lr.y)
    for e_idx in graph.error_indices[::5]:
        r = graph.nodes.iloc[e_idx]
        mlp, _ = constrained_mlp_outputs(lr, [ablate_errors(int(r.layer), int(r.pos))], frozenset(range(rm.n_layers)))
        delta = _targets(rm, lr, graph, mlp) - clean
        t = np.concatenate([graph.feature_indices, graph.logit_indices])
        np.testing.assert_allclose(delta[t], -A[t, e_idx], atol=2e-4 * max(1, np.abs(A[t, e_idx]).max()), rtol=1e-3)


def test_constrained_logits_match_graph_edges_through_intervene():
    rm, graph = replacement("gpt2", "clt"), graph_of("gpt2", "clt")
    A = np.asarray(graph.adjacency, dtype=np.float64)
    s = graph.feature_indices[len(graph.feature_indices) // 2]
    r = graph.nodes.iloc[s]
    res = intervene(rm, PROMPT, set_feature(int(r.layer), int(r.feature), 0.0, int(r.pos)), mode="constrained")
    centred = lambda lg: lg.double() - lg.double().mean()
    d = centred(res.logits_after) - centred(res.logits_before)
    for i in graph.logit_indices:
        t = int(graph.nodes.iloc[i].token_id)
        assert float(d[t]) == pytest.approx(-A[i, s], abs=2e-4)
    assert res.features.iloc[0]["after"] == 0.0
    assert res.features.iloc[0]["before"] == pytest.approx(float(r.activation), rel=1e-5)


def test_constrained_is_linear_in_edits():
    rm = replacement("llama", "plt")
    lr = LocalReplacement.record(rm, rm.tokenize(PROMPT))
    e1, e2 = add_pair = (set_feature(0, 3, 2.0, [2]), set_feature(1, 7, -1.5, [4]))
    L = frozenset(range(rm.n_layers))
    logit = lambda m: lr.frozen_forward(1, mlp_out=m, requires_grad=False).logits[0, -1].double()
    base = logit(lr.y)
    both = logit(constrained_mlp_outputs(lr, list(add_pair), L)[0]) - base
    one = logit(constrained_mlp_outputs(lr, [e1], L)[0]) - base
    two = logit(constrained_mlp_outputs(lr, [e2], L)[0]) - base
    if rm.adapter.final_logit_softcap is None:
        torch.testing.assert_close(both - both.mean(), (one + two) - (one + two).mean(), atol=1e-4, rtol=1e-4)


def test_layer_range_limits_clt_writes():
    rm = replacement("gpt2", "clt")
    lr = LocalReplacement.record(rm, rm.tokenize(PROMPT))
    e = add_feature_edit = set_feature(0, 5, 3.0, [3])
    mlp_all, _ = constrained_mlp_outputs(lr, [e], frozenset(range(3)))
    mlp_band, _ = constrained_mlp_outputs(lr, [e], frozenset({1}))
    assert not torch.equal(mlp_all[0], lr.y[0]) and not torch.equal(mlp_all[2], lr.y[2])
    assert torch.equal(mlp_band[0], lr.y[0]) and torch.equal(mlp_band[2], lr.y[2])
    torch.testing.assert_close(mlp_band[1], mlp_all[1])
    del add_feature_edit
