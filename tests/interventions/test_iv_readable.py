"""Results people can read: conflicting edits refused, the report shows edited active positions with
readable probabilities, supernodes read from Neuronpedia JSON / URL / the viewer's saved qParams,
and the figure of an intervention (one bar per supernode)."""

from __future__ import annotations

import json
import math
import urllib.request
from typing import Any, cast
from urllib.parse import urlencode

import pytest
import torch
from iv_fixtures import PROMPT, graph_of, hook_count, replacement

from circuit_trace.graphs import Graph
from circuit_trace.interventions import (
    EditError,
    Supernode,
    format_prob,
    format_result,
    intervene,
    parse_cli_edits,
    read_pinned_ids,
    read_qparams,
    read_supernodes,
    scale_feature,
    set_feature,
    strongest_inputs,
)
from circuit_trace.viz.server import start_server


# ---------------------------------------------------------------------------------- conflicts
@pytest.mark.parametrize(
    "edits,where",
    [
        ([scale_feature(0, 3, -2.0), set_feature(0, 3, 0.0)], "every position"),
        ([scale_feature(0, 3, -2.0, [2, 4]), set_feature(0, 3, 5.0, [4])], r"positions \[4\]"),
        ([scale_feature(0, 3, -2.0), set_feature(0, 3, 5.0, [0, 3])], r"positions \[3\]"),
        ([scale_feature(0, 3, 2.0, [1]), scale_feature(0, 3, 2.0, [1])], r"positions \[1\]"),
    ],
)
@pytest.mark.parametrize("mode", ["free", "constrained"])
def test_conflicting_edits_are_refused_naming_them(edits, where, mode):
    rm = replacement("gpt2", "clt")
    with pytest.raises(EditError, match=f"conflicting edits of feature 0_3 at {where}") as info:
        intervene(rm, PROMPT, edits, mode=mode)
    assert "\n" not in str(info.value)
    assert hook_count(rm.model) == 0


def test_edits_of_one_feature_at_different_positions_are_fine():
    rm = replacement("gpt2", "clt")
    res = intervene(
        rm, PROMPT, [scale_feature(0, 3, -2.0, [1, 2]), set_feature(0, 3, 1.0, [3]), set_feature(0, 3, 0, [0])]
    )
    assert sorted(res.features["pos"]) == [0, 1, 2, 3]


def test_cli_scale_and_set_of_one_feature_conflict():
    rm = replacement("gpt2", "clt")
    edits = parse_cli_edits(["0_3=-2"], ["0_3=0"], [])
    with pytest.raises(EditError, match=r"0_3 at every position: scale -2 at every position and set 0"):
        intervene(rm, PROMPT, edits)


# ---------------------------------------------------------------------------------- the report
def test_format_prob_is_readable_and_never_zero_for_a_nonzero_prob():
    assert format_prob(0.998) == "0.998"
    assert format_prob(0.412) == "0.412"
    assert format_prob(0.0) == "0"
    for p in (1e-4, 3.2e-7, 1e-30, 0.00049):
        s = format_prob(p)
        assert "e-" in s and float(s) > 0 and math.isclose(float(s), p, rel_tol=0.05)
    assert format_prob(0.99962) == "0.99962" and format_prob(1.0) == "1.000"


def _active_and_inactive(rm):
    """A feature active at some prompt positions and inactive at others."""
    res = intervene(rm, PROMPT, [])
    acts = res.activations
    for key, rows in acts[acts["before"] > 0].groupby(["layer", "index"]):
        layer, index = cast(tuple[int, int], key)
        on = sorted(int(p) for p in rows["pos"] if p > 0)
        if 0 < len(on) < len(res.input_ids) - 1:
            return int(layer), int(index), on
    raise AssertionError("no partly active feature in the fixture")


def test_report_lists_only_edited_active_positions():
    rm = replacement("gpt2", "clt")
    layer, index, on = _active_and_inactive(rm)
    res = intervene(rm, PROMPT, [scale_feature(layer, index, -2.0)])
    text = str(res)
    listed = [line for line in text.splitlines() if line.strip().startswith(f"{layer}_{index}@")]
    assert [int(line.split("@")[1].split()[0]) for line in listed] == on
    n_quiet = len(res.input_ids) - 1 - len(on)
    assert f"({n_quiet} edited positions where the feature was 0" in text
    assert "-0 " not in text and "=> 0\n" not in text and " 0.000" not in text
    assert text == format_result(res)
    assert "\n" not in repr(res) and "tensor" not in repr(res) and "KL=" in repr(res)


