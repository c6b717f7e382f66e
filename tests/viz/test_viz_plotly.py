"""plotly_view: figure structure (one marker per kept node, hover text), slider, supernodes, HTML."""

from __future__ import annotations

import re

import plotly.graph_objects as go
import pytest

from circuit_trace.viz import plot, to_html
from circuit_trace.viz.plotly_view import KIND_SYMBOLS


def node_traces(fig):
    return [t for t in fig.data if t.meta and t.meta.get("role") == "nodes"]


def edge_traces(fig):
    return [t for t in fig.data if t.meta and t.meta.get("role") == "edges"]


def n_segments(fig):
    return sum(sum(1 for v in t.x if v is None) for t in edge_traces(fig))


def test_one_marker_per_kept_node_with_hover(graph_json, kept_node_ids):
    fig = plot(graph_json)  # opens at the file's own node_threshold (0.95 here)
    assert isinstance(fig, go.Figure)
    ids = [i for t in node_traces(fig) if t.visible for i in t.ids]
    assert len(ids) == len(set(ids))
    assert set(ids) == kept_node_ids(graph_json, 0.95)
    shown_at_08 = {i for t in node_traces(plot(graph_json, node_threshold=0.8)) if t.visible for i in t.ids}
    assert shown_at_08 == kept_node_ids(graph_json, 0.8)
    for t in node_traces(fig):
        n = len(t.x)
        assert len(t.y) == len(t.ids) == len(t.customdata) == len(t.hovertext) == len(t.text) == n
        assert len(t.marker.symbol) == len(t.marker.size) == len(t.marker.color) == n
        assert t.hoverinfo == "text"
        assert all(isinstance(h, str) and "activation" in h and "influence" in h for h in t.hovertext)
    # hover text names the node and its strongest inputs / outputs
    by_id = {i: h for t in node_traces(fig) for i, h in zip(t.ids, t.hovertext)}
    some_link = max(
        (l for l in graph_json["links"] if {l["source"], l["target"]} <= set(by_id)), key=lambda l: abs(l["weight"])
    )
    assert "strongest inputs" in by_id[some_link["target"]]
    assert "strongest outputs" in by_id[some_link["source"]]


def test_shapes_and_rows_by_kind(graph_json):
    fig = plot(graph_json, color_by="kind")
    kinds = {n["node_id"]: n["feature_type"] for n in graph_json["nodes"]}
    want = {
        "cross layer transcoder": "circle",
        "mlp reconstruction error": "diamond",
        "embedding": "square",
        "logit": "square",
    }
    ys = {}
    for t in node_traces(fig):
        for i, sym, y in zip(t.ids, t.marker.symbol, t.y):
            assert sym == want[kinds[i]]
            ys.setdefault(kinds[i], []).append(y)
    assert max(ys["embedding"]) == 0 < min(ys["cross layer transcoder"])
    assert min(ys["logit"]) > max(ys["cross layer transcoder"])
    assert set(KIND_SYMBOLS) == {"feature", "error", "embedding", "logit"}


def test_x_ticks_are_tokens_escaped(evil_graph_json):
    fig = plot(evil_graph_json)
    ticks = list(fig.layout.xaxis.ticktext)
    assert len(ticks) == len(evil_graph_json["metadata"]["prompt_tokens"])
    for t in ticks + [h for tr in node_traces(fig) for h in tr.hovertext] + [fig.layout.title.text]:
        assert "<script" not in t and "<img" not in t


def test_edges_capped_signed_and_binned(make_graph):
    g = make_graph(per_cell=3, n_links=200, seed=3)
    full = plot(g, max_edges=10_000)
    capped = plot(g, max_edges=25)
    meta = capped.layout.meta["circuit_trace"]
    assert n_segments(capped) == meta["n_edges_drawn"] == 25
    assert n_segments(full) == full.layout.meta["circuit_trace"]["n_edges_kept"]
    # the capped figure keeps the largest |weight| edges
    drawn = sorted(abs(e[2]) for e in meta["edges"])
    assert drawn[0] >= sorted((abs(e[2]) for e in full.layout.meta["circuit_trace"]["edges"]), reverse=True)[24] - 1e-12
    colors = {t.meta["sign"]: t.line.color for t in edge_traces(full)}
    assert len(colors) == 2 and colors[1] != colors[-1]
    assert len({t.line.width for t in edge_traces(full)}) > 1
    # still exactly one marker per kept node
    assert sum(len(t.x) for t in node_traces(capped)) == capped.layout.meta["circuit_trace"]["n_kept_nodes"]


