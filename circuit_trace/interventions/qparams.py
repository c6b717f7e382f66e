"""Supernodes and pinned ids from where researchers build them: a Neuronpedia graph JSON (its
`qParams`), a Neuronpedia graph URL (parsed offline from the string) or the viewer's saved qParams.

Neuronpedia's graph page keeps its state in the URL query: `pinnedIds` is the comma-joined node ids,
`supernodes` the JSON text of [[label, id, ...], ...] (URL-encoded); `circuit-trace serve` saves the
same two keys into the graph file's `qParams`. `Supernode.from_qparams` turns the lists into
`Supernode`s, ready for `Supernode.edits`, `swap` and `InterventionResult.figure`.
`strongest_inputs` builds one from the graph itself: the features that feed a node (the answer) most."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import scipy.sparse as sp

from .edits import EditError, Supernode

__all__ = ["QParamsSource", "read_pinned_ids", "read_qparams", "read_supernodes", "strongest_inputs"]

QParamsSource = str | os.PathLike | Mapping[str, Any] | Any  # path, URL, JSON dict or a Graph


def read_supernodes(source: QParamsSource, graph=None) -> list[Supernode]:
    """The supernodes of `source` (see `read_qparams`) as `Supernode`s, in their saved order. With
    `graph`, every node id is checked to be one of its nodes (EditError naming the missing ones)."""
    return Supernode.from_qparams(read_qparams(source)["supernodes"], graph)


def read_pinned_ids(source: QParamsSource) -> list[str]:
    """The pinned node ids of `source` (see `read_qparams`), in their saved order."""
    return list(read_qparams(source)["pinnedIds"])


def read_qparams(source: QParamsSource) -> dict[str, Any]:
    """{"pinnedIds": [id, ...], "supernodes": [[label, id, ...], ...]} from

    * a Neuronpedia graph URL (a str starting with http:// or https://, a bare `?query`, or an
      address without a scheme whose query has supernodes= or pinnedIds=):
      `pinnedIds=a,b,c&supernodes=[["label","id",...],...]`, read from the string, no network;
    * a Neuronpedia graph JSON: a path to the file, or its dict (its `qParams`), or a qParams dict;
    * a `Graph` (e.g. `Graph.from_json` of a file the viewer saved): its qParams.
    Missing keys give empty lists; malformed ones raise EditError (a ValueError) saying where."""
    if isinstance(source, str) and _looks_like_url(source):
        return _from_url(source)
    if isinstance(source, (str, os.PathLike)):
        return _from_file(Path(source))
    if isinstance(source, Mapping):
        q = source.get("qParams", source) if "qParams" in source else source
        return _normalise(q, "the given dict")
    settings = getattr(source, "settings", None)
    if isinstance(settings, Mapping):  # a Graph: from_json keeps the file's qParams in its settings
        return _normalise(settings.get("qParams") or {}, "the graph's qParams")
    raise EditError(
        f"cannot read supernodes from {type(source).__name__}: give a Neuronpedia graph URL, a graph JSON "
        "path or dict, or a Graph"
    )


def _looks_like_url(text: str) -> bool:
    """http(s)://..., a bare ?query, or a scheme-less address whose query names the two keys."""
    t = text.strip()
    if t.startswith(("http://", "https://", "?")):
        return True
    query = t.partition("?")[2]
    return bool(query) and ("supernodes=" in query or "pinnedIds=" in query)


def _from_url(url: str) -> dict[str, Any]:
    query = parse_qs(urlsplit(url.strip()).query, keep_blank_values=True)
    out: dict[str, Any] = {"pinnedIds": [], "supernodes": []}
    if query.get("pinnedIds"):
        out["pinnedIds"] = [i for i in query["pinnedIds"][-1].split(",") if i]
    if query.get("supernodes") and query["supernodes"][-1]:
        try:
            out["supernodes"] = json.loads(query["supernodes"][-1])
        except json.JSONDecodeError as exc:
            raise EditError(f"the URL's supernodes parameter is not valid JSON ({exc.msg})") from None
    return _normalise(out, "the URL")


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EditError(f"no such graph JSON file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EditError(f"cannot read {path} as a graph JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EditError(f"{path} holds a JSON {type(data).__name__}, not a graph object")
    return _normalise(data.get("qParams", data) if "qParams" in data else data, str(path))


def _normalise(q: Any, where: str) -> dict[str, Any]:
    """Check the two lists' shapes; strings only, so ids compare equal whatever their source."""
    if not isinstance(q, Mapping):
        raise EditError(f"qParams in {where} must be an object, got {type(q).__name__}")
    pinned = q.get("pinnedIds") or []
    if isinstance(pinned, str):  # the URL form, saved as a string by some tools
        pinned = [i for i in pinned.split(",") if i]
    if not isinstance(pinned, list) or not all(isinstance(i, str) for i in pinned):
        raise EditError(f"pinnedIds in {where} must be a list of node-id strings")
    supers = q.get("supernodes") or []
    if not isinstance(supers, list) or not all(
        isinstance(g, list) and len(g) >= 2 and all(isinstance(x, str) for x in g) for g in supers
    ):
        raise EditError(f"supernodes in {where} must be a list of [label, node_id, ...] string lists")
    return {"pinnedIds": list(pinned), "supernodes": [list(g) for g in supers]}


def strongest_inputs(graph, target: str | int | None = None, k: int = 1, *, label: str | None = None) -> Supernode:
    """The `k` feature nodes with the strongest positive direct edges A[target, s] into `target` (a
    node id or row index; default: the most likely logit, i.e. the model's answer), strongest first,
    as a Supernode: a starting point for an intervention picked by the graph, not by hand."""
    nodes = graph.nodes
    t = _target_row(graph, target)
    adj = graph.adjacency
    weights = np.asarray(adj[[t], :].toarray() if sp.issparse(adj) else adj[t]).ravel()  # [n_nodes]
    feats = np.asarray(graph.feature_indices)
    w = weights[feats]
    order = np.argsort(-w, kind="stable")
    chosen = [int(feats[i]) for i in order[: max(int(k), 0)] if w[i] > 0]
    if not chosen:
        raise EditError(f"no feature has a positive edge into node {nodes['node_id'].iloc[t]!r}")
    ids = [str(nodes["node_id"].iloc[i]) for i in chosen]
    name = label if label is not None else f"top {len(ids)} into {str(nodes['token'].iloc[t])!r}"
    return Supernode(name, tuple(ids))


def _target_row(graph, target: str | int | None) -> int:
    if target is None:
        logits = np.asarray(graph.logit_indices)
        if not logits.size:
            raise EditError("the graph has no logit nodes: give a target node id")
        return int(logits[np.argmax(graph.nodes["logit_prob"].to_numpy()[logits])])
    if isinstance(target, str):
        try:
            return graph.index_of(target)
        except KeyError:
            raise EditError(f"target {target!r} is not a node of the graph") from None
    if not 0 <= int(target) < graph.n_nodes:
        raise EditError(f"target row {target} out of range for a graph of {graph.n_nodes} nodes")
    return int(target)
