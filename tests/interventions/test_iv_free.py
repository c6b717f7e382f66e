"""Free mode: edits through decoder vectors in the real model, everything downstream recomputed."""

from __future__ import annotations

import pytest
import torch
from iv_fixtures import PROMPT, graph_of, hook_count, replacement

from circuit_trace.interventions import (
    InterventionResult,
    ablate_errors,
    add_feature,
    format_result,
    intervene,
    scale_feature,
    set_feature,
)


def _clean_logits(rm):
    with torch.no_grad():
        return rm.model(input_ids=rm.tokenize(PROMPT)[None]).logits[0, -1]


def _mlp_outputs(rm, fn):
    """Run fn() and return the MLP outputs [L, P, d] it produced."""
    outs = {}
    hs = []
    for l in range(rm.n_layers):
        mod, _, _ = rm.adapter.hook_module(rm.transcoders.feature_output_hook, l)
        hs.append(mod.register_forward_hook(lambda _m, _a, o, l=l: outs.__setitem__(l, o[0].detach().clone())))
    try:
        fn()
    finally:
        for h in hs:
            h.remove()
    return torch.stack([outs[l] for l in range(rm.n_layers)])


def test_noop_edits_leave_logits_unchanged(setup):
    rm, graph = setup
    r = graph.nodes.iloc[graph.feature_indices[3]]
    clean = _clean_logits(rm)
    for e in (
        set_feature(int(r.layer), int(r.feature), float(r.activation), int(r.pos)),
        scale_feature(int(r.layer), int(r.feature), 1.0),
        add_feature(int(r.layer), int(r.feature), 0.0),
    ):
        res = intervene(rm, PROMPT, e)
        torch.testing.assert_close(res.logits_after, clean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(res.logits_before, clean)
        assert res.kl == pytest.approx(0.0, abs=1e-8)


def test_set_shifts_source_layer_output_by_decoder_delta():
    rm, graph = replacement("gpt2", "clt"), graph_of("gpt2", "clt")
    feats = graph.nodes.iloc[graph.feature_indices]
    r = feats[feats.layer == 1].iloc[0]
    layer, idx, pos = int(r.layer), int(r.feature), int(r.pos)
    ids = rm.tokenize(PROMPT)[None]
    clean = _mlp_outputs(rm, lambda: rm.model(input_ids=ids))
    from circuit_trace.interventions.intervene import FreeEdits

    runner = FreeEdits(rm, [set_feature(layer, idx, 5.0, pos)], frozenset(range(3)), None)
    with runner.installed():
        edited = _mlp_outputs(rm, lambda: rm.model(input_ids=ids))
    dec = rm.transcoders.decoder_vectors(layer, [idx])[0, 0]
    expected = clean[layer].clone()
    expected[pos] += (5.0 - float(r.activation)) * dec
    torch.testing.assert_close(edited[layer], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(edited[0], clean[0])  # upstream untouched
    assert not torch.allclose(edited[2], clean[2])  # downstream recomputed (CLT write + live MLP)


def test_result_fields_and_kl():
    rm, graph = replacement("llama", "plt"), graph_of("llama", "plt")
    top = graph.nodes.iloc[graph.feature_indices].sort_values("activation").iloc[-1]
    res = intervene(rm, PROMPT, scale_feature(int(top.layer), int(top.feature), -2.0), top_k=4)
    assert len(res.top_before) == len(res.top_after) == 4
    assert res.top_before[0].prob >= res.top_before[1].prob
    p, q = res.probs_before, res.probs_after
    assert res.kl == pytest.approx(float((p * (p.log() - q.log())).sum()), rel=1e-6, abs=1e-12)
    row = res.features[res.features.pos == int(top.pos)].iloc[0]
    assert row.after == pytest.approx(-2.0 * row.before)
    # scale with positions=None acts on every position after BOS
    assert set(res.features.pos) == set(range(1, len(res.input_ids)))
    assert "KL" in format_result(res)


def test_error_ablation_everywhere_is_the_replacement_model(setup):
    rm, _ = setup
    ids = rm.tokenize(PROMPT)
    res = intervene(rm, PROMPT, ablate_errors(positions=range(len(ids))))
    with torch.no_grad(), rm.replaced():
        replaced = rm.model(input_ids=ids[None]).logits[0, -1]
    torch.testing.assert_close(res.logits_after, replaced.float(), atol=1e-4, rtol=1e-4)


def test_save_load_roundtrip(tmp_path):
    rm = replacement("gpt2", "clt")
    res = intervene(rm, PROMPT, [scale_feature(1, 2, -2.0, [2, 3])])
    res.save(tmp_path / "r")
    back = InterventionResult.load(tmp_path / "r")
    torch.testing.assert_close(back.logits_after, res.logits_after)
    assert back.top_after == res.top_after and back.kl == res.kl
    assert back.features.equals(res.features)


def test_model_unchanged_after_calls(setup):
    rm, _ = setup
    before = hook_count(rm.model)
    clean = _clean_logits(rm)
    intervene(rm, PROMPT, [scale_feature(0, 1, -2.0), ablate_errors(layers=[1])])
    intervene(rm, PROMPT, [scale_feature(0, 1, -2.0), ablate_errors(layers=[1])], mode="constrained")
    assert hook_count(rm.model) == before == 0
    assert torch.equal(_clean_logits(rm), clean)
    assert rm.model.config._attn_implementation == "eager"
