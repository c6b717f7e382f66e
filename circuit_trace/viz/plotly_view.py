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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import plotly.graph_objects as go

from ..atomic import atomic_write_text
from ..graphs.defaults import EDGE_THRESHOLD, NODE_THRESHOLD
from . import view_data
from .view_data import VNode

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


def _threshold_steps(view: float, export: float | None, steps: Sequence[float] | None) -> list[float]:
    """Slider steps: `steps` (default DEFAULT_THRESHOLD_STEPS) up to the export's node threshold,
    plus the view's threshold and the export's own, so the slider spans what the file holds."""
    top = max(view, export if export is not None else view)
    base = DEFAULT_THRESHOLD_STEPS if steps is None else steps
    out = {round(float(s), 6) for s in base if float(s) < top - 1e-9}
    return sorted(out | {round(float(view), 6), round(float(top), 6)})


def _columns(nodes: list[VNode], n_pos: int) -> list[tuple[float, float]]:
    """(centre, width) of each position's column in x units: crowded positions get wider columns
    (square root of their most crowded cell), so a 24-feature cell spreads instead of piling up."""
    need = [1] * n_pos
    cells: dict[tuple[int, int], int] = {}
    for n in nodes:
        cells[(n.row, n.pos)] = cells.get((n.row, n.pos), 0) + 1
        need[n.pos] = max(need[n.pos], cells[(n.row, n.pos)])
    widths = [max(1.0, 1.5 * float(np.sqrt(c))) for c in need]
    out, x = [], 0.0
    for w in widths:
        out.append((x + w / 2, w))
        x += w
    return out


