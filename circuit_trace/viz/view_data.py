"""Normalise what the viewers draw: a Neuronpedia graph JSON dict (SPEC §4), a path to one, or a
`circuit_trace.graphs.Graph` (pruned and exported through the graphs package first)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from ..graphs.defaults import EDGE_THRESHOLD, NODE_THRESHOLD

__all__ = ["KINDS", "VNode", "VGraph", "kind_of", "as_json_dict", "load", "visible_ids"]

KINDS = ("feature", "error", "embedding", "logit")


@dataclass
class VNode:
    """One node as the viewers see it."""

    index: int
    node_id: str
    kind: str  # "feature" | "error" | "embedding" | "logit"
    layer: str  # as in the JSON ("E", "0", ..., str(L+1))
    row: int  # vertical slot: 0 = embeddings, l + 1 = layer l, n_layers + 1 = logits
    pos: int
    label: str
    activation: float | None
    influence: float | None
    feature: int | None
    token: str = ""
    always: bool = False  # embeddings and logits are never pruned
    score: float | None = None  # node influence wᵀB + w (`node_influence`; higher = more important)
    label_score: float | None = None  # agreement of an automatic label with its evidence


@dataclass
class VGraph:
    """Nodes and links of one graph plus the bits of metadata the viewers show."""

    prompt: str
    tokens: list[str]
    slug: str
    scan: str
    nodes: list[VNode]
    links: list[tuple[int, int, float]]  # (source index, target index, weight)
    n_layers: int
    supernodes: list[list[str]] = field(default_factory=list)
    node_threshold: float | None = None  # the view's default (metadata.node_threshold)
    export_node_threshold: float | None = None  # how far the file reaches (>= node_threshold)


def kind_of(feature_type: str) -> str:
    ft = (feature_type or "").lower()
    if "error" in ft:
        return "error"
    if "embed" in ft:
        return "embedding"
    if "logit" in ft:
        return "logit"
    return "feature"


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def as_json_dict(graph: Any, *, node_threshold: float = NODE_THRESHOLD, edge_threshold: float = EDGE_THRESHOLD) -> dict:
    """Return the Neuronpedia JSON dict for `graph`.

    - a mapping is returned as is (it is already a graph JSON: nodes and links as exported);
    - a str / PathLike is read as a JSON file;
    - anything else is taken to be a `circuit_trace.graphs.Graph`: it is pruned with the given
      thresholds and exported with the graphs package's Neuronpedia exporter.
    """
    if isinstance(graph, Mapping):
        return dict(graph)
    if isinstance(graph, (str, os.PathLike)):
        with open(graph, encoding="utf-8") as fh:
            return json.load(fh)
    return _graph_to_json(graph, node_threshold=node_threshold, edge_threshold=edge_threshold)


def _graph_to_json(graph: Any, *, node_threshold: float, edge_threshold: float) -> dict:
    """Export a `circuit_trace.graphs.Graph` as `Graph.to_json` would (a pruned graph as it is, an
    unpruned one at the wider export thresholds with this view as its default); viz only reads it."""
    from circuit_trace.graphs import Graph

    if not isinstance(graph, Graph):
        raise TypeError(
            f"cannot draw a {type(graph).__name__}: pass a Graph, a Neuronpedia graph JSON dict, "
            "or the path of a graph JSON file"
        )
    slug = "".join(c if c.isalnum() else "-" for c in graph.prompt.strip().lower())[:48].strip("-") or "graph"
    return graph.neuronpedia_dict(slug, node_threshold, edge_threshold)


def _n_layers(raw_nodes: list) -> int:
    """The model's layer count: logits sit at layer str(L + 1) (SPEC), else one past the deepest."""
    numeric_layers, logit_layers = [], []
    for n in raw_nodes:
        k = kind_of(str(n.get("feature_type", "")))
        try:
            li = int(str(n.get("layer")))
        except ValueError:
            continue
        (logit_layers if k == "logit" else numeric_layers).append(li)
    deepest = (max(numeric_layers) + 1) if numeric_layers else 0
    return max(max(logit_layers) - 1 if logit_layers else deepest, deepest)


def _vnode(n: Mapping, index: int, n_layers: int, tokens: list[str]) -> VNode:
    kind = kind_of(str(n.get("feature_type", "")))
    layer = str(n.get("layer"))
    if kind == "embedding":
        row = 0
    elif kind == "logit":
        row = n_layers + 1
    else:
        try:
            row = int(layer) + 1
        except ValueError:
            row = 0
    pos = int(n.get("ctx_idx") or 0)
    feat = n.get("feature")
    return VNode(
        index=index,
        node_id=str(n.get("node_id")),
        kind=kind,
        layer=layer,
        row=row,
        pos=pos,
        label=str(n.get("clerp") or ""),
        activation=_num(n.get("activation")),
        influence=_num(n.get("influence")),
        feature=int(feat) if isinstance(feat, (int, float)) and not isinstance(feat, bool) else None,
        token=tokens[pos] if 0 <= pos < len(tokens) else "",
        always=kind in ("embedding", "logit"),
        score=_num(n.get("node_influence")),
        label_score=_num(n.get("label_score")),
    )


