"""What the feature cap drops: `stats["n_features_left_out"]` and `stats["left_out_influence_share"]`,
the latter checked against a brute-force computation on the uncapped graph."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import cached_replacement, random_prompt

import circuit_trace as ct
from circuit_trace.attribution import AttributionOptions


def dense(a) -> np.ndarray:
    return a.toarray() if hasattr(a, "toarray") else np.asarray(a)


def brute_force_share(full: ct.Graph, capped: ct.Graph) -> float:
    """On the uncapped graph: Â = |A| / row |.|_1; mass w starts on the logits and moves back through
    the capped graph's features only (a linear solve, not a power series); the share is the mass
    that reaches a feature the capped graph left out, over Σ w."""
    A = np.abs(dense(full.adjacency).astype(np.float64))
    kinds = full.nodes.kind.to_numpy()
    kept_ids = set(capped.nodes.node_id[capped.nodes.kind == "feature"])
    is_kept = full.nodes.node_id.isin(kept_ids).to_numpy()
    rows = np.flatnonzero((kinds == "logit") | is_kept)  # the targets whose rows the capped graph has
    left = np.flatnonzero((kinds == "feature") & ~is_kept)
    a_hat = A[rows] / np.maximum(A[rows].sum(1, keepdims=True), 1e-300)  # [R, N]
    w = full.logit_weights()[rows]  # [R]: zero on features
    arrived = np.linalg.solve(np.eye(len(rows)) - a_hat[:, rows].T, w)  # x = w + Â_RRᵀ x
    return float(arrived @ a_hat[:, left].sum(1) / w.sum())


def capped_pair(seed: int, **kw) -> tuple[ct.Graph, ct.Graph, int]:
    rm = cached_replacement("llama", "clt", "jumprelu", False, seed=seed)
    prompt = random_prompt(seed + 3, 7)
    full = ct.attribute(rm, prompt, batch_size=5, progress=False)
    n_feat = int((full.nodes.kind == "feature").sum())
    capped = ct.attribute(rm, prompt, max_feature_nodes=n_feat // 3, batch_size=5, progress=False, **kw)
    return full, capped, n_feat


@pytest.mark.parametrize(
    "options,selection",
    [
        (None, "greedy"),
        (AttributionOptions(row_store_bytes=0, rank_top_entries=3), "two-pass"),
    ],
)
def test_left_out_share_equals_brute_force(options, selection):
    full, capped, n_feat = capped_pair(2, options=options)
    stats = capped.settings["stats"]
    assert stats["selection"] == selection
    assert stats["n_features_left_out"] == n_feat - n_feat // 3 > 0
    expected = brute_force_share(full, capped)
    assert 0.0 < expected < 1.0
    assert stats["left_out_influence_share"] == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_uncapped_graph_leaves_nothing_out():
    full, _, n_feat = capped_pair(1)
    stats = full.settings["stats"]
    assert n_feat > 0 and stats["selection"] == "all"
    assert stats["n_features_left_out"] == 0
    assert stats["left_out_influence_share"] == 0.0
    assert brute_force_share(full, full) == 0.0


def test_left_out_contributions_sit_in_the_constant_terms():
    """Why the stats matter: on a capped graph the left-out features' edges are missing, so a
    kept target's constant term differs from the uncapped one by exactly those edges."""
    full, capped, _ = capped_pair(2)
    where = {nid: i for i, nid in enumerate(full.nodes.node_id)}
    idx = np.array([where[n] for n in capped.nodes.node_id])
    A = dense(full.adjacency).astype(np.float64)
    left = np.setdiff1d(full.indices("feature"), idx)
    targets = np.concatenate([capped.indices("feature"), capped.indices("logit")])
    missing = A[np.ix_(idx[targets], left)].sum(1)
    scale = 1e-5 * (1 + np.abs(A).max())
    np.testing.assert_allclose(capped.bias_terms[targets], full.bias_terms[idx[targets]] + missing, atol=scale)
    assert np.abs(missing).max() > 100 * scale  # the cap did drop something that matters