def test_report_probabilities_use_readable_precision():
    rm = replacement("gpt2", "clt")
    res = intervene(rm, PROMPT, [], top_k=5)
    for t in res.top_after:
        assert f"{t.token!r} {format_prob(t.prob)}" in str(res)


# ---------------------------------------------------------------------------------- sources
def _feature_ids(graph: Graph, n: int) -> list[str]:
    return graph.nodes.node_id.iloc[graph.feature_indices[:n]].tolist()


SUPERNODE_LABELS = ['say "w3"', "late · layer 2"]  # quotes, spaces and non-ASCII survive every path


def _groups(graph: Graph) -> list[list[str]]:
    ids = _feature_ids(graph, 6)
    return [[SUPERNODE_LABELS[0], *ids[:3]], [SUPERNODE_LABELS[1], *ids[3:6]]]


def neuronpedia_url(groups: list[list[str]], pinned: list[str]) -> str:
    """The URL Neuronpedia's graph page writes: URLSearchParams of pinnedIds (comma-joined) and
    supernodes (JSON.stringify, no spaces)."""
    query = {
        "slug": "tiny-graph",
        "pinnedIds": ",".join(pinned),
        "supernodes": json.dumps(groups, separators=(",", ":"), ensure_ascii=False),
        "pruningThreshold": "0.8",
    }
    return "https://www.neuronpedia.org/gemma-2-2b/graph?" + urlencode(query)


