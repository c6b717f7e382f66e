"""Bad input raises a clear error before anything is applied, and the model is never left changed."""

from __future__ import annotations

import math

import pytest
import torch
from iv_fixtures import PROMPT, graph_of, hook_count, replacement

from circuit_trace.interventions import (
    Edit,
    EditError,
    Supernode,
    ablate_errors,
    activations_from,
    generate,
    intervene,
    parse_cli_edits,
    parse_feature_id,
    scale_feature,
    set_feature,
    swap,
    swap_from,
)


def _clean(rm):
    with torch.no_grad():
        return rm.model(input_ids=rm.tokenize(PROMPT)[None]).logits[0, -1]


BAD = [
    (lambda: [set_feature(0, 48, 1.0)], "index 48 out of range"),
    (lambda: [set_feature(3, 0, 1.0)], "layer 3 out of range"),
    (lambda: [scale_feature(0, 1, 2.0, [8])], r"positions \[8\] out of range"),
    (lambda: [scale_feature(0, 1, 2.0, [1]), set_feature(1, 2, 0.0, [-1])], r"positions \[-1\]"),
    (lambda: [ablate_errors(layers=[5])], "layer 5 out of range"),
    (lambda: [ablate_errors(positions=[99])], "out of range"),
    (lambda: ["0_1"], "not an edit"),
]


@pytest.mark.parametrize("mode", ["free", "constrained"])
@pytest.mark.parametrize("make,msg", BAD)
def test_bad_edits_raise_before_applying(make, msg, mode):
    rm = replacement("gpt2", "clt")
    clean = _clean(rm)
    with pytest.raises(EditError, match=msg):
        intervene(rm, PROMPT, make(), mode=mode)
    assert hook_count(rm.model) == 0
    assert torch.equal(_clean(rm), clean)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_rejected(value):
    for make in (set_feature, scale_feature):
        with pytest.raises(EditError, match="non-finite"):
            make(0, 1, value)
    with pytest.raises(EditError, match="non-finite"):
        parse_cli_edits(["0_1=nan"], [], [])


def test_other_bad_arguments():
    rm = replacement("gpt2", "clt")
    with pytest.raises(ValueError, match="mode"):
        intervene(rm, PROMPT, [], mode="loose")
    with pytest.raises(EditError, match="layers"):
        intervene(rm, PROMPT, [], mode="constrained", layers=range(2, 6))
    with pytest.raises(EditError, match="op"):
        Edit((0, 1), "clamp", 1.0)
    with pytest.raises(EditError, match="positions"):
        generate(rm, PROMPT, [set_feature(0, 1, 1.0, [20])], max_new_tokens=2)
    with pytest.raises(ValueError, match="apply_to"):
        generate(rm, PROMPT, [], apply_to="everything")
    assert hook_count(rm.model) == 0


def test_model_restored_when_a_hook_fails(monkeypatch):
    rm = replacement("llama", "plt")
    clean = _clean(rm)

    def boom(*_a, **_k):
        raise RuntimeError("decoder read failed")

    monkeypatch.setattr(rm.transcoders, "decoder_vectors", boom)
    with pytest.raises(RuntimeError, match="decoder read failed"):
        intervene(rm, PROMPT, [set_feature(1, 2, 3.0, [2])])
    with pytest.raises(RuntimeError, match="decoder read failed"):
        generate(rm, PROMPT, [set_feature(1, 2, 3.0, [2])], max_new_tokens=2)
    monkeypatch.undo()
    assert hook_count(rm.model) == 0
    assert torch.equal(_clean(rm), clean)


# ---------------------------------------------------------------------------------- supernodes
def test_supernodes_from_qparams_validated_against_graph():
    graph = graph_of("gpt2", "clt")
    ids = graph.nodes.node_id.iloc[graph.feature_indices[:3]].tolist()
    (sn,) = Supernode.from_qparams([["group", *ids]], graph)
    assert sn.label == "group" and sn.node_ids == tuple(ids)
    assert len(sn.edits("scale", 0.0, graph)) == 3
    with pytest.raises(EditError, match=r"not in the graph.*9_9_9"):
        Supernode.from_qparams([["bad", ids[0], "9_9_9"]], graph)
    err_id = graph.nodes.node_id.iloc[graph.error_indices[0]]
    with pytest.raises(EditError, match="not features"):
        Supernode("e", (err_id,)).features(graph)
    with pytest.raises(EditError, match="label, node_id"):
        Supernode.from_qparams([["only-label"]])


def test_swap_uses_other_prompt_activations():
    rm, graph = replacement("gpt2", "clt"), graph_of("gpt2", "clt")
    other = "w2 w6 w8 w3"
    other_graph = graph_of("gpt2", "clt", prompt=other)
    down = Supernode("down", tuple(graph.nodes.node_id.iloc[graph.feature_indices[:2]]))
    up_ids = other_graph.nodes.node_id.iloc[other_graph.feature_indices[-2:]].tolist()
    up = Supernode("up", tuple(up_ids))
    acts = activations_from(rm, other, up, graph=other_graph)
    for nid in up_ids:
        r = other_graph.nodes.set_index("node_id").loc[nid]
        assert acts[(int(r.layer), int(r.feature))] == pytest.approx(float(r.activation), rel=1e-5)
    edits = swap(down, up, acts, graph=graph)
    down_pos = sorted({int(p) for p in graph.nodes.pos.iloc[graph.feature_indices[:2]]})
    assert [e.value for e in edits[:2]] == [0.0, 0.0]
    assert all(e.op == "set" and list(e.positions) == down_pos for e in edits[2:])
    res = intervene(rm, PROMPT, edits)
    assert len(res.features) == 2 + 2 * len(down_pos)
    with pytest.raises(EditError, match="no activation"):
        swap(down, up, {}, graph=graph)