def test_threshold_slider_steps(graph_json, kept_node_ids):
    fig = plot(graph_json, node_threshold=0.8)
    (slider,) = fig.layout.sliders
    labels = [s.label for s in slider.steps]
    # the slider spans the file's range (its export threshold, 0.95) and opens at the view's 0.8
    assert labels[-1] == "0.95" and slider.active == labels.index("0.8")
    assert [t.visible is not False for t in fig.data] == list(slider.steps[slider.active].args[0]["visible"])
    roles = [(t.meta or {}).get("role") for t in fig.data]
    for step in slider.steps:
        thr = float(step.label)
        vis = step.args[0]["visible"]
        assert len(vis) == len(fig.data)
        shown = {i for t, v in zip(fig.data, vis) if v and t.meta.get("role") == "nodes" for i in t.ids}
        assert shown == kept_node_ids(graph_json, thr)
        assert all(v for v, r in zip(vis, roles) if r not in ("nodes", "edges"))
    # a lower node threshold opens on fewer nodes
    lo = plot(graph_json, node_threshold=0.4)
    assert {i for t in node_traces(lo) if t.visible for i in t.ids} == kept_node_ids(graph_json, 0.4)


def glyphs(fig):
    return [t for t in fig.data if t.meta and t.meta.get("role") == "supernodes"]


def test_supernodes_drawn_as_merged_glyphs(graph_json):
    ids = [n["node_id"] for n in graph_json["nodes"][:2]]
    fig = plot(graph_json, supernodes=[["my group", *ids], ["gone", "no-such-node"]])
    (g,) = glyphs(fig)
    assert list(g.text) == ["my group"] and g.meta["members"] == [ids]
    # members are drawn as the glyph only
    assert not set(ids) & {i for t in node_traces(fig) for i in t.ids}
    # the glyph's legend entry is there
    assert g.showlegend and g.name == "supernode"
    fig2 = plot(graph_json, supernodes={"dict form": ids})
    assert list(glyphs(fig2)[0].text) == ["dict form"]
    graph_json["qParams"]["supernodes"] = [["from qParams", *ids]]
    assert list(glyphs(plot(graph_json))[0].text) == ["from qParams"]


def test_supernodes_in_one_cell_never_overlap(make_graph):
    g = make_graph(per_cell=6, n_links=300, seed=4)
    cell = [
        n["node_id"]
        for n in g["nodes"]
        if n["layer"] == "1" and n["ctx_idx"] == 2 and n["feature_type"] == "cross layer transcoder"
    ]
    fig = plot(g, supernodes=[["say Austin (group)", *cell[:3]], ["Texas (group)", *cell[3:6]]], width=900)
    (gl,) = glyphs(fig)
    (x0, x1), (y0, y1) = gl.x, gl.y
    boxes = fig.layout.annotations
    assert [a.text for a in boxes] == list(gl.text) and [a.x for a in boxes] == [x0, x1]
    # the labelled boxes (~7.2 px per character at font size 11) do not overlap at this width
    lo, hi = fig.layout.xaxis.range
    px_per_x = (900 - 80) / (hi - lo)
    half = (len(gl.text[0]) + len(gl.text[1])) * 3.6 / px_per_x
    assert abs(x1 - x0) >= half or abs(y1 - y0) >= 0.3


def test_legend_matches_node_colours(graph_json):
    fig = plot(graph_json, color_by="kind")
    legend = {
        t.meta["kind"]: t.marker.color
        for t in fig.data
        if t.meta and t.meta.get("role") == "legend" and "kind" in t.meta
    }
    kinds = {n["node_id"]: n["feature_type"] for n in graph_json["nodes"]}
    name = {
        "cross layer transcoder": "feature",
        "mlp reconstruction error": "error",
        "embedding": "embedding",
        "logit": "logit",
    }
    for t in node_traces(fig):
        for i, c in zip(t.ids, t.marker.color):
            assert legend[name[kinds[i]]] == c
    by_layer = plot(graph_json, color_by="layer")
    assert sum(bool(t.marker.showscale) for t in node_traces(by_layer)) == 1  # one colour bar
    assert all(
        t.marker.color == "rgba(0,0,0,0)"
        for t in by_layer.data
        if t.meta and t.meta.get("role") == "legend" and "kind" in t.meta
    )


