"""Two-pass selection (long prompts): when the greedy row store [cap, n_src] would not fit, the
ranking keeps each row's largest entries and a second sweep recomputes the selected rows exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import cached_replacement, random_prompt
from hypothesis import given, settings
from hypothesis import strategies as st

import circuit_trace as ct
from circuit_trace.attribution import AttributionOptions, ranking


def dense(a) -> np.ndarray:
    return a.toarray() if hasattr(a, "toarray") else np.asarray(a)


def capped(rm, prompt, cap, **kw):
    return ct.attribute(rm, prompt, max_feature_nodes=cap, batch_size=7, progress=False, **kw)


@pytest.mark.parametrize("family,kind,skip", [("llama", "clt", False), ("gpt2", "plt", True), ("gemma2", "clt", True)])
def test_two_pass_with_full_top_lists_equals_one_pass(family, kind, skip):
    rm = cached_replacement(family, kind, "jumprelu", skip, seed=2)
    prompt = random_prompt(5, 7)
    n_feat = len(rm.local_context(prompt).features)
    cap = max(1, n_feat // 3)
    one = capped(rm, prompt, cap)
    # every entry kept: the same ranking
    two = capped(rm, prompt, cap, options=AttributionOptions(row_store_bytes=0, rank_top_entries=n_feat))
    assert (one.settings["stats"]["selection"], two.settings["stats"]["selection"]) == ("greedy", "two-pass")
    assert two.nodes.node_id.tolist() == one.nodes.node_id.tolist()
    A1 = dense(one.adjacency)
    np.testing.assert_allclose(dense(two.adjacency), A1, rtol=1e-5, atol=1e-6 * np.abs(A1).max())
    np.testing.assert_allclose(two.bias_terms, one.bias_terms, rtol=1e-5, atol=1e-5)
    assert two.settings["stats"]["backward_passes"] > one.settings["stats"]["backward_passes"]


def test_two_pass_short_top_lists_keeps_exact_edges():
    """With 2 entries per row the selection may differ, but every edge is still the exact one."""
    rm = cached_replacement("qwen3", "clt", "relu", False, seed=1)
    prompt = random_prompt(9, 7)
    full = ct.attribute(rm, prompt, progress=False)
    n_feat = int((full.nodes.kind == "feature").sum())
    g = capped(rm, prompt, n_feat // 2, options=AttributionOptions(row_store_bytes=0, rank_top_entries=2))
    assert int((g.nodes.kind == "feature").sum()) == n_feat // 2
    where = {nid: i for i, nid in enumerate(full.nodes.node_id)}
    idx = np.array([where[nid] for nid in g.nodes.node_id])
    Af = dense(full.adjacency)
    np.testing.assert_allclose(dense(g.adjacency), Af[np.ix_(idx, idx)], rtol=1e-5, atol=1e-6 * np.abs(Af).max())
    np.testing.assert_allclose(g.target_values, full.target_values[idx], rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(0, 6), n_cols=st.integers(6, 20), n_extra=st.integers(0, 5), seed=st.integers(0, 10_000))
def test_top_list_ranking_equals_dense_ranking(k, n_cols, n_extra, seed):
    g = torch.Generator().manual_seed(seed)
    n_src = n_cols + n_extra
    K = 3
    logit_abs = torch.rand(K, n_src, generator=g) * (torch.rand(K, n_src, generator=g) > 0.3)
    weights = torch.rand(K, generator=g)
    visited = torch.randperm(n_cols, generator=g)[:k].tolist()
    # feature rows of a DAG: row j may only read visited features listed after it
    rows = torch.randn(k, n_src, generator=g) * (torch.rand(k, n_src, generator=g) > 0.4)
    for j in range(k):
        rows[j, torch.as_tensor(visited[: j + 1], dtype=torch.long)] = 0.0
    row_sum = rows.abs().sum(1)
    dense_infl = ranking.logit_influence(logit_abs, logit_abs.sum(1), weights, rows.abs(), row_sum, visited, n_cols)
    val, idx = rows[:, :n_cols].abs().topk(n_cols, dim=1)
    top = ranking.logit_influence_top(
        logit_abs, logit_abs.sum(1), weights, idx, val / row_sum.clamp_min(1e-30)[:, None], visited, n_cols
    )
    torch.testing.assert_close(top, dense_infl, rtol=1e-5, atol=1e-6)
