"""How an intervention result reads: the text report (edited active positions only, probabilities
in a readable precision), each supernode's activation after the edits as a fraction of before, and
the plotly figure of both (plotly is imported only when a figure is drawn)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import pandas as pd

from ..graphs.paths import format_prob
from .edits import EditError, Supernode

if TYPE_CHECKING:
    from .intervene import InterventionResult

__all__ = ["format_prob", "format_result", "intervention_figure", "supernode_fractions"]


def _num(x: float) -> str:
    return "0" if x == 0 else f"{x:.4g}"  # never "-0"


def format_result(result: InterventionResult) -> str:
    """Plain-text report: the edits at the positions where the feature was active before or after
    (inactive ones are counted, not listed), then the top tokens before and after."""
    lines = [f"prompt: {result.prompt!r}   mode: {result.mode}   KL(clean || edited) = {result.kl:.4g} nats"]
    table = result.features
    if len(table):
        active = table[(table["before"] != 0) | (table["after"] != 0)]
        lines.append("edited features, active positions (layer_index@pos 'token': op value: before => after):")
        for r in cast(Iterable[Any], active.itertuples()):  # namedtuple rows: columns as attributes
            tok = result.tokens[int(r.pos)] if 0 <= int(r.pos) < len(result.tokens) else "?"
            lines.append(
                f"  {r.layer}_{r.index}@{r.pos} {tok!r}: {r.op} {r.value:g}: {_num(r.before)} => {_num(r.after)}"
            )
        quiet = len(table) - len(active)
        if quiet:
            lines.append(f"  ({quiet} edited positions where the feature was 0 before and after are not shown)")
        if not len(active):
            lines.append("  (no edited feature is active at its positions: the edits change nothing there)")
    lines.append(f"{'rank':>4}  {'before':<28}{'after':<28}")
    for k in range(max(len(result.top_before), len(result.top_after))):
        cells = []
        for tops in (result.top_before, result.top_after):
            cells.append(f"{tops[k].token!r} {format_prob(tops[k].prob)}" if k < len(tops) else "")
        lines.append(f"{k + 1:>4}  {cells[0]:<28}{cells[1]:<28}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- supernodes
def _supernodes_of(supernodes, graph) -> list[Supernode]:
    if supernodes is None:
        if graph is None:
            return []
        from .qparams import read_supernodes

        return read_supernodes(graph, graph)
    if isinstance(supernodes, Supernode):
        return [supernodes]
    if isinstance(supernodes, Sequence) and not isinstance(supernodes, str):
        if all(isinstance(s, Supernode) for s in supernodes):
            return list(cast(Sequence[Supernode], supernodes))
        if all(isinstance(s, (list, tuple)) for s in supernodes):
            return Supernode.from_qparams(cast(Any, supernodes), graph)
    from .qparams import read_supernodes

    return read_supernodes(supernodes, graph)


def _feature_nodes(sn: Supernode, graph) -> list[tuple[int, int, int]]:
    """(layer, index, pos) of the supernode's feature nodes; embeddings, errors and logits skipped."""
    if graph is not None:
        sn.validate(graph)
        table = graph.nodes.set_index("node_id")
        rows = [table.loc[i] for i in sn.node_ids]
        return [(int(r["layer"]), int(r["feature"]), int(r["pos"])) for r in rows if r["kind"] == "feature"]
    out = []
    for nid in sn.node_ids:
        parts = nid.split("_")
        if len(parts) == 3 and all(p.isdigit() for p in parts):  # layer_index_pos (errors: index -1)
            out.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return out


def supernode_fractions(result: InterventionResult, supernodes=None, graph=None) -> pd.DataFrame:
    """label, n_features, before, after (summed activations of its feature nodes), fraction."""
    sns = _supernodes_of(supernodes, graph)
    acts = result.activations
    lookup = {
        (int(l), int(p), int(i)): (float(b), float(a))
        for l, p, i, b, a in zip(acts["layer"], acts["pos"], acts["index"], acts["before"], acts["after"])
    }
    n_pos = len(result.input_ids)
    rows = []
    for sn in sns:
        feats = _feature_nodes(sn, graph)
        bad = [f"{l}_{i}_{p}" for l, i, p in feats if not 0 <= p < n_pos]
        if bad:
            raise EditError(f"supernode {sn.label!r}: positions of {bad} are outside this {n_pos}-token prompt")
        vals = [lookup.get((l, p, i), (0.0, 0.0)) for l, i, p in feats]
        before, after = sum(v[0] for v in vals), sum(v[1] for v in vals)
        frac = after / before if before != 0 else float("nan")
        rows.append({"label": sn.label, "n_features": len(feats), "before": before, "after": after, "fraction": frac})
    return pd.DataFrame(rows, columns=["label", "n_features", "before", "after", "fraction"])


