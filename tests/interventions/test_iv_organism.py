"""The README's intervention examples on the embedded organism do something visible: the edit is
picked from the graph (the feature with the strongest edge into the answer), not by hand."""

from __future__ import annotations

import pytest

import circuit_trace as ct
from circuit_trace.organisms.labels import names_state

PROMPT = "Fact: the capital of the state containing Dallas is"


@pytest.fixture(scope="module")
def organism():
    model = ct.load()
    return model, ct.attribute(model, PROMPT, progress=False)


def test_readme_single_feature_example_changes_the_answer(organism):
    model, graph = organism
    top = ct.strongest_inputs(graph)  # the feature with the strongest edge into the answer
    res = ct.intervene(model, PROMPT, top.edits("scale", -1.0, graph))
    assert res.top_before[0].token == " Austin" and res.top_before[0].prob > 0.98  # the README: 0.99999
    assert res.top_changed, str(res)
    assert float(res.probs_after[res.top_before[0].token_id]) < 0.5
    fig = res.figure(graph, [top])
    assert [str(t.name).startswith("supernode") for t in fig.data].count(True) == 1
    gen = ct.generate(model, PROMPT, top.edits("scale", -1.0, graph), max_new_tokens=5)
    assert gen.unedited is not None and gen.unedited.text.startswith(" Austin")
    assert gen.changed and not gen.text.startswith(" Austin"), str(gen)


def test_organism_generation_stops_at_its_context(organism):
    model, _ = organism
    n_ctx = model.adapter.n_ctx
    with pytest.warns(UserWarning, match=f"context limit of {n_ctx}"):
        res = ct.generate(model, PROMPT, [], max_new_tokens=n_ctx + 10, stop_at_eos=False)
    assert len(res.input_ids) + len(res.token_ids) == n_ctx and res.stop_reason == "context_limit"


def state_supernode(graph, state: str) -> ct.Supernode:
    f = ct.prune(graph).graph.feature_nodes()
    return ct.Supernode(state, tuple(f["node_id"][[names_state(lab, state) for lab in f["label"]]]))


@pytest.mark.parametrize("city", ["Oakland", "San Diego"])  # San Diego: two tokens, the prompt one longer
def test_label_swap_with_the_other_graph_makes_its_capital_win(organism, city):
    """The README's swap by label: the Texas-labelled features of the pruned Dallas graph off, the
    California-labelled ones of the other city's graph on, each where it was there."""
    model, graph = organism
    other = ct.attribute(model, PROMPT.replace("Dallas", city), progress=False)
    down, up = state_supernode(graph, "Texas"), state_supernode(other, "California")
    edits = ct.swap(down, up, graph=graph, up_graph=other)
    assert {e.positions for e in edits if e.value != 0} <= {
        (p + graph.n_pos - other.n_pos,) for *_, p in up.features(other)
    }
    res = ct.intervene(model, PROMPT, edits)
    assert res.top_before[0].token == " Austin" and res.top_after[0].token == " Sacramento", str(res)