def _links(raw_links: list, by_id: dict[str, int]) -> list[tuple[int, int, float]]:
    """(source, target, weight) of the links between known nodes with a finite weight."""
    links = []
    for ln in raw_links:
        s, t = by_id.get(str(ln.get("source"))), by_id.get(str(ln.get("target")))
        w = _num(ln.get("weight"))
        if s is not None and t is not None and w is not None:
            links.append((s, t, w))
    return links


def _supernodes(given: Iterable | Mapping | None, qp: Mapping) -> list[list[str]]:
    """[name, member ids...] groups: the ones given (a list or {name: members}), else the file's."""
    if given is None:
        sn = qp.get("supernodes") or []
    elif isinstance(given, Mapping):
        sn = [[str(k), *map(str, v)] for k, v in given.items()]
    else:
        sn = list(given)
    return [[str(x) for x in group] for group in sn if isinstance(group, (list, tuple)) and len(group) >= 2]


def load(
    graph: Any,
    *,
    node_threshold: float = NODE_THRESHOLD,
    edge_threshold: float = EDGE_THRESHOLD,
    supernodes: Iterable | Mapping | None = None,
) -> VGraph:
    """Parse a graph (see `as_json_dict`) into a `VGraph` (all nodes and links of the JSON)."""
    data = as_json_dict(graph, node_threshold=node_threshold, edge_threshold=edge_threshold)
    meta = data.get("metadata") or {}
    tokens = [str(t) for t in (meta.get("prompt_tokens") or [])]
    raw_nodes = data.get("nodes") or []
    n_layers = _n_layers(raw_nodes)
    nodes: list[VNode] = []
    by_id: dict[str, int] = {}
    for n in raw_nodes:
        if str(n.get("node_id")) not in by_id:  # the first of repeated ids wins
            nodes.append(_vnode(n, len(nodes), n_layers, tokens))
            by_id[nodes[-1].node_id] = nodes[-1].index
    ps_raw = meta.get("pruning_settings")
    ps: Mapping[str, Any] = ps_raw if isinstance(ps_raw, Mapping) else {}
    view = _num(meta.get("node_threshold"))
    export = _num(ps.get("export_node_threshold"))
    return VGraph(
        prompt=str(meta.get("prompt") or ""),
        tokens=tokens,
        slug=str(meta.get("slug") or ""),
        scan=str(meta.get("scan") or ""),
        nodes=nodes,
        links=_links(data.get("links") or [], by_id),
        n_layers=n_layers,
        supernodes=_supernodes(supernodes, data.get("qParams") or {}),
        node_threshold=view,
        export_node_threshold=export if export is not None else view,
    )


def visible_ids(graph: VGraph, threshold: float) -> set[int]:
    """Indices of the nodes the viewers show at node threshold `threshold` (the static viewer's
    rule, with the edge threshold left at the export's): at or above the export's node threshold,
    every node of the file; below it, the features and errors whose cumulative influence share is
    under the threshold plus the first to reach it (ties too), then features without an input or
    an output and errors without an output among them, repeatedly (SPEC §4 step 3). Embeddings,
    logits and nodes without an influence always stay."""
    own = graph.export_node_threshold
    if own is not None and threshold >= own - 1e-9:
        return {n.index for n in graph.nodes}
    always = {n.index for n in graph.nodes if n.always or n.influence is None}
    keep, cut = set(always), None
    # nodes without an influence are all in `always`, so every influence here is a float
    for n in sorted((n for n in graph.nodes if n.index not in always), key=lambda n: cast(float, n.influence)):
        inf = cast(float, n.influence)
        if inf < threshold - 1e-12:
            keep.add(n.index)
        elif cut is None or inf <= cut + 1e-15:
            cut = inf
            keep.add(n.index)
    is_feature = {n.index for n in graph.nodes if n.kind == "feature"}
    while True:
        live = [(s, t) for s, t, _ in graph.links if s in keep and t in keep]
        has_out, has_in = {s for s, _ in live}, {t for _, t in live}
        drop = {i for i in keep - always if i not in has_out or (i in is_feature and i not in has_in)}
        if not drop:
            return keep
        keep -= drop