def test_swap_aligned_places_each_up_feature_where_it_was():
    graph = graph_of("gpt2", "clt")
    other = "w2 w6 w8 w3"
    other_graph = graph_of("gpt2", "clt", prompt=other)
    shift = graph.n_pos - other_graph.n_pos
    feats = other_graph.feature_nodes()
    up_rows = feats[feats.pos + shift >= 1].iloc[[0, -1]]
    up = Supernode("up", tuple(up_rows.node_id))
    down = Supernode("down", tuple(graph.nodes.node_id.iloc[graph.feature_indices[:2]]))
    edits = swap(down, up, graph=graph, up_graph=other_graph, up_scale=2.0)
    placed = {(e.feature, e.positions): e.value for e in edits}
    for r in up_rows.itertuples():
        assert placed[((int(r.layer), int(r.feature)), (int(r.pos) + shift,))] == pytest.approx(2 * r.activation)
    assert sorted(placed.values())[:2] == [0.0, 0.0]
    with pytest.raises(EditError, match="neither up_activations"):
        swap(down, up, {}, graph=graph, up_graph=other_graph)
    with pytest.raises(EditError, match="give up_activations or up_graph"):
        swap(down, up, graph=graph)
    mine = graph.feature_nodes()  # the other way round: this prompt is longer, its early nodes fall off
    early = Supernode("early", (mine.node_id[mine.pos < shift].iloc[0],))
    other_down = Supernode("d", (feats.node_id.iloc[0],))
    with pytest.raises(EditError, match="before the start"):
        swap(other_down, early, graph=other_graph, up_graph=graph)


def test_swap_from_reads_the_other_prompt_and_places_as_the_graphs_do():
    """`swap_from` (no graphs: activations read in the real model) gives the edits of
    `swap(..., up_graph=)`, and refuses an up node that falls before the start."""
    rm, graph = replacement("gpt2", "clt"), graph_of("gpt2", "clt")
    other = "w2 w6 w8 w3"
    other_graph = graph_of("gpt2", "clt", prompt=other)
    shift = graph.n_pos - other_graph.n_pos
    assert shift != 0  # the alignment is exercised
    feats = other_graph.feature_nodes()
    up = Supernode("up", tuple(feats[feats.pos + shift >= 1].node_id.iloc[[0, 1, -1]]))
    down = Supernode("down", tuple(graph.nodes.node_id.iloc[graph.feature_indices[:3]]))
    by_graphs = swap(down, up, graph=graph, up_graph=other_graph, up_scale=1.5)
    by_prompts = swap_from(rm, PROMPT, down, up, other, up_scale=1.5)
    assert [(e.feature, e.op, e.positions) for e in by_prompts] == [(e.feature, e.op, e.positions) for e in by_graphs]
    assert [e.value for e in by_prompts] == pytest.approx([e.value for e in by_graphs], rel=1e-5, abs=1e-6)
    mine = graph.feature_nodes()  # the other way round: this prompt is longer, its early nodes fall off
    before_start = Supernode("b", (mine.node_id[mine.pos < shift].iloc[0],))
    with pytest.raises(EditError, match="before the start"):
        swap_from(rm, other, Supernode("d", (feats.node_id.iloc[0],)), before_start, PROMPT)


def test_swap_aligned_of_a_prompt_with_itself_changes_nothing():
    """Each feature set to its own clean value where it was, at two positions: the real model's
    output is unchanged."""
    rm, graph = replacement("gpt2", "clt"), graph_of("gpt2", "clt")
    feats = graph.feature_nodes()
    ids = tuple(feats.node_id[feats.pos.isin(sorted(set(feats.pos))[:2])].iloc[:6])
    sn = Supernode("both", ids)
    assert len({p for _, _, p in sn.features(graph)}) == 2
    res = intervene(rm, PROMPT, swap(sn, sn, graph=graph, up_graph=graph))
    assert len(res.features) == len(ids)
    torch.testing.assert_close(res.logits_after, res.logits_before, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------- CLI
def test_parse_cli_edits():
    edits = parse_cli_edits(["1_7=-2", "texas=0"], ["2_3_4=5.5"], ["texas=0_1_2,1_5_3"])
    assert edits[0] == Edit((1, 7), "scale", -2.0, None)
    assert edits[1:3] == [Edit((0, 1), "scale", 0.0, (2,)), Edit((1, 5), "scale", 0.0, (3,))]
    assert edits[3] == Edit((2, 3), "set", 5.5, (4,))
    assert parse_feature_id("3_12") == (3, 12, None)
    for bad in (["x_1=2"], ["1_2"], ["1_2=abc"], ["1_-2=1"]):
        with pytest.raises(EditError):
            parse_cli_edits(bad, [], [])
