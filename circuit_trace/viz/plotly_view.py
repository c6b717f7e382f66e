"""Interactive plotly figure of an attribution graph (notebooks and standalone HTML).

Layout: token positions across (x, tokens as tick labels), rows upward from the embeddings (bottom)
through each layer to the logits (top). Feature nodes are circles, error nodes diamonds, embeddings
and logits squares, sized by influence. Edges are coloured by sign, their width follows |weight|,
binned into a few traces (plotly draws one width / colour per trace). A slider re-prunes the nodes
over precomputed node-threshold steps; clicking a node highlights its edges (a small embedded script
in HTML, a FigureWidget callback in notebooks where anywidget is installed).

All strings coming from a graph (labels, tokens, prompt) are HTML-escaped before plotly sees them.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from ..atomic import atomic_write_text
from . import _data
from ._data import VNode

__all__ = ["plot", "to_html", "show", "widget", "DEFAULT_THRESHOLD_STEPS"]

DEFAULT_THRESHOLD_STEPS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
POS_COLOR = "#2b6cb0"  # positive edges
NEG_COLOR = "#d1495b"  # negative edges
KIND_COLORS = {"feature": "#4c78a8", "error": "#8c8c8c", "embedding": "#54a24b", "logit": "#f58518"}
KIND_SYMBOLS = {"feature": "circle", "error": "diamond", "embedding": "square", "logit": "square"}
WIDTHS = (0.6, 1.3, 2.3, 3.6)  # one per |weight| bin
OPACITIES = (0.35, 0.5, 0.65, 0.8)
N_TOP = 3  # strongest inputs / outputs in the hover text


def _esc(s: Any) -> str:
    # plotly renders a small pseudo-HTML subset in text; &, <, > are the characters that matter
    # (it does not decode &quot;, so quotes stay as they are: they are harmless in text nodes).
    return html.escape(str(s), quote=False)


def _short(s: str, n: int = 48) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def _display_label(n: VNode) -> str:
    if n.label:
        return n.label
    if n.kind == "embedding":
        return f"Emb: {n.token!r}"
    if n.kind == "error":
        return f"Error L{n.layer} @{n.pos}"
    return n.node_id


def _threshold_steps(node_threshold: float, steps: Sequence[float] | None) -> list[float]:
    base = DEFAULT_THRESHOLD_STEPS if steps is None else steps
    out = sorted({round(float(s), 6) for s in base if float(s) < node_threshold - 1e-9})
    return out + [float(node_threshold)]


def _layout_xy(nodes: list[VNode]) -> dict[int, tuple[float, float]]:
    """x = position (+ a spread inside the cell), y = row."""
    cells: dict[tuple[int, int], list[VNode]] = {}
    for n in nodes:
        cells.setdefault((n.row, n.pos), []).append(n)
    xy = {}
    for (row, pos), members in cells.items():
        members.sort(key=lambda n: (n.influence if n.influence is not None else 0.0, n.node_id))
        k = len(members)
        half = min(0.4, 0.09 * (k - 1))
        offs = np.linspace(-half, half, k) if k > 1 else [0.0]
        for n, o in zip(members, offs):
            xy[n.index] = (pos + float(o), float(row))
    return xy


def _node_size(n: VNode) -> float:
    if n.kind in ("embedding", "logit"):
        return 13.0
    inf = n.influence if n.influence is not None else 0.5
    return 7.0 + 11.0 * max(0.0, min(1.0, 1.0 - inf))


def _colors(nodes: list[VNode], color_by: str, n_layers: int) -> list[str]:
    if color_by == "kind":
        return [KIND_COLORS[n.kind] for n in nodes]
    if color_by != "layer":
        raise ValueError(f"color_by must be 'layer' or 'kind', not {color_by!r}")
    top = max(1, n_layers + 1)
    return sample_colorscale("Viridis", [n.row / top for n in nodes]) if nodes else []


def _hover(n: VNode, ins, outs, names) -> str:
    lines = [f"<b>{_esc(_short(_display_label(n), 80))}</b>"]
    lines.append(f"{_esc(n.node_id)} · {n.kind}")
    layer = "embeddings" if n.kind == "embedding" else ("logits" if n.kind == "logit" else f"layer {_esc(n.layer)}")
    lines.append(f"{layer} · pos {n.pos} {_esc(repr(n.token))}")
    lines.append(f"activation: {_fmt(n.activation)} · influence: {_fmt(n.influence)}")
    for title, lst, arrow in (("strongest inputs", ins, "←"), ("strongest outputs", outs, "→")):
        if lst:
            lines.append(f"{title}:")
            for other, w in lst:
                lines.append(f"&nbsp;&nbsp;{w:+.3g} {arrow} {_esc(_short(names[other], 40))}")
    return "<br>".join(lines)


def _prepare(graph, node_threshold, edge_threshold, supernodes):
    vg = _data.load(graph, node_threshold=node_threshold, edge_threshold=edge_threshold, supernodes=supernodes)
    keep = [n for n in vg.nodes if _data.kept(n, node_threshold, vg.node_threshold)]
    keep_idx = {n.index for n in keep}
    links = [(s, t, w) for s, t, w in vg.links if s in keep_idx and t in keep_idx and s != t]
    links.sort(key=lambda e: -abs(e[2]))
    return vg, keep, links


def plot(
    graph: Any,
    *,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    color_by: str = "layer",
    max_edges: int = 2000,
    supernodes: Iterable | Mapping | None = None,
    threshold_steps: Sequence[float] | None = None,
    title: str | None = None,
    width: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """Plotly figure of `graph` (a Graph, a Neuronpedia graph JSON dict, or a path to one).

    A Graph is pruned with `node_threshold` / `edge_threshold` and exported first (through
    `circuit_trace.graphs.to_neuronpedia`). JSON input is taken as exported (its links are already
    edge-pruned, so `edge_threshold` does not apply) and its nodes are dynamically pruned on their
    `influence` (cumulative rank): a node stays when influence <= node_threshold, or when
    node_threshold reaches the graph's own metadata.node_threshold (the exporter already pruned at
    it); embeddings and logits always stay. At most `max_edges` edges (between kept nodes) are
    drawn, the largest |weight| first. `supernodes` (``[[label, id, ...]]`` or
    ``{label: [ids]}``; default: the graph's qParams.supernodes) are drawn as labelled boxes.
    The slider steps are `threshold_steps` below `node_threshold`, plus `node_threshold` itself.
    """
    if color_by not in ("layer", "kind"):
        raise ValueError(f"color_by must be 'layer' or 'kind', not {color_by!r}")
    vg, keep, links = _prepare(graph, node_threshold, edge_threshold, supernodes)
    drawn = links[: max(0, int(max_edges))]
    steps = _threshold_steps(node_threshold, threshold_steps)

    def bin_of(n: VNode) -> int:  # the first slider step that shows n
        for k, s in enumerate(steps):
            if _data.kept(n, s, vg.node_threshold):
                return k
        return len(steps) - 1

    nbin = {n.index: bin_of(n) for n in keep}
    xy = _layout_xy(keep)
    names = {n.index: _display_label(n) for n in keep}

    # strongest inputs / outputs over every kept link (before the max_edges cap)
    ins: dict[int, list] = {n.index: [] for n in keep}
    outs: dict[int, list] = {n.index: [] for n in keep}
    for s, t, w in links:  # sorted by |w| descending
        if len(ins[t]) < N_TOP:
            ins[t].append((s, w))
        if len(outs[s]) < N_TOP:
            outs[s].append((t, w))

    colors = dict(zip((n.index for n in keep), _colors(keep, color_by, vg.n_layers)))
    traces: list[go.Scatter] = []
    roles: list[tuple[str, int]] = []  # (role, bin) per trace, for the slider

    # edges: one trace per (bin, sign, width bin)
    if drawn:
        mags = np.array([abs(w) for _, _, w in drawn])
        top = float(mags.max()) or 1.0
        rel = mags / top
        wbin = np.digitize(rel, [0.1, 0.3, 0.6])  # 0..3
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, (s, t, w) in enumerate(drawn):
        b = max(nbin[s], nbin[t])
        groups.setdefault((b, int(w >= 0), int(wbin[i])), []).append(i)
    edge_trace_ids = []
    for (b, positive, wb), idxs in sorted(groups.items()):
        xs, ys = [], []
        for i in idxs:
            s, t, _ = drawn[i]
            xs += [xy[s][0], xy[t][0], None]
            ys += [xy[s][1], xy[t][1], None]
        edge_trace_ids.append(len(traces))
        traces.append(go.Scatter(
            x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
            line=dict(color=POS_COLOR if positive else NEG_COLOR, width=WIDTHS[wb]),
            opacity=OPACITIES[wb], name=f"{'positive' if positive else 'negative'} edges",
            meta={"role": "edges", "bin": b, "sign": 1 if positive else -1, "width_bin": wb},
        ))
        roles.append(("edges", b))

    # nodes: one trace per threshold bin; per-point symbols, sizes and colours
    for b in range(len(steps)):
        members = [n for n in keep if nbin[n.index] == b]
        if not members:
            continue
        traces.append(go.Scatter(
            x=[xy[n.index][0] for n in members], y=[xy[n.index][1] for n in members],
            mode="markers", showlegend=False, name=f"nodes (influence ≤ {steps[b]:g})",
            customdata=[n.index for n in members],
            ids=[n.node_id for n in members],
            hovertext=[_hover(n, ins[n.index], outs[n.index], names) for n in members],
            hoverinfo="text",
            marker=dict(
                symbol=[KIND_SYMBOLS[n.kind] for n in members],
                size=[_node_size(n) for n in members],
                color=[colors[n.index] for n in members],
                line=dict(color="#222", width=[1.5 if n.kind == "logit" else 0.6 for n in members]),
            ),
            meta={"role": "nodes", "bin": b, "node_ids": [n.node_id for n in members]},
        ))
        roles.append(("nodes", b))

    # click highlight (filled by the embedded script / widget callback)
    hl_ids = {}
    for key, color in (("pos", POS_COLOR), ("neg", NEG_COLOR)):
        hl_ids[key] = len(traces)
        traces.append(go.Scatter(x=[], y=[], mode="lines", hoverinfo="skip", showlegend=False,
                                 line=dict(color=color, width=4), opacity=0.95,
                                 name=f"highlight {key}", meta={"role": "highlight"}))
        roles.append(("highlight", 0))
    hl_ids["sel"] = len(traces)
    traces.append(go.Scatter(x=[], y=[], mode="markers", hoverinfo="skip", showlegend=False,
                             marker=dict(size=24, color="rgba(0,0,0,0)", line=dict(color="#111", width=2.5)),
                             name="selected", meta={"role": "highlight"}))
    roles.append(("highlight", 0))

    # legend entries (one empty point each, drawn nowhere)
    for kind in _kinds_shown(keep):
        traces.append(go.Scatter(x=[None], y=[None], mode="markers", name=kind, hoverinfo="skip",
                                 marker=dict(symbol=KIND_SYMBOLS[kind], size=10,
                                             color=KIND_COLORS[kind] if color_by == "kind" else "#777"),
                                 meta={"role": "legend"}))
        roles.append(("legend", 0))
    for positive in (True, False):
        traces.append(go.Scatter(x=[None], y=[None], mode="lines", hoverinfo="skip",
                                 name="positive edge" if positive else "negative edge",
                                 line=dict(color=POS_COLOR if positive else NEG_COLOR, width=2),
                                 meta={"role": "legend"}))
        roles.append(("legend", 0))

    fig = go.Figure(data=traces)

    # supernodes: dashed boxes around their drawn members
    shapes, annotations = [], []
    for group in vg.supernodes:
        label, ids = group[0], group[1:]
        idx = [n.index for n in keep if n.node_id in set(ids)]
        if not idx:
            continue
        xs = [xy[i][0] for i in idx]
        ys = [xy[i][1] for i in idx]
        shapes.append(dict(type="rect", xref="x", yref="y", layer="below",
                           x0=min(xs) - 0.15, x1=max(xs) + 0.15, y0=min(ys) - 0.35, y1=max(ys) + 0.35,
                           line=dict(color="#6b46c1", width=1.5, dash="dot"),
                           fillcolor="rgba(107,70,193,0.08)", name=f"supernode {label}"))
        annotations.append(dict(x=min(xs) - 0.15, y=max(ys) + 0.35, xref="x", yref="y",
                                text=_esc(_short(label, 40)), showarrow=False, xanchor="left",
                                yanchor="bottom", font=dict(size=10, color="#6b46c1")))

    # slider over threshold steps
    sliders = []
    if len(steps) > 1:
        slider_steps = []
        for k, s in enumerate(steps):
            vis = [(b <= k) if role in ("edges", "nodes") else True for role, b in roles]
            slider_steps.append(dict(method="restyle", label=f"{s:g}", args=[{"visible": vis}]))
        sliders.append(dict(active=len(steps) - 1, steps=slider_steps, x=0.05, len=0.9, y=-0.02,
                            yanchor="top", currentvalue=dict(prefix="node threshold: "), pad=dict(t=40)))

    P = max(len(vg.tokens), (max((n.pos for n in keep), default=-1) + 1))
    rows = vg.n_layers + 2
    ticks_y = list(range(rows))
    ticktext_y = ["Emb"] + [f"L{i}" for i in range(vg.n_layers)] + ["Logit"]
    fig.update_layout(
        title=dict(text=_esc(_short(title if title is not None else (vg.prompt or vg.slug), 120))),
        xaxis=dict(tickmode="array", tickvals=list(range(P)),
                   ticktext=[f"{_esc(_short(t, 14))}" for t in vg.tokens] + [""] * (P - len(vg.tokens)),
                   range=[-0.6, P - 0.4], showgrid=False, zeroline=False, tickangle=-35),
        yaxis=dict(tickmode="array", tickvals=ticks_y, ticktext=ticktext_y, range=[-0.7, rows - 0.3],
                   showgrid=True, gridcolor="#eee", zeroline=False),
        plot_bgcolor="white", hovermode="closest", clickmode="event",
        hoverlabel=dict(align="left", bgcolor="white", font=dict(size=11)),
        width=width or max(720, min(2400, 120 * P + 160)),
        height=height or max(520, min(1600, 48 * rows + 220)),
        margin=dict(l=60, r=20, t=60, b=150),
        legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"),
        shapes=shapes, annotations=annotations, sliders=sliders,
        meta={"circuit_trace": {
            "nodes": {str(n.index): [xy[n.index][0], xy[n.index][1], nbin[n.index]] for n in keep},
            "edges": [[s, t, float(w), max(nbin[s], nbin[t])] for s, t, w in drawn],
            "edge_traces": edge_trace_ids,
            "edge_opacity": [OPACITIES[fig.data[i].meta["width_bin"]] for i in edge_trace_ids],
            "highlight": [hl_ids["pos"], hl_ids["neg"], hl_ids["sel"]],
            "steps": steps,
            "n_kept_nodes": len(keep), "n_edges_kept": len(links), "n_edges_drawn": len(drawn),
        }},
    )
    return fig


def _kinds_shown(nodes: list[VNode]) -> list[str]:
    present = {n.kind for n in nodes}
    return [k for k in _data.KINDS if k in present]


# Embedded in HTML output: highlight a clicked node's edges. Reads only numbers from layout.meta;
# no graph string ever reaches this script.
_CLICK_JS = r"""
(function () {
  var gd = document.getElementById('{plot_id}');
  if (!gd || !gd.layout || !gd.layout.meta || !gd.layout.meta.circuit_trace) return;
  var m = gd.layout.meta.circuit_trace, step = m.steps.length - 1, selected = null;
  function clear() {
    selected = null;
    Plotly.restyle(gd, {x: [[], [], []], y: [[], [], []]}, m.highlight);
    if (m.edge_traces.length) Plotly.restyle(gd, {opacity: m.edge_opacity}, m.edge_traces);
  }
  function highlight(idx) {
    var xp = [], yp = [], xn = [], yn = [];
    for (var i = 0; i < m.edges.length; i++) {
      var e = m.edges[i];
      if (e[3] > step || (e[0] !== idx && e[1] !== idx)) continue;
      var a = m.nodes[String(e[0])], b = m.nodes[String(e[1])];
      var X = e[2] >= 0 ? xp : xn, Y = e[2] >= 0 ? yp : yn;
      X.push(a[0], b[0], null); Y.push(a[1], b[1], null);
    }
    var p = m.nodes[String(idx)];
    selected = idx;
    if (m.edge_traces.length) Plotly.restyle(gd, {opacity: 0.12}, m.edge_traces);
    Plotly.restyle(gd, {x: [xp, xn, [p[0]]], y: [yp, yn, [p[1]]]}, m.highlight);
  }
  gd.on('plotly_click', function (ev) {
    var pt = ev && ev.points && ev.points[0];
    if (!pt || !pt.data || !pt.data.meta || pt.data.meta.role !== 'nodes') return;
    var idx = Number(pt.customdata);
    if (selected === idx) clear(); else highlight(idx);
  });
  gd.on('plotly_doubleclick', clear);
  gd.on('plotly_sliderchange', function (ev) {
    if (ev && ev.slider && typeof ev.slider.active === 'number') step = ev.slider.active;
    if (selected !== null) highlight(selected);
  });
})();
"""


def to_html(graph: Any, path: str | os.PathLike, **kw: Any) -> Path:
    """Write a self-contained HTML page (plotly.js inlined, no CDN) with the figure and the
    click-to-highlight script. The file is written atomically. Keyword arguments go to `plot`
    (and `config`/`div_id`/`auto_play` to plotly's `Figure.to_html`; `figure=` draws a ready figure)."""
    html_kw = {k: kw.pop(k) for k in ("config", "div_id", "auto_play") if k in kw}
    fig = kw.pop("figure", None) or plot(graph, **kw)
    config = {"displaylogo": False, "responsive": True, **html_kw.pop("config", {})}
    text = fig.to_html(include_plotlyjs=True, full_html=True, config=config, post_script=_CLICK_JS, **html_kw)
    return atomic_write_text(path, text)


def widget(graph: Any, **kw: Any):
    """A `plotly.graph_objects.FigureWidget` whose node clicks highlight edges (needs anywidget);
    falls back to the plain Figure when FigureWidget is unavailable."""
    fig = kw.pop("figure", None) or plot(graph, **kw)
    try:
        w = go.FigureWidget(fig)
    except Exception:  # ImportError (no anywidget) or a widget backend refusing
        return fig
    m = w.layout.meta["circuit_trace"]
    state = {"selected": None}

    def clear():
        state["selected"] = None
        with w.batch_update():
            for i in m["highlight"]:
                w.data[i].x, w.data[i].y = [], []
            for i, o in zip(m["edge_traces"], m["edge_opacity"]):
                w.data[i].opacity = o

    def on_click(trace, points, _selector):
        if not points.point_inds:
            return
        idx = int(trace.customdata[points.point_inds[0]])
        if state["selected"] == idx:
            clear()
            return
        step = len(m["steps"]) - 1
        for s in (w.layout.sliders or ()):
            step = s.active if s.active is not None else step
        xp, yp, xn, yn = [], [], [], []
        for s, t, wt, b in m["edges"]:
            if b > step or idx not in (s, t):
                continue
            a, c = m["nodes"][str(s)], m["nodes"][str(t)]
            X, Y = (xp, yp) if wt >= 0 else (xn, yn)
            X += [a[0], c[0], None]
            Y += [a[1], c[1], None]
        p = m["nodes"][str(idx)]
        state["selected"] = idx
        with w.batch_update():
            for i in m["edge_traces"]:
                w.data[i].opacity = 0.12
            hp, hn, hs = m["highlight"]
            w.data[hp].x, w.data[hp].y = xp, yp
            w.data[hn].x, w.data[hn].y = xn, yn
            w.data[hs].x, w.data[hs].y = [p[0]], [p[1]]

    for tr in w.data:
        if tr.meta and tr.meta.get("role") == "nodes":
            tr.on_click(on_click)
    return w


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython  # type: ignore
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def show(graph: Any, *, renderer: str | None = None, **kw: Any):
    """Show the graph: a click-aware FigureWidget in a notebook when available, else `fig.show()`.
    Returns the Figure / FigureWidget."""
    fig = plot(graph, **kw)
    if renderer is None and _in_notebook():
        w = widget(graph, figure=fig)
        if isinstance(w, go.FigureWidget):
            from IPython.display import display  # type: ignore

            display(w)
            return w
    fig.show(renderer=renderer)
    return fig