def _layout_xy(nodes: list[VNode], cols: list[tuple[float, float]]) -> dict[int, tuple[float, float]]:
    """x = the position's column (+ a spread inside the cell, wrapped onto up to three lines when
    crowded), y = row."""
    cells: dict[tuple[int, int], list[VNode]] = {}
    for n in nodes:
        cells.setdefault((n.row, n.pos), []).append(n)
    xy = {}
    for (row, pos), members in cells.items():
        members.sort(key=lambda n: (-(n.score or 0.0), n.influence if n.influence is not None else 0.0, n.node_id))
        centre, width = cols[pos]
        k = len(members)
        lines = min(3, -(-k // 10))
        per = -(-k // lines)
        for i, n in enumerate(members):
            line, j = divmod(i, per)
            in_line = min(per, k - line * per)
            half = min(0.42 * width, 0.11 * (in_line - 1))
            off = float(np.linspace(-half, half, in_line)[j]) if in_line > 1 else 0.0
            dy = 0.0 if lines == 1 else 0.3 * (line / (lines - 1) - 0.5)
            xy[n.index] = (centre + off, row + dy)
    return xy


def _node_size(n: VNode, top_score: float) -> float:
    if n.kind in ("embedding", "logit"):
        return 13.0
    if n.kind == "error":
        return 8.0
    if n.score is not None and top_score > 0:
        return 7.0 + 11.0 * float(np.sqrt(max(0.0, n.score) / top_score))
    inf = n.influence if n.influence is not None else 0.5
    return 7.0 + 11.0 * max(0.0, min(1.0, 1.0 - inf))


def _hover(n: VNode, ins, outs, names) -> str:
    lines = [f"<b>{_esc(_short(_display_label(n), 80))}</b>"]
    lines.append(f"{_esc(n.node_id)} · {n.kind}")
    layer = "embeddings" if n.kind == "embedding" else ("logits" if n.kind == "logit" else f"layer {_esc(n.layer)}")
    lines.append(f"{layer} · pos {n.pos} {_esc(repr(n.token))}")
    lines.append(f"activation: {_fmt(n.activation)} · node influence: {_fmt(n.score)}")
    if n.influence is not None:
        lines.append(f"influence rank: within the top {100 * n.influence:.1f}% (cumulative share)")
    if n.label_score is not None:
        lines.append(f"label agreement: {_fmt(n.label_score)} (labels are heuristic)")
    for title, lst, arrow in (("strongest inputs", ins, "←"), ("strongest outputs", outs, "→")):
        if lst:
            lines.append(f"{title}:")
            for other, w in lst:
                lines.append(f"&nbsp;&nbsp;{w:+.3g} {arrow} {_esc(_short(names[other], 40))}")
    return "<br>".join(lines)


@dataclass
class _Prepared:
    vg: view_data.VGraph
    keep: list[VNode]  # every node shown at the top slider step
    links: list[tuple[int, int, float]]  # between kept nodes, strongest |weight| first
    steps: list[float]
    active: int  # the step the figure opens at
    nbin: dict[int, int]  # node index -> first step that shows it
    glyphs: list[dict]  # merged supernodes: label, members, x, y
    member_of: dict[int, int]  # node index -> glyph number
    cols: list[tuple[float, float]] = field(default_factory=list)  # per position: centre, width
    width: int = 0  # figure width in px


def _prepare(graph, node_threshold, edge_threshold, supernodes, threshold_steps, width):
    vg = view_data.load(graph, node_threshold=node_threshold, edge_threshold=edge_threshold, supernodes=supernodes)
    view = node_threshold if node_threshold is not None else vg.node_threshold
    view = 1.0 if view is None else float(view)
    steps = _threshold_steps(view, vg.export_node_threshold, threshold_steps)
    shown = [view_data.visible_ids(vg, s) for s in steps]
    nbin = {}
    for k in range(len(steps) - 1, -1, -1):
        for i in shown[k]:
            nbin[i] = k
    keep = [n for n in vg.nodes if n.index in shown[-1]]
    keep_idx = {n.index for n in keep}
    links = [(s, t, w) for s, t, w in vg.links if s in keep_idx and t in keep_idx and s != t]
    links.sort(key=lambda e: -abs(e[2]))
    n_pos = max(len(vg.tokens), max((n.pos for n in keep), default=-1) + 1, 1)
    cols = _columns(keep, n_pos)
    xy = _layout_xy(keep, cols)
    span = cols[-1][0] + cols[-1][1] / 2
    width = width or max(720, min(1500, int(80 * span) + 160))
    glyphs, member_of = _merge_supernodes(vg, keep_idx, xy, span, width)
    prep = _Prepared(vg, keep, links, steps, steps.index(round(view, 6)), nbin, glyphs, member_of)
    prep.cols, prep.width = cols, width
    return prep, xy


def _merge_supernodes(vg, keep_idx, xy, x_span, width) -> tuple[list[dict], dict[int, int]]:
    """One glyph per supernode at its members' centroid; glyphs of one row are pushed apart so their
    labels never overlap (x units per character from the figure's width)."""
    by_id = {n.node_id: n.index for n in vg.nodes}
    glyphs, member_of = [], {}
    for group in vg.supernodes:
        members = [by_id[i] for i in group[1:] if i in by_id and by_id[i] in keep_idx and by_id[i] not in member_of]
        if not members:
            continue
        for m in members:
            member_of[m] = len(glyphs)
        glyphs.append(
            {
                "label": str(group[0]),
                "members": members,
                "x": float(np.mean([xy[m][0] for m in members])),
                "y": float(np.mean([xy[m][1] for m in members])),
            }
        )
    unit = (x_span + 0.2) / max(300, width - 80)  # x units per pixel
    for _ in range(100):
        moved = False
        for i, a in enumerate(glyphs):
            for b in glyphs[i + 1 :]:
                half = (len(_short(a["label"], 30)) + len(_short(b["label"], 30))) * 3.6 * unit + 0.08
                if abs(a["y"] - b["y"]) < 0.3 and abs(a["x"] - b["x"]) < half:
                    push = (half - abs(a["x"] - b["x"])) / 2 + 1e-3
                    sign = 1.0 if a["x"] <= b["x"] else -1.0
                    a["x"] -= sign * push
                    b["x"] += sign * push
                    moved = True
        if not moved:
            break
    return glyphs, member_of


def plot(
    graph: Any,
    *,
    node_threshold: float | None = None,
    edge_threshold: float = EDGE_THRESHOLD,
    color_by: str = "kind",
    max_edges: int = 2000,
    supernodes: Iterable | Mapping | None = None,
    threshold_steps: Sequence[float] | None = None,
    n_labels: int = 12,
    title: str | None = None,
    width: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """Plotly figure of `graph` (a Graph, a Neuronpedia graph JSON dict, or a path to one).

    A Graph is exported first as `Graph.to_json` writes it (an unpruned one at the wider export
    thresholds, opening at `node_threshold`, default 0.8, and `edge_threshold`). JSON input is
    drawn as exported; it opens at `node_threshold` (default: its `metadata.node_threshold`). The
    slider's steps span the file's range, up to its export node threshold; each step shows the
    nodes the static viewer shows at that threshold (`view_data.visible_ids`). At most `max_edges`
    edges are drawn, the largest |weight| first. `supernodes` (``[[label, id, ...]]`` or
    ``{label: [ids]}``; default: the graph's qParams.supernodes) are drawn as one merged glyph each
    with its label, in place of their members. The `n_labels` most influential features (and the
    logits) carry their label as text. color_by "kind" (legend) or "layer" (colour bar).
    """
    if color_by not in ("layer", "kind"):
        raise ValueError(f"color_by must be 'layer' or 'kind', not {color_by!r}")
    if node_threshold is None and not isinstance(graph, Mapping | str | os.PathLike):
        node_threshold = NODE_THRESHOLD
    prep, xy = _prepare(graph, node_threshold, edge_threshold, supernodes, threshold_steps, width)
    traces, roles, meta = _build_traces(prep, xy, color_by, max_edges, n_labels)
    fig = go.Figure(data=traces)
    _finish_layout(fig, prep, roles, meta, title, width, height)
    return fig


def _point(prep: _Prepared, xy, i: int) -> tuple[float, float]:
    g = prep.member_of.get(i)
    return (prep.glyphs[g]["x"], prep.glyphs[g]["y"]) if g is not None else xy[i]


def _edge_traces(prep: _Prepared, xy, drawn, traces, roles) -> list[int]:
    """One trace per (slider bin, sign, width bin): plotly draws one width / colour per trace."""
    if drawn:
        mags = np.array([abs(w) for _, _, w in drawn])
        wbin = np.digitize(mags / (float(mags.max()) or 1.0), [0.1, 0.3, 0.6])  # 0..3
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, (s, t, w) in enumerate(drawn):
        b = max(prep.nbin[s], prep.nbin[t])
        groups.setdefault((b, int(w >= 0), int(wbin[i])), []).append(i)
    ids = []
    for (b, positive, wb), idxs in sorted(groups.items()):
        xs, ys = [], []
        for i in idxs:
            s, t, _ = drawn[i]
            (x0, y0), (x1, y1) = _point(prep, xy, s), _point(prep, xy, t)
            xs += [x0, x1, None]
            ys += [y0, y1, None]
        ids.append(len(traces))
        traces.append(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                hoverinfo="skip",
                showlegend=False,
                line=dict(color=POS_COLOR if positive else NEG_COLOR, width=WIDTHS[wb]),
                opacity=OPACITIES[wb],
                name=f"{'positive' if positive else 'negative'} edges",
                meta={"role": "edges", "bin": b, "sign": 1 if positive else -1, "width_bin": wb},
            )
        )
        roles.append(("edges", b))
    return ids


def _labelled(prep: _Prepared, xy, n_labels: int) -> set[int]:
    """The logits and up to `n_labels` most influential features, skipping a label that would
    overprint one already placed (label widths at ~6.5 px per character of font size 10)."""
    feats = sorted(
        (n for n in prep.keep if n.kind == "feature" and n.index not in prep.member_of),
        key=lambda n: (-(n.score or 0.0), n.influence if n.influence is not None else 1.0),
    )
    span = sum(w for _, w in prep.cols) + 0.2
    x_per_char = 6.5 * span / max(300, prep.width - 80)
    placed = [(xy[n.index], len(_short(_display_label(n), 26))) for n in prep.keep if n.kind == "logit"]
    out = {n.index for n in prep.keep if n.kind == "logit"}
    n_feat = 0
    for n in feats:
        if n_feat >= n_labels or not n.label:
            continue
        (x, y), ln = xy[n.index], len(_short(_display_label(n), 26))
        if all(abs(x - px) >= (ln + pl) / 2 * x_per_char or abs(y - py) >= 0.25 for (px, py), pl in placed):
            out.add(n.index)
            placed.append(((x, y), ln))
            n_feat += 1
    return out


def _node_traces(prep: _Prepared, xy, color_by, n_labels, ins, outs, traces, roles) -> None:
    names = {n.index: _display_label(n) for n in prep.keep}
    top = max((n.score or 0.0 for n in prep.keep if n.kind == "feature"), default=0.0)
    text_on = _labelled(prep, xy, n_labels)
    n_rows = max(1, prep.vg.n_layers + 1)
    for b in range(len(prep.steps)):
        members = [n for n in prep.keep if prep.nbin[n.index] == b and n.index not in prep.member_of]
        if not members:
            continue
        if color_by == "kind":
            marker_color: Any = [KIND_COLORS[n.kind] for n in members]
            extra = {}
        else:
            marker_color = [n.row for n in members]
            extra = dict(
                colorscale="Viridis",
                cmin=0,
                cmax=n_rows,
                showscale=not any(r == "nodes" for r, _ in roles),
                colorbar=dict(title="row (Emb → Logit)", thickness=12),
            )
        traces.append(
            go.Scatter(
                x=[xy[n.index][0] for n in members],
                y=[xy[n.index][1] for n in members],
                mode="markers+text",
                showlegend=False,
                name=f"nodes (threshold ≥ {prep.steps[b]:g})",
                customdata=[n.index for n in members],
                ids=[n.node_id for n in members],
                text=[_esc(_short(names[n.index], 26)) if n.index in text_on else "" for n in members],
                textposition="top center",
                textfont=dict(size=10, color="#222"),
                hovertext=[_hover(n, ins[n.index], outs[n.index], names) for n in members],
                hoverinfo="text",
                marker=dict(
                    symbol=[KIND_SYMBOLS[n.kind] for n in members],
                    size=[_node_size(n, top) for n in members],
                    color=marker_color,
                    line=dict(color="#222", width=[1.5 if n.kind == "logit" else 0.6 for n in members]),
                    **extra,
                ),
                meta={"role": "nodes", "bin": b, "node_ids": [n.node_id for n in members]},
            )
        )
        roles.append(("nodes", b))


def _glyph_trace(prep: _Prepared, traces, roles) -> None:
    if not prep.glyphs:
        return
    names = {n.index: _display_label(n) for n in prep.keep}
    traces.append(
        go.Scatter(
            x=[g["x"] for g in prep.glyphs],
            y=[g["y"] for g in prep.glyphs],
            mode="markers+text",
            name="supernode",
            showlegend=True,
            hoverinfo="text",
            text=[_esc(_short(g["label"], 30)) for g in prep.glyphs],
            textposition="middle center",
            textfont=dict(size=11, color="rgba(0,0,0,0)"),  # the boxed annotation shows the label
            hovertext=[
                f"<b>{_esc(g['label'])}</b> (supernode of {len(g['members'])})<br>"
                + "<br>".join(_esc(_short(names[m], 50)) for m in g["members"][:8])
                for g in prep.glyphs
            ],
            marker=dict(symbol="square", size=14, color="#f3efff", line=dict(color="#6b46c1", width=1.5)),
            meta={
                "role": "supernodes",
                "labels": [g["label"] for g in prep.glyphs],
                "members": [[prep.vg.nodes[m].node_id for m in g["members"]] for g in prep.glyphs],
            },
        )
    )
    roles.append(("supernodes", 0))


def _build_traces(prep: _Prepared, xy, color_by, max_edges, n_labels):
    drawn = prep.links[: max(0, int(max_edges))]
    # strongest inputs / outputs over every kept link (before the max_edges cap)
    ins: dict[int, list] = {n.index: [] for n in prep.keep}
    outs: dict[int, list] = {n.index: [] for n in prep.keep}
    for s, t, w in prep.links:  # sorted by |w| descending
        if len(ins[t]) < N_TOP:
            ins[t].append((s, w))
        if len(outs[s]) < N_TOP:
            outs[s].append((t, w))
    traces: list[go.Scatter] = []
    roles: list[tuple[str, int]] = []  # (role, bin) per trace, for the slider
    edge_ids = _edge_traces(prep, xy, drawn, traces, roles)
    _node_traces(prep, xy, color_by, n_labels, ins, outs, traces, roles)
    _glyph_trace(prep, traces, roles)
    hl = _highlight_traces(traces, roles)
    _legend_traces(prep, color_by, traces, roles)
    meta = {
        "nodes": {str(n.index): [*_point(prep, xy, n.index), prep.nbin[n.index]] for n in prep.keep},
        "edges": [[s, t, float(w), max(prep.nbin[s], prep.nbin[t])] for s, t, w in drawn],
        "edge_traces": edge_ids,
        "edge_opacity": [OPACITIES[cast(dict, traces[i].meta)["width_bin"]] for i in edge_ids],
        "highlight": hl,
        "steps": prep.steps,
        "active": prep.active,
        "n_kept_nodes": sum(1 for n in prep.keep if prep.nbin[n.index] <= prep.active),
        "n_edges_kept": len(prep.links),
        "n_edges_drawn": len(drawn),
    }
    return traces, roles, meta


def _highlight_traces(traces, roles) -> list[int]:
    """Empty traces the click script fills with a node's edges and a ring around it."""
    specs: list[tuple[str, str, dict[str, Any]]] = [
        (f"highlight {key}", "lines", dict(line=dict(color=color, width=4), opacity=0.95))
        for key, color in (("pos", POS_COLOR), ("neg", NEG_COLOR))
    ]
    ring = dict(marker=dict(size=24, color="rgba(0,0,0,0)", line=dict(color="#111", width=2.5)))
    specs.append(("selected", "markers", ring))
    ids = []
    for name, mode, style in specs:
        ids.append(len(traces))
        traces.append(
            go.Scatter(
                x=[],
                y=[],
                mode=mode,
                hoverinfo="skip",
                showlegend=False,
                name=name,
                meta={"role": "highlight"},
                **style,
            )
        )
        roles.append(("highlight", 0))
    return ids


def _legend_traces(prep: _Prepared, color_by: str, traces, roles) -> None:
    """Legend entries drawn nowhere, in the nodes' own colours (by kind) or as shapes only (by
    layer, where the colour bar gives the colour)."""
    for kind in _kinds_shown(prep.keep):
        color = KIND_COLORS[kind] if color_by == "kind" else "rgba(0,0,0,0)"
        traces.append(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=kind if color_by == "kind" else f"{kind} (shape)",
                hoverinfo="skip",
                marker=dict(symbol=KIND_SYMBOLS[kind], size=10, color=color, line=dict(color="#222", width=1)),
                meta={"role": "legend", "kind": kind},
            )
        )
        roles.append(("legend", 0))
    for positive in (True, False):
        traces.append(
            go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                hoverinfo="skip",
                name="positive edge" if positive else "negative edge",
                line=dict(color=POS_COLOR if positive else NEG_COLOR, width=2),
                meta={"role": "legend"},
            )
        )
        roles.append(("legend", 0))


def _sliders(prep: _Prepared, roles) -> list[dict]:
    """The node-threshold slider (none for a single step): each step shows the bins up to it."""
    if len(prep.steps) <= 1:
        return []
    slider_steps = []
    for k, s in enumerate(prep.steps):
        vis = [(b <= k) if role in ("edges", "nodes") else True for role, b in roles]
        slider_steps.append(dict(method="restyle", label=f"{s:g}", args=[{"visible": vis}]))
    prefix = dict(prefix="node threshold: ")
    return [
        dict(
            active=prep.active,
            steps=slider_steps,
            x=0.05,
            len=0.9,
            y=-0.02,
            yanchor="top",
            currentvalue=prefix,
            pad=dict(t=40),
        )
    ]


def _glyph_annotations(prep: _Prepared) -> list[dict]:
    """One boxed label per supernode glyph."""
    style = dict(showarrow=False, bgcolor="#f3efff", bordercolor="#6b46c1", borderwidth=1.5, borderpad=4)
    font = dict(size=11, color="#44337a")
    return [
        dict(
            x=g["x"],
            y=g["y"],
            xref="x",
            yref="y",
            text=_esc(_short(g["label"], 30)),
            font=font,
            captureevents=False,
            **style,
        )
        for g in prep.glyphs
    ]


def _axes(prep: _Prepared) -> tuple[dict, dict]:
    """x: token positions (tokens as tick labels); y: Emb, L0..L{n-1}, Logit."""
    vg = prep.vg
    P = max(len(vg.tokens), (max((n.pos for n in prep.keep), default=-1) + 1))
    rows = vg.n_layers + 2
    xaxis = dict(
        tickmode="array",
        tickvals=[c for c, _ in prep.cols],
        ticktext=[f"{_esc(_short(t, 14))}" for t in vg.tokens] + [""] * (P - len(vg.tokens)),
        range=[-0.1, sum(w for _, w in prep.cols) + 0.1],
        showgrid=False,
        zeroline=False,
        tickangle=-35,
    )
    yaxis = dict(
        tickmode="array",
        tickvals=list(range(rows)),
        ticktext=["Emb"] + [f"L{i}" for i in range(vg.n_layers)] + ["Logit"],
        range=[-0.7, rows - 0.3],
        showgrid=True,
        gridcolor="#eee",
        zeroline=False,
    )
    return xaxis, yaxis


def _finish_layout(fig, prep: _Prepared, roles, meta, title, width, height) -> None:
    vg = prep.vg
    for tr, (role, b) in zip(fig.data, roles):
        if role in ("edges", "nodes"):
            tr.visible = b <= prep.active
    xaxis, yaxis = _axes(prep)
    rows = vg.n_layers + 2
    fig.update_layout(
        title=dict(text=_esc(_short(title if title is not None else (vg.prompt or vg.slug), 120))),
        xaxis=xaxis,
        yaxis=yaxis,
        plot_bgcolor="white",
        hovermode="closest",
        clickmode="event",
        hoverlabel=dict(align="left", bgcolor="white", font=dict(size=11)),
        width=prep.width,
        height=height or max(520, min(1600, 60 * rows + 220)),
        margin=dict(l=60, r=20, t=60, b=150),
        legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"),
        sliders=_sliders(prep, roles),
        meta={"circuit_trace": meta},
        annotations=_glyph_annotations(prep),
    )


def _kinds_shown(nodes: list[VNode]) -> list[str]:
    present = {n.kind for n in nodes}
    return [k for k in view_data.KINDS if k in present]


# Embedded in HTML output: highlight a clicked node's edges. Reads only numbers from layout.meta;
# no graph string ever reaches this script.
_CLICK_JS = r"""
(function () {
  var gd = document.getElementById('{plot_id}');
  if (!gd || !gd.layout || !gd.layout.meta || !gd.layout.meta.circuit_trace) return;
  var m = gd.layout.meta.circuit_trace, step = typeof m.active === 'number' ? m.active : m.steps.length - 1, selected = null;
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
    state: dict[str, int | None] = {"selected": None}

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
        step = m.get("active", len(m["steps"]) - 1)
        for s in w.layout.sliders or ():
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

    for tr in cast(Any, w.data):  # plotly's stubs type FigureWidget.data loosely
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