def _viewer_save(directory, name: str, qparams: dict) -> None:
    """Save qParams the way the viewer's Save button does (POST to `circuit-trace serve`)."""
    with start_server(directory) as server:
        req = urllib.request.Request(
            f"{server.url}api/graphs/{name}/qparams",
            data=json.dumps(qparams).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200


def test_supernodes_from_json_url_and_viewer_agree(tmp_path):
    graph = graph_of("gpt2", "clt")
    groups = _groups(graph)
    pinned = _feature_ids(graph, 8)[5:]
    # a Neuronpedia graph JSON carrying the supernodes
    np_path = tmp_path / "neuronpedia.json"
    graph.to_json(np_path, supernodes=groups, pinned_ids=pinned, prune=False)
    # the same graph without them, then saved by the viewer
    (tmp_path / "viewer").mkdir()
    viewer_path = tmp_path / "viewer" / "g.json"
    graph.to_json(viewer_path, prune=False)
    assert read_supernodes(viewer_path) == []
    _viewer_save(tmp_path / "viewer", "g", {"supernodes": groups, "pinnedIds": pinned})
    url = neuronpedia_url(groups, pinned)
    assert "%5B%5B%22say+%22" in url.replace("%5C", "")  # really percent-encoded, as a browser shows it

    want = [Supernode(g[0], tuple(g[1:])) for g in groups]
    from_viewer = read_supernodes(viewer_path, graph)
    assert from_viewer == want
    assert read_supernodes(np_path, graph) == from_viewer
    assert read_supernodes(url, graph) == from_viewer
    assert read_supernodes(url.removeprefix("https://"), graph) == from_viewer  # pasted without the scheme
    assert read_supernodes(json.loads(np_path.read_text())) == from_viewer
    assert read_supernodes(Graph.from_json(viewer_path)) == from_viewer
    assert read_pinned_ids(url) == read_pinned_ids(np_path) == read_pinned_ids(viewer_path) == pinned
    # straight into edits
    edits = from_viewer[0].edits("scale", 0.0, graph)
    assert len(edits) == 3 and all(e.positions is not None for e in edits)


def test_bad_sources_say_what_is_wrong(tmp_path):
    graph = graph_of("gpt2", "clt")
    url = neuronpedia_url([["ghost", "0_999_1"]], [])
    assert read_qparams(url)["supernodes"] == [["ghost", "0_999_1"]]
    with pytest.raises(EditError, match="not in the graph"):
        read_supernodes(url, graph)
    with pytest.raises(EditError, match="not valid JSON"):
        read_supernodes("https://www.neuronpedia.org/x/graph?supernodes=%5B%5Bbroken")
    with pytest.raises(EditError, match="no such graph JSON file"):
        read_supernodes(tmp_path / "missing.json")
    with pytest.raises(EditError, match=r"\[label, node_id, \.\.\.\]"):
        read_supernodes({"qParams": {"supernodes": [["only a label"]]}})
    assert read_pinned_ids("https://www.neuronpedia.org/x/graph?slug=s") == []


# ---------------------------------------------------------------------------------- figure
def _supernode_result(mode: Any):
    rm, graph = replacement("gpt2", "clt"), graph_of("gpt2", "clt")
    groups = _groups(graph)
    sns = Supernode.from_qparams(groups, graph)
    res = intervene(rm, PROMPT, sns[0].edits("scale", 0.5, graph), mode=mode)
    return res, graph, sns


def test_supernode_fractions_measure_the_edit():
    res, graph, sns = _supernode_result("constrained")
    table = res.supernode_fractions(sns, graph)
    assert list(table["label"]) == SUPERNODE_LABELS
    assert table["fraction"].iloc[0] == pytest.approx(0.5)  # the edited group: exactly x0.5
    assert table["fraction"].iloc[1] == pytest.approx(1.0)  # constrained: nothing is recomputed
    # the sums are the graph's activations of those nodes
    acts = graph.nodes.set_index("node_id")["activation"]
    assert table["before"].iloc[1] == pytest.approx(sum(acts[i] for i in sns[1].node_ids), rel=1e-4)
    free, _, _ = _supernode_result("free")
    ft = free.supernode_fractions(sns, graph)
    assert ft["fraction"].iloc[0] == pytest.approx(0.5)


def test_figure_has_one_bar_per_supernode(tmp_path):
    res, graph, sns = _supernode_result("free")
    fig = res.figure(graph, sns)
    data: list[Any] = list(fig.data)
    bars = [t for t in data if t.type == "bar" and str(t.name).startswith("supernode")]
    assert len(bars) == 1 and list(bars[0].x) == SUPERNODE_LABELS
    assert bars[0].showlegend is False  # bars coloured by direction: no single swatch fits them
    b, a = res.top_before[0], res.top_after[0]
    assert f"next token: {b.token!r}" in fig.layout.title.text and f"→ {a.token!r}" in fig.layout.title.text
    assert all(t.constraintext == "none" and t.textangle == -90 for t in data if t.name in ("p before", "p after"))
    want = [100 * f for f in res.supernode_fractions(sns, graph)["fraction"]]
    assert list(bars[0].y) == pytest.approx(want)
    # the graph's own qParams supernodes are used when none are given
    path = tmp_path / "g.json"
    graph.to_json(path, supernodes=[[s.label, *s.node_ids] for s in sns], prune=False)
    fig2 = res.figure(Graph.from_json(path))
    data2: list[Any] = list(fig2.data)
    bars2 = [t for t in data2 if str(t.name).startswith("supernode")]
    assert list(bars2[0].x) == SUPERNODE_LABELS
    # without supernodes: only the token panel (before and after)
    fig3 = res.figure()
    data3: list[Any] = list(fig3.data)
    assert [t.name for t in data3] == ["p before", "p after"]
    tokens = {repr(t.token) for t in [*res.top_before, *res.top_after]}
    assert set(data3[0].x) == tokens


def test_activations_survive_save_and_load(tmp_path):
    res, graph, sns = _supernode_result("free")
    res.save(tmp_path / "r")
    back = type(res).load(tmp_path / "r")
    assert len(back.activations) == len(res.activations) > 0
    assert torch.allclose(
        torch.tensor(back.activations[["before", "after"]].to_numpy(dtype="float32")),
        torch.tensor(res.activations[["before", "after"]].to_numpy(dtype="float32")),
    )
    assert back.supernode_fractions(sns, graph)["fraction"].tolist() == pytest.approx(
        res.supernode_fractions(sns, graph)["fraction"].tolist()
    )


def test_strongest_inputs_reads_the_answers_edges():
    graph = graph_of("gpt2", "clt")
    dense = graph.adjacency.toarray() if hasattr(graph.adjacency, "toarray") else graph.adjacency
    logits = graph.logit_indices
    answer = int(logits[graph.nodes["logit_prob"].to_numpy()[logits].argmax()])
    feats = list(graph.feature_indices)
    by_hand = sorted((f for f in feats if dense[answer, f] > 0), key=lambda f: -dense[answer, f])[:3]
    top = strongest_inputs(graph, k=3)
    assert list(top.node_ids) == [graph.nodes["node_id"].iloc[f] for f in by_hand]
    assert top.label == f"top 3 into {graph.nodes['token'].iloc[answer]!r}"
    other = int(logits[0]) if int(logits[0]) != answer else int(logits[1])
    best = max((f for f in feats if dense[other, f] > 0), key=lambda f: dense[other, f])
    assert strongest_inputs(graph, str(graph.nodes["node_id"].iloc[other])).node_ids == (
        graph.nodes["node_id"].iloc[best],
    )
    with pytest.raises(EditError, match="not a node"):
        strongest_inputs(graph, "no_such_node")
