"""The README's intervention examples on the embedded organism do something visible: the edit is
picked from the graph (the feature with the strongest edge into the answer), not by hand."""

from __future__ import annotations

import pytest

import circuit_trace as ct

PROMPT = "Fact: the capital of the state containing Dallas is"


@pytest.fixture(scope="module")
def organism():
    model = ct.load()
    return model, ct.attribute(model, PROMPT, progress=False)


def test_readme_single_feature_example_changes_the_answer(organism):
    model, graph = organism
    top = ct.strongest_inputs(graph)  # the feature with the strongest edge into the answer
    res = ct.intervene(model, PROMPT, top.edits("scale", -4.0, graph))
    assert res.top_before[0].token == " Austin" and res.top_before[0].prob > 0.75  # the README: 0.775
    assert res.top_changed, str(res)
    assert float(res.probs_after[res.top_before[0].token_id]) < 0.5
    fig = res.figure(graph, [top])
    assert [str(t.name).startswith("supernode") for t in fig.data].count(True) == 1
    gen = ct.generate(model, PROMPT, top.edits("scale", -4.0, graph), max_new_tokens=5)
    assert gen.unedited is not None and gen.unedited.text.startswith(" Austin")
    assert gen.changed and not gen.text.startswith(" Austin"), str(gen)


def test_organism_generation_stops_at_its_context(organism):
    model, _ = organism
    n_ctx = model.adapter.n_ctx
    with pytest.warns(UserWarning, match=f"context limit of {n_ctx}"):
        res = ct.generate(model, PROMPT, [], max_new_tokens=n_ctx + 10, stop_at_eos=False)
    assert len(res.input_ids) + len(res.token_ids) == n_ctx and res.stop_reason == "context_limit"