def test_important_nodes_carry_text_labels(graph_json):
    fig = plot(graph_json, n_labels=5, width=2000)
    texts = [x for t in node_traces(fig) for x in t.text if x]
    labelled_features = [x for x in texts if not x.startswith("Output")]
    assert 1 <= len(labelled_features) <= 5  # fewer when labels would overprint each other
    assert sum(x.startswith("Output") for x in texts) == 2  # every logit
    # the labelled features are among the most influential (by exported influence rank here)
    ranks = sorted(n["influence"] for n in graph_json["nodes"] if n["feature_type"] == "cross layer transcoder")
    by_text = {n["clerp"][:25]: n["influence"] for n in graph_json["nodes"]}
    assert all(by_text[x.rstrip("…")[:25]] <= ranks[15] for x in labelled_features)


def test_bad_color_by(graph_json):
    with pytest.raises(ValueError):
        plot(graph_json, color_by="rainbow")


def test_plot_real_graph_object():
    from circuit_trace import graphs

    g = graphs.random_graph(3, 5, 60, seed=2)
    data = g.neuronpedia_dict("x")  # what to_json writes: the wider export, opening at 0.8
    fig = plot(g)
    ids = [i for t in node_traces(fig) for i in t.ids]
    assert sorted(ids) == sorted(n["node_id"] for n in data["nodes"])
    assert n_segments(fig) == min(2000, len(data["links"]))
    (slider,) = fig.layout.sliders
    assert slider.steps[-1].label == "0.9" and slider.steps[slider.active].label == "0.8"


def test_to_html_self_contained(tmp_path, graph_json):
    out = to_html(graph_json, tmp_path / "sub" / "g.html")
    text = out.read_text(encoding="utf-8")
    assert out == tmp_path / "sub" / "g.html"
    assert len(text) > 1_000_000  # plotly.js is inlined
    assert not re.search(r"<script[^>]+src\s*=", text, re.I)
    assert not re.search(r"""src\s*=\s*["']?(https?:)?//""", text, re.I)
    assert "plotly_click" in text  # click-highlight script embedded
    assert [p.name for p in out.parent.iterdir()] == ["g.html"]  # no temp file left behind


def test_to_html_escapes_graph_strings(tmp_path, evil_graph_json):
    text = to_html(evil_graph_json, tmp_path / "evil.html").read_text(encoding="utf-8")
    assert "<script>window.__pwned" not in text
    assert "</script><b>" not in text
    assert "<img src=x" not in text


def test_show_and_widget_fall_back(graph_json, monkeypatch):
    from circuit_trace.viz import plotly_view

    calls = []
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: calls.append(k))
    fig = plotly_view.show(graph_json, renderer="json")
    assert isinstance(fig, go.Figure) and calls == [{"renderer": "json"}]
    w = plotly_view.widget(graph_json)
    assert isinstance(w, (go.Figure, go.FigureWidget))


def test_widget_click_highlights_edges(graph_json):
    pytest.importorskip("anywidget", reason="FigureWidget needs anywidget (optional, notebooks only)")
    from circuit_trace.viz import widget

    w = widget(graph_json)
    assert isinstance(w, go.FigureWidget)
    m = w.layout.meta["circuit_trace"]
    hp, hn, hs = m["highlight"]
    # the node with the most drawn edges
    counts = {}
    for s, t, _, _ in m["edges"]:
        counts[s] = counts.get(s, 0) + 1
        counts[t] = counts.get(t, 0) + 1
    idx = max(counts, key=counts.get)
    tr = next(t for t in w.data if t.meta and t.meta.get("role") == "nodes" and idx in t.customdata)

    class Points:
        point_inds = [list(tr.customdata).index(idx)]

    for cb in tr._click_callbacks:
        cb(tr, Points(), None)
    n_lines = sum(1 for v in list(w.data[hp].x or []) + list(w.data[hn].x or []) if v is None)
    assert n_lines == counts[idx] and len(w.data[hs].x) == 1
    for cb in tr._click_callbacks:  # clicking again clears
        cb(tr, Points(), None)
    assert len(w.data[hs].x or ()) == 0
