"""Neuronpedia graph JSON (SPEC §4): exporter, atomic writer and validating reader.

Output validates against schema/neuronpedia-graph-schema.json (Neuronpedia's own schema, Apache-2.0)
and follows circuit-tracer's node conventions so the same viewers load our graphs.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from ..atomic import atomic_write_json
from .graph import _json_default
from .ids import cantor_pair, node_ids

if TYPE_CHECKING:
    from .graph import Graph
    from .prune import PruneResult

__all__ = [
    "FEATURE_TYPES",
    "GENERATOR_NAME",
    "SCHEMA_PATH",
    "graph_schema",
    "load_json",
    "process_token",
    "to_neuronpedia",
    "validate",
    "write_json",
]

GENERATOR_NAME = "circuit-trace"
SCHEMA_PATH = Path(__file__).with_name("schema") / "neuronpedia-graph-schema.json"

# The viewers key behaviour on these exact strings. Features are "cross layer transcoder" for PLTs
# too, as in circuit-tracer: the schema only lists examples, and SPEC §4 allows these four.
FEATURE_TYPES = {
    "feature": "cross layer transcoder",
    "error": "mlp reconstruction error",
    "embedding": "embedding",
    "logit": "logit",
}


def process_token(token: str) -> str:
    """Make whitespace tokens visible in the viewer, as circuit-tracer does."""
    return token.replace("\n", "⏎").replace("\t", "→").replace("\r", "↵")


def _finite_or_none(x: float) -> float | None:
    # JSON has no NaN/inf; the schema allows null for influence and activation.
    x = float(x)
    return x if math.isfinite(x) else None


def _generator_version() -> str:
    try:
        from importlib.metadata import version

        return version("circuit-trace")
    except Exception:  # not installed (running from a checkout)
        return "unknown"


def _js_node_id(kind: str, layer: int, feature: int, pos: int, token_slot: int) -> str:
    # circuit-tracer's jsNodeId formats: features share one id across positions (the viewer groups
    # them); errors put -1 in the feature slot and the position last so none alias each other.
    if kind == "feature":
        return f"{layer}_{feature}-0"
    if kind == "error":
        return f"{layer}_-1-{pos}"
    if kind == "embedding":
        return f"E_{token_slot}-{pos}"
    return f"L_{token_slot}-{pos}"


def to_neuronpedia(
    graph: Graph,
    result: PruneResult | None = None,
    *,
    slug: str,
    scan: str | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    info: dict | None = None,
    supernodes: Iterable[Sequence[Any]] | None = None,
    pinned_ids: Iterable[str] | None = None,
    clicked_id: str = "",
    sg_pos: str = "",
) -> dict:
    """Neuronpedia graph dict of the kept nodes and edges of `graph`.

    result: a PruneResult of `graph` (pruned here with the thresholds when None).
    supernodes: [label, id, id, ...] lists or (label, [ids]) pairs. Ids (pinned or in supernodes)
    may be Neuronpedia ids or node-table ids; ids not among the kept nodes raise ValueError.
    """
    from .prune import prune

    if result is None:
        result = prune(graph, node_threshold, edge_threshold)
    if result.node_mask.shape != (graph.n_nodes,):
        raise ValueError("the PruneResult belongs to a graph with a different number of nodes")
    nodes = graph.nodes
    L = int(graph.n_layers)
    kinds = nodes["kind"].to_numpy(dtype=object)
    layers = nodes["layer"].to_numpy(dtype=np.int64)
    features = nodes["feature"].to_numpy(dtype=np.int64)
    positions = nodes["pos"].to_numpy(dtype=np.int64)
    token_ids = nodes["token_id"].to_numpy(dtype=np.int64)
    np_ids = node_ids(list(kinds), layers, features, positions, token_ids, L)
    # token slot of each logit id (custom targets get negative slots; see ids.node_ids)
    slots = [
        int(i.rsplit("_", 2)[1]) if k in ("logit", "embedding") else 0
        for i, k in zip(np_ids, kinds)
    ]

    kept = np.flatnonzero(result.node_mask)
    influence = result.cumulative_influence
    logit_rows = np.flatnonzero(kinds == "logit")
    # The most probable logit is the target the viewer opens on (circuit-tracer: the first logit).
    probs = nodes["logit_prob"].to_numpy(dtype=np.float64)
    top_logit = int(logit_rows[np.argmax(probs[logit_rows])]) if logit_rows.size else -1

    labels = nodes["label"].tolist()
    tokens = nodes["token"].tolist()
    activations = nodes["activation"].to_numpy(dtype=np.float64)
    out_nodes = []
    for i in kept.tolist():
        kind = kinds[i]
        layer, feature, pos = int(layers[i]), int(features[i]), int(positions[i])
        label = labels[i] if isinstance(labels[i], str) else ""  # missing labels are NaN
        node: dict[str, Any] = {"node_id": np_ids[i]}
        if kind == "feature":
            node.update(feature=cantor_pair(layer, feature), layer=str(layer))
        elif kind == "error":
            node.update(feature=-1, layer=str(layer))
        elif kind == "embedding":
            node.update(feature=pos, layer="E")
        else:
            node.update(feature=slots[i], layer=str(L + 1))
        prob = float(probs[i]) if kind == "logit" else 0.0
        if kind == "logit":
            clerp = f'Output "{process_token(str(tokens[i]))}" (p={prob:.3f})'
        else:
            clerp = label
        node.update(
            ctx_idx=pos,
            feature_type=FEATURE_TYPES[kind],
            jsNodeId=_js_node_id(kind, layer, feature, pos, slots[i]),
            clerp=clerp,
            influence=_finite_or_none(influence[i]),
            activation=_finite_or_none(activations[i]),
            token_prob=prob,
            is_target_logit=bool(i == top_logit),
        )
        out_nodes.append(node)

    # Links: kept edges between kept nodes, weight = A[target, source].
    em = result.edge_mask
    tgt = np.repeat(np.arange(em.shape[0]), np.diff(em.indptr))[em.data]
    src = em.indices[em.data].astype(np.int64)
    both = result.node_mask[tgt] & result.node_mask[src]
    tgt, src = tgt[both], src[both]
    if sp.issparse(graph.adjacency):
        weights = np.asarray(graph.adjacency[tgt, src], dtype=np.float64).ravel()
    else:
        weights = graph.adjacency[tgt, src].astype(np.float64)
    if not np.all(np.isfinite(weights)):
        raise ValueError("graph has non-finite edge weights; JSON cannot hold them")
    links = [
        {"source": np_ids[s], "target": np_ids[t], "weight": w}
        for s, t, w in zip(src.tolist(), tgt.tolist(), weights.tolist())
    ]

    # Ids given by the caller: accept table ids too, map them to the exported ids.
    table_ids = nodes["node_id"].astype(str).tolist()
    to_np = {np_ids[i]: np_ids[i] for i in kept.tolist()}
    to_np.update({table_ids[i]: np_ids[i] for i in kept.tolist()})

    def resolve(ids: Iterable[str], what: str) -> list[str]:
        out = []
        for x in ids:
            if x not in to_np:
                raise ValueError(f"{what} id {x!r} is not a kept node of this graph")
            out.append(to_np[x])
        return out

    pinned = resolve(pinned_ids or [], "pinned")
    supers: list[list[str]] = []
    for sn in supernodes or []:
        sn = list(sn)
        if len(sn) == 2 and not isinstance(sn[1], str):
            label, members = sn[0], list(sn[1])  # (label, [ids]) form
        else:
            label, members = sn[0], sn[1:]
        supers.append([str(label), *resolve(members, f"supernode {label!r}")])
    if clicked_id:
        clicked_id = resolve([clicked_id], "clicked")[0]

    gen_info = {"name": GENERATOR_NAME, "version": _generator_version()}
    meta_info: dict[str, Any] = {"generator": gen_info, "create_time_ms": int(time.time() * 1000)}
    for key, value in (info or {}).items():
        if key == "generator" and isinstance(value, dict):
            meta_info["generator"] = {**gen_info, **value, "name": GENERATOR_NAME}
        else:
            meta_info[key] = value
    generation_settings = json.loads(json.dumps(dict(graph.settings), default=_json_default))
    generation_settings.setdefault("transcoder_id", graph.transcoder_id)
    generation_settings.setdefault("is_cross_layer", bool(graph.is_cross_layer))

    return {
        "metadata": {
            "slug": slug,
            "scan": scan if scan is not None else graph.model_id,
            "prompt": graph.prompt,
            "prompt_tokens": [process_token(t) for t in graph.tokens],
            "schema_version": 1,
            "node_threshold": float(result.node_threshold),
            "info": meta_info,
            "generation_settings": generation_settings,
            "pruning_settings": {
                "node_threshold": float(result.node_threshold),
                "edge_threshold": float(result.edge_threshold),
            },
        },
        "qParams": {
            "pinnedIds": pinned,
            "supernodes": supers,
            "linkType": "both",
            "clickedId": clicked_id,
            "sg_pos": sg_pos,
        },
        "nodes": out_nodes,
        "links": links,
    }


@lru_cache(maxsize=1)
def graph_schema() -> dict:
    """The Neuronpedia graph JSON schema (draft-07) shipped with the package."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate(data: dict) -> None:
    """Raise if `data` is not a loadable graph: schema errors (jsonschema.ValidationError when
    jsonschema is installed), duplicate node ids, or links naming unknown nodes (ValueError)."""
    try:
        import jsonschema
    except ImportError:  # runtime installs lack the dev extra: keep the structural checks below
        jsonschema = None
    if jsonschema is not None:
        jsonschema.Draft7Validator(graph_schema()).validate(data)
    else:
        for key in ("metadata", "qParams", "nodes", "links"):
            if key not in data:
                raise ValueError(f"graph JSON lacks top-level key {key!r}")
    ids = [n["node_id"] for n in data["nodes"]]
    if len(set(ids)) != len(ids):
        raise ValueError("graph JSON has duplicate node ids")
    known = set(ids)
    for link in data["links"]:
        for end in ("source", "target"):
            if link[end] not in known:
                raise ValueError(f"link {end} {link[end]!r} is not a node of the graph")


def write_json(data: dict, path: str | os.PathLike) -> None:
    """Write compact UTF-8 JSON atomically (temp file + os.replace). NaN/inf are refused."""
    atomic_write_json(path, data, compact=True)


def load_json(path: str | os.PathLike, validate_schema: bool = True) -> dict:
    """Read a Neuronpedia graph JSON file, validating it unless told not to."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if validate_schema:
        validate(data)
    return data
