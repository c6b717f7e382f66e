"""Generation under edits, and the validation report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from iv_fixtures import PROMPT, graph_of, hook_count, replacement

from circuit_trace.graphs import Graph
from circuit_trace.interventions import (
    FEATURE_GOAL,
    ValidationReport,
    generate,
    scale_feature,
    validate,
)
from circuit_trace.interventions.validate import total_effects


def _greedy(rm, n):
    ids = rm.tokenize(PROMPT)
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(rm.model(input_ids=ids[None]).logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.cat([ids, ids.new_tensor([nxt])])
    return out


def test_generate_without_edits_is_plain_greedy():
    rm = replacement("llama", "plt")
    res = generate(rm, PROMPT, [], max_new_tokens=4, stop_at_eos=False)
    assert res.token_ids == _greedy(rm, 4)
    assert res.text.split() == res.tokens and res.full_text.startswith(PROMPT)


def test_generate_apply_to_prompt_vs_all():
    rm = replacement("llama", "plt")
    edits = [scale_feature(l, i, -20.0) for l in range(3) for i in range(0, 48, 3)]
    n = 4
    prompt_only = generate(rm, PROMPT, edits, max_new_tokens=n, apply_to="prompt", stop_at_eos=False)
    everywhere = generate(rm, PROMPT, edits, max_new_tokens=n, apply_to="all", stop_at_eos=False)
    # The first new token sees the same edited prompt in both modes.
    assert prompt_only.token_ids[0] == everywhere.token_ids[0]
    assert len(prompt_only.token_ids) == len(everywhere.token_ids) == n
    assert prompt_only.token_ids != _greedy(rm, n) or everywhere.token_ids != _greedy(rm, n)
    assert hook_count(rm.model) == 0


def test_generate_stops_at_context():
    rm = replacement("gpt2", "clt")
    with pytest.warns(UserWarning, match="context limit"):
        res = generate(rm, PROMPT, [], max_new_tokens=50, stop_at_eos=False)
    assert len(res.input_ids) + len(res.token_ids) == rm.adapter.n_ctx


def test_total_effects_on_a_hand_built_chain():
    # s -> m -> t with s -> t too; activations a_s = 2, a_m = 4. Per unit: m gets 0.5/unit of s,
    # t gets 0.25/unit of m and 1.0/unit of s. Removing s: m drops 2 * 0.5 = 1 -> t drops 2*1 + 1*0.25.
    nodes = pd.DataFrame(
        {
            "kind": ["feature", "feature", "feature", "logit"],
            "layer": [0, 1, 2, 4],
            "pos": [1, 1, 1, 1],
            "feature": [0, 0, 0, -1],
            "token_id": [-1, -1, -1, 5],
            "token": ["a"] * 4,
            "activation": [2.0, 4.0, 3.0, 1.0],
            "logit_prob": [0, 0, 0, 1.0],
            "target_weight": [0, 0, 0, 1.0],
            "label": [""] * 4,
        }
    )
    A = np.zeros((4, 4))
    A[1, 0] = 2 * 0.5
    A[2, 1] = 4 * 0.25
    A[2, 0] = 2 * 1.0
    A[3, 2] = 3 * 1.0
    g = Graph("p", [0, 5], ["<bos>", "a"], nodes, sp.csr_array(A), 3, "m", "t")
    tot = total_effects(g, np.array([0]))[:, 0]
    np.testing.assert_allclose(tot, [0.0, 1.0, 2.25, 2.25 * 1.0])


@pytest.mark.parametrize("family,kind", [("gpt2", "clt"), ("llama", "plt")])
def test_validation_report(family, kind, tmp_path):
    rm, graph = replacement(family, kind), graph_of(family, kind)
    rep = validate(rm, graph, n_pairs=40, seed=1, max_sources=20)
    s = rep.summary
    assert list(s["pairs"]) == ["feature->feature", "feature->logit"]
    assert 0 < s.iloc[0]["n"] <= 40 and s.iloc[1]["n"] > 0
    for col in ("spearman_direct", "spearman_total"):
        assert all(-1 <= v <= 1 for v in s[col] if not math.isnan(v))
    assert s.iloc[0]["goal"] == FEATURE_GOAL and rep.passed in (True, False)
    # Measured effects are real measurements: the direct prediction is positively correlated on
    # these models (a graph that failed to predict anything would sit near 0).
    assert s.iloc[0]["spearman_direct"] > 0.3
    assert set(rep.ablations.columns) >= {"top_before", "top_after", "kl"}
    fig = rep.figure()
    assert len(fig.data) == 2
    rep.save(tmp_path / "v.json")
    back = ValidationReport.load(tmp_path / "v.json")
    pd.testing.assert_frame_equal(back.summary, s)
    assert hook_count(rm.model) == 0
    # same seed, same sample
    assert validate(rm, graph, n_pairs=40, seed=1, max_sources=20).pairs.equals(rep.pairs)