# ----------------------------------------------------------------------------------- figure
def intervention_figure(result: InterventionResult, graph=None, supernodes=None):
    """Left: probabilities of the top tokens before and after. Right (given supernodes or a graph
    with qParams supernodes): one bar per supernode, its activation after the edits as % of before."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fractions = supernode_fractions(result, supernodes, graph)
    cols = 2 if len(fractions) else 1
    b, a = result.top_before[0], result.top_after[0]
    # The change of the top token goes under the main title: as a subplot title it ran into the
    # right panel's whenever the tokens were long.
    change = f"next token: {b.token!r} {format_prob(b.prob)} → {a.token!r} {format_prob(a.prob)}"
    titles = ["top tokens, before and after"]
    if cols == 2:
        titles.append("supernode activation after the edits (% of before)")
    fig = make_subplots(rows=1, cols=cols, subplot_titles=titles, column_widths=[0.45, 0.55] if cols == 2 else None)
    _token_bars(fig, go, result)
    if cols == 2:
        _supernode_bars(fig, go, fractions)
    fig.update_layout(
        title=f"Intervention on {result.prompt!r} ({result.mode} mode, KL {result.kl:.3g} nats)<br><span style='font-size:14px'>{change}</span>",
        barmode="group",
        height=440,
        margin={"t": 115},  # room for the title's second line above the panels' titles
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def _token_bars(fig, go, result: InterventionResult) -> None:
    ids: list[int] = []
    for t in [*result.top_before, *result.top_after]:
        if t.token_id not in ids:
            ids.append(t.token_id)
    names = {t.token_id: t.token for t in [*result.top_before, *result.top_after]}
    labels = [repr(names[i]) for i in ids]
    for name, probs, colour in (("before", result.probs_before, "#95a5a6"), ("after", result.probs_after, "#2471a3")):
        p = [float(probs[i]) for i in ids]
        fig.add_trace(
            go.Bar(
                x=labels,
                y=p,
                name=f"p {name}",
                marker_color=colour,
                text=[format_prob(v) if v >= 0.01 else "" for v in p],  # tiny ones: in the hover only
                textposition="outside",
                # upright above its bar: side by side, grouped bars' labels overlap, and plotly's
                # default shrinks them to the bar's width, unreadably
                textangle=-90,
                constraintext="none",
                cliponaxis=False,
                hovertext=[f"{lab}: {format_prob(v)}" for lab, v in zip(labels, p)],
                hoverinfo="text",
            ),
            row=1,
            col=1,
        )
    fig.update_yaxes(
        title_text="probability", range=[0, 1.3], tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1], row=1, col=1
    )  # room for the labels


def _supernode_bars(fig, go, fractions: pd.DataFrame) -> None:
    pct = [100 * f if math.isfinite(f) else None for f in fractions["fraction"]]
    hover = [
        f"{r.label}: {_num(r.after)} / {_num(r.before)} ({r.n_features} features)"
        for r in cast(Iterable[Any], fractions.itertuples())
    ]
    fig.add_trace(
        go.Bar(
            x=list(fractions["label"]),
            y=pct,
            name="supernode activation, % of before",
            showlegend=False,  # bars coloured by direction: a legend swatch would show only the first
            text=["n/a" if v is None else f"{v:.0f}%" for v in pct],
            textposition="outside",  # a supernode edited to 0 has no bar: its "0%" must still show
            cliponaxis=False,
            hovertext=hover,
            hoverinfo="text",
            marker_color=["#888" if v is None else ("#c0392b" if v < 100 else "#2471a3") for v in pct],
        ),
        row=1,
        col=2,
    )
    fig.add_hline(y=100, line_dash="dot", line_color="#555", row=1, col=2)  # pyright: ignore[reportArgumentType]
    fig.update_yaxes(title_text="% of clean activation", row=1, col=2)
