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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import scipy.sparse as sp

from ..atomic import atomic_write_json
from .defaults import EDGE_THRESHOLD, NODE_THRESHOLD
from .graph import json_default
from .ids import cantor_pair, node_ids
from .influence import as_csr, influence, normalize, row_of_entries

if TYPE_CHECKING:
    from .graph import Graph
    from .prune import PruneResult

__all__ = [
    "FEATURE_TYPES",
    "GENERATOR_NAME",
    "SCHEMA_PATH",
    "graph_from_dict",
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


# circuit-tracer's jsNodeId formats: features share one id across positions (the viewer groups
# them); errors put -1 in the feature slot and the position last so none alias each other.
_JS_NODE_ID = {
    "feature": "{layer}_{feature}-0",
    "error": "{layer}_-1-{pos}",
    "embedding": "E_{slot}-{pos}",
    "logit": "L_{slot}-{pos}",
}


def _js_node_id(kind: str, layer: int, feature: int, pos: int, token_slot: int) -> str:
    return _JS_NODE_ID[kind].format(layer=layer, feature=feature, pos=pos, slot=token_slot)


# Default widths of the exported graph: the file carries every node and link kept at these looser
# thresholds, so a viewer can re-prune in the browser anywhere between them and the defaults.
EXPORT_NODE_THRESHOLD = 0.9
EXPORT_EDGE_THRESHOLD = 0.99
# Optional label columns of the node table, written to the JSON when a node has them.
LABEL_EXTRAS = ("label_score", "label_evidence")


def to_neuronpedia(
    graph: Graph,
    result: PruneResult | None = None,
    *,
    slug: str,
    scan: str | None = None,
    node_threshold: float = NODE_THRESHOLD,
    edge_threshold: float = EDGE_THRESHOLD,
    info: dict | None = None,
    supernodes: Iterable[Sequence[Any]] | None = None,
    pinned_ids: Iterable[str] | None = None,
    clicked_id: str = "",
    sg_pos: str = "",
    prune: bool = True,
    view_thresholds: tuple[float, float] | None = None,
) -> dict:
    """Neuronpedia graph dict of the kept nodes and edges of `graph`.

    result: a PruneResult of `graph` naming the exported nodes and edges (pruned here with the
    thresholds when None). prune=False exports every node and edge of `graph` as it is (a graph
    that is already pruned). view_thresholds: the (node, edge) thresholds a viewer opens at
    (`metadata.node_threshold`); default: the export's own. supernodes: [label, id, id, ...] lists
    or (label, [ids]) pairs. Ids (pinned or in supernodes) may be Neuronpedia ids or node-table ids;
    ids not among the kept nodes raise ValueError.

    Beyond the schema's required fields, every node carries `node_influence` (wᵀB + w, higher =
    more important; `influence` is Neuronpedia's cumulative share, lower = more important) and every
    link its `score` (SPEC §4 edge score Â'[t, s]·score'(t) on the exported node set).
    """
    sel = _selection(graph, result, prune, node_threshold, edge_threshold)
    view = view_thresholds if view_thresholds is not None else (sel.node_threshold, sel.edge_threshold)
    np_ids = _np_ids(graph)
    out_nodes = _node_dicts(graph, sel, np_ids)
    links = _link_dicts(graph, sel, np_ids)
    qk_only = _attach_qk(out_nodes, graph.settings.get("attention"))
    resolve = _id_resolver(graph, sel.kept, np_ids)
    pinned = resolve(pinned_ids or [], "pinned")
    supers = _supernode_lists(supernodes, resolve)
    if clicked_id:
        clicked_id = resolve([clicked_id], "clicked")[0]
    return {
        "metadata": _metadata(graph, sel, view, slug=slug, scan=scan, info=info),
        "qParams": {
            "pinnedIds": pinned,
            "supernodes": supers,
            "linkType": "both",
            "clickedId": clicked_id,
            "sg_pos": sg_pos,
        },
        "nodes": out_nodes,
        "links": links,
        **({"qk_only_nodes": qk_only} if qk_only is not None else {}),
    }


def _attach_qk(out_nodes: list[dict], payload: dict | None) -> dict | None:
    """Copy an attention payload (`circuit_trace.attention.attach_attention`, kept in
    graph.settings["attention"]) into the exported nodes' `qk_tracing_results`; returns the
    `qk_only_nodes` descriptors of referenced contributors that are not exported nodes (None: no
    payload). Results of targets that were pruned away are dropped."""
    if not payload:
        return None
    results, descriptors = payload.get("qk_tracing_results", {}), payload.get("contributors", {})
    exported = {n["node_id"] for n in out_nodes}
    referenced: set[str] = set()
    for node in out_nodes:
        res = results.get(node["node_id"])
        if res is None:
            continue
        node["qk_tracing_results"] = res
        for part in [res, *res.get("heads", [])]:
            referenced.update(i for item in part.get("pair_wise_contributors", []) for i in item[:2])
            for name in ("top_q_marginal_contributors", "top_k_marginal_contributors"):
                referenced.update(item[0] for item in part.get(name, []))
    return {i: descriptors[i] for i in sorted(referenced - exported) if i in descriptors}


@dataclass
class _Selection:
    """What one export writes: kept rows [k] of the graph, kept edges (targets, sources) [E],
    per-node scores [N] and the thresholds the selection was made at (None: not pruned here)."""

    kept: np.ndarray
    tgt: np.ndarray
    src: np.ndarray
    node_influence: np.ndarray
    cumulative: np.ndarray
    node_threshold: float | None
    edge_threshold: float | None


def _selection(
    graph: Graph, result: PruneResult | None, prune: bool, node_threshold: float, edge_threshold: float
) -> _Selection:
    from .prune import prune as prune_graph

    if not prune:
        csr = as_csr(graph.adjacency)
        score, cumulative = graph.influence_columns()
        done = graph.pruning or {}  # an unpruned graph is all of itself: thresholds 1.0
        return _Selection(
            np.arange(graph.n_nodes),
            row_of_entries(csr),
            csr.indices.astype(np.int64),
            score,
            cumulative,
            done.get("node_threshold", 1.0),
            done.get("edge_threshold", 1.0),
        )
    if result is None:
        result = prune_graph(graph, node_threshold, edge_threshold)
    if result.node_mask.shape != (graph.n_nodes,):
        raise ValueError("the PruneResult belongs to a graph with a different number of nodes")
    em = result.edge_mask
    keep = cast(np.ndarray, em.data)  # [nnz] bool: which stored edges the pruning kept
    tgt = row_of_entries(em)[keep]
    src = em.indices[keep].astype(np.int64)
    both = result.node_mask[tgt] & result.node_mask[src]
    return _Selection(
        np.flatnonzero(result.node_mask),
        tgt[both],
        src[both],
        result.node_influence,
        result.cumulative_influence,
        float(result.node_threshold),
        float(result.edge_threshold),
    )


def _np_ids(graph: Graph) -> list[str]:
    nodes = graph.nodes
    return node_ids(
        nodes["kind"].tolist(), nodes["layer"].to_numpy(dtype=np.int64),
        nodes["feature"].to_numpy(dtype=np.int64), nodes["pos"].to_numpy(dtype=np.int64),
        nodes["token_id"].to_numpy(dtype=np.int64), int(graph.n_layers),
    )  # fmt: skip


def _label_extras(nodes: Any, i: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in LABEL_EXTRAS:
        if col not in nodes.columns:
            continue
        v = nodes[col].iat[i]
        if isinstance(v, (float, np.floating, int, np.integer)) and not isinstance(v, bool):
            if math.isfinite(float(v)):
                out[col] = float(v)
        elif isinstance(v, (str, list, dict)) and v:
            out[col] = json.loads(json.dumps(v, default=json_default))
    return out


def _node_dicts(graph: Graph, sel: _Selection, np_ids: list[str]) -> list[dict]:
    nodes = graph.nodes
    L = int(graph.n_layers)
    kinds = nodes["kind"].to_numpy(dtype=object)
    layers = nodes["layer"].to_numpy(dtype=np.int64)
    features = nodes["feature"].to_numpy(dtype=np.int64)
    positions = nodes["pos"].to_numpy(dtype=np.int64)
    # token slot of each logit/embedding id (custom targets get negative slots; see ids.node_ids)
    slots = [int(i.rsplit("_", 2)[1]) if k in ("logit", "embedding") else 0 for i, k in zip(np_ids, kinds)]
    logit_rows = np.flatnonzero(kinds == "logit")
    # The most probable logit is the target the viewer opens on (circuit-tracer: the first logit).
    probs = nodes["logit_prob"].to_numpy(dtype=np.float64)
    top_logit = int(logit_rows[np.argmax(probs[logit_rows])]) if logit_rows.size else -1
    labels = nodes["label"].tolist()
    tokens = nodes["token"].tolist()
    activations = nodes["activation"].to_numpy(dtype=np.float64)
    out = []
    for i in sel.kept.tolist():
        kind = cast(str, kinds[i])  # object array of kind names
        layer, feature, pos = int(layers[i]), int(features[i]), int(positions[i])
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
            clerp = labels[i] if isinstance(labels[i], str) else ""  # missing labels are NaN
        node.update(
            ctx_idx=pos,
            feature_type=FEATURE_TYPES[kind],
            jsNodeId=_js_node_id(kind, layer, feature, pos, slots[i]),
            clerp=clerp,
            influence=_finite_or_none(sel.cumulative[i]),  # pyright: ignore[reportArgumentType]  # numpy scalar, not array
            node_influence=_finite_or_none(sel.node_influence[i]),  # pyright: ignore[reportArgumentType]  # numpy scalar, not array
            activation=_finite_or_none(activations[i]),  # pyright: ignore[reportArgumentType]  # numpy scalar, not array
            token_prob=prob,
            is_target_logit=bool(i == top_logit),
            **_label_extras(nodes, i),
        )
        out.append(node)
    return out


def _edge_scores(graph: Graph, sel: _Selection) -> np.ndarray:
    """SPEC §4 edge score of each exported edge [E]: Â' is |A| row-normalised over the exported
    nodes (all their edges, kept or not), score' = wᵀ(I - Â')⁻¹ on that node set."""
    csr = as_csr(graph.adjacency)
    alive = np.zeros(graph.n_nodes, dtype=bool)
    alive[sel.kept] = True
    rows = row_of_entries(csr)
    keep = alive[rows] & alive[csr.indices]
    sub = sp.csr_array((np.where(keep, csr.data, 0.0), csr.indices, csr.indptr), shape=csr.shape)
    sub.eliminate_zeros()
    ahat = normalize(sub)
    score = influence(ahat, graph.logit_weights()) + graph.logit_weights()
    return np.asarray(ahat[sel.tgt, sel.src], dtype=np.float64).ravel() * score[sel.tgt]


def _link_dicts(graph: Graph, sel: _Selection, np_ids: list[str]) -> list[dict]:
    """Links: kept edges between kept nodes, weight = A[target, source], strongest |weight| first
    (a viewer that thins a large graph can draw them in file order)."""
    tgt, src = sel.tgt, sel.src
    if sp.issparse(graph.adjacency):
        weights = np.asarray(graph.adjacency[tgt, src], dtype=np.float64).ravel()
    else:
        weights = graph.adjacency[tgt, src].astype(np.float64)
    if not np.all(np.isfinite(weights)):
        raise ValueError("graph has non-finite edge weights; JSON cannot hold them")
    scores = _edge_scores(graph, sel) if tgt.size else np.zeros(0)
    order = np.argsort(-np.abs(weights), kind="stable")
    return [
        {"source": np_ids[s], "target": np_ids[t], "weight": w, "score": _finite_or_none(e)}
        for s, t, w, e in zip(src[order].tolist(), tgt[order].tolist(), weights[order].tolist(), scores[order].tolist())
    ]


def _id_resolver(graph: Graph, kept: np.ndarray, np_ids: list[str]):
    # Ids given by the caller: accept table ids too, map them to the exported ids.
    table_ids = graph.nodes["node_id"].astype(str).tolist()
    to_np = {np_ids[i]: np_ids[i] for i in kept.tolist()}
    to_np.update({table_ids[i]: np_ids[i] for i in kept.tolist()})

    def resolve(ids: Iterable[str], what: str) -> list[str]:
        out = []
        for x in ids:
            if x not in to_np:
                raise ValueError(f"{what} id {x!r} is not a kept node of this graph")
            out.append(to_np[x])
        return out

    return resolve


def _supernode_lists(supernodes: Iterable[Sequence[Any]] | None, resolve) -> list[list[str]]:
    supers: list[list[str]] = []
    for sn in supernodes or []:
        sn = list(sn)
        if len(sn) == 2 and not isinstance(sn[1], str):
            label, members = sn[0], list(sn[1])  # (label, [ids]) form
        else:
            label, members = sn[0], sn[1:]
        supers.append([str(label), *resolve(members, f"supernode {label!r}")])
    return supers


def _stats_info(graph: Graph) -> dict[str, Any]:
    """`graph.stats` (a dict or dataclass the attribution stage fills, e.g. what the feature cap
    dropped) as plain JSON values; non-JSON values are skipped."""
    stats = getattr(graph, "stats", None)
    if stats is None:
        stats = graph.settings.get("stats")
    if stats is not None and not isinstance(stats, dict):
        from dataclasses import asdict, is_dataclass

        stats = asdict(stats) if is_dataclass(stats) else getattr(stats, "__dict__", None)  # pyright: ignore[reportArgumentType]  # an instance, never a class
    out: dict[str, Any] = {}
    for key, value in (stats or {}).items():
        try:
            value = json.loads(json.dumps(value, default=json_default, allow_nan=False))
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out


def _metadata(graph: Graph, sel: _Selection, view: tuple, *, slug: str, scan: str | None, info: dict | None) -> dict:
    gen_info = {"name": GENERATOR_NAME, "version": _generator_version()}
    meta_info: dict[str, Any] = {"generator": gen_info, "create_time_ms": int(time.time() * 1000)}
    stats = _stats_info(graph)
    if stats:
        meta_info["stats"] = stats
    for key, value in (info or {}).items():
        if key == "generator" and isinstance(value, dict):
            meta_info["generator"] = {**gen_info, **value, "name": GENERATOR_NAME}
        else:
            meta_info[key] = value
    settings = {k: v for k, v in graph.settings.items() if k not in ("stats", "qParams", "pruned", "attention")}
    generation_settings = json.loads(json.dumps(settings, default=json_default))
    generation_settings.setdefault("transcoder_id", graph.transcoder_id)
    generation_settings.setdefault("is_cross_layer", bool(graph.is_cross_layer))
    view_node, view_edge = view
    pruning: dict[str, Any] = {}
    if view_node is not None:
        pruning["node_threshold"] = float(view_node)
    if view_edge is not None:
        pruning["edge_threshold"] = float(view_edge)
    if (sel.node_threshold, sel.edge_threshold) != (view_node, view_edge):
        # the file holds more than the default view: a viewer can re-prune up to these
        pruning["export_node_threshold"] = sel.node_threshold
        pruning["export_edge_threshold"] = sel.edge_threshold
    meta: dict[str, Any] = {
        "slug": slug,
        "scan": scan if scan is not None else graph.model_id,
        "prompt": graph.prompt,
        "prompt_tokens": [process_token(t) for t in graph.tokens],
        "schema_version": 1,
    }
    if view_node is not None:
        meta["node_threshold"] = float(view_node)
    meta.update(info=meta_info, generation_settings=generation_settings, pruning_settings=pruning)
    if graph.transcoder_id:  # details live in one folder per transcoder: never another set's
        meta["feature_details"] = {"feature_json_base_url": feature_details_base(graph.transcoder_id)}
    return meta


def feature_details_base(transcoder_id: str) -> str:
    """Relative folder of a transcoder's feature-detail files beside a graph JSON:
    "features/<id with / -> --, other unsafe characters -> ->" ("features/circuit-trace--states-clt")."""
    import re

    name = re.sub(r"[^A-Za-z0-9._-]+", "-", transcoder_id.replace("/", "--")).strip("-.")
    return "features/" + (name or "unnamed-transcoders")


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


_KIND_OF_TYPE = {v: k for k, v in FEATURE_TYPES.items()}


def _kind_of_type(feature_type: str) -> str:
    ft = str(feature_type).lower()
    if ft in _KIND_OF_TYPE:
        return _KIND_OF_TYPE[ft]
    for word, kind in (("error", "error"), ("embed", "embedding"), ("logit", "logit")):
        if word in ft:
            return kind
    return "feature"


def _node_row(n: dict, n_layers: int) -> dict[str, Any]:
    """One node-table row from a JSON node (ids parse as layer_feature_pos / E_token_pos)."""
    kind = _kind_of_type(n["feature_type"])
    parts = str(n["node_id"]).rsplit("_", 2)
    pos = int(n["ctx_idx"])
    token_id, layer, feature = -1, -1, -1
    if kind == "feature":
        layer, feature = int(parts[0]), int(parts[1])
    elif kind == "error":
        layer = int(parts[0])
    elif kind == "embedding":
        token_id = int(parts[1])
    else:
        layer, token_id = n_layers, int(parts[1])
    return {"node_id": str(n["node_id"]), "kind": kind, "layer": layer, "pos": pos,
            "feature": feature, "token_id": token_id}  # fmt: skip


def _n_layers_of(nodes: list[dict]) -> int:
    logit = [int(n["layer"]) for n in nodes if _kind_of_type(n["feature_type"]) == "logit"]
    other = [int(n["layer"]) for n in nodes if str(n["layer"]).lstrip("-").isdigit()
             and _kind_of_type(n["feature_type"]) != "logit"]  # fmt: skip
    return max(logit) - 1 if logit else (max(other) + 1 if other else 0)


def _nodes_frame(nodes: list[dict], tokens: list[str], n_layers: int):
    import pandas as pd

    rows = []
    for n in nodes:
        row = _node_row(n, n_layers)
        kind, pos = row["kind"], row["pos"]
        prob = float(n.get("token_prob") or 0.0) if kind == "logit" else 0.0
        token = tokens[pos] if kind == "embedding" and 0 <= pos < len(tokens) else ""
        if kind == "logit":
            clerp = str(n.get("clerp", ""))
            token = clerp[len('Output "') : clerp.rfind('"')] if clerp.startswith('Output "') else clerp
        score = n.get("node_influence")
        row.update(
            token=token,
            activation=float(n["activation"]) if n.get("activation") is not None else np.nan,
            logit_prob=prob,
            target_weight=float(score) if kind == "logit" and score is not None else prob,
            label="" if kind == "logit" else str(n.get("clerp", "")),
            influence=float(score) if score is not None else np.nan,
            cumulative_influence=float(n["influence"]) if n.get("influence") is not None else np.nan,
        )
        for col in LABEL_EXTRAS:
            if col in n:
                row[col] = n[col]
        rows.append(row)
    order = {"feature": 0, "error": 1, "embedding": 2, "logit": 3}  # the Graph contract's order
    rows.sort(key=lambda r: order[r["kind"]])
    return pd.DataFrame(rows)


def graph_from_dict(data: dict, cls: type | None = None) -> Graph:
    """A (pruned) Graph from a Neuronpedia graph dict; see `Graph.from_json`."""
    if cls is None:
        from .graph import Graph as cls  # noqa: N813
    meta, nodes_json = data["metadata"], data["nodes"]
    tokens = [str(t) for t in meta.get("prompt_tokens", [])]
    n_layers = _n_layers_of(nodes_json)
    nodes = _nodes_frame(nodes_json, tokens, n_layers)
    index = {nid: i for i, nid in enumerate(nodes["node_id"].tolist())}
    n = len(nodes)
    links = [(index[ln["target"]], index[ln["source"]], float(ln["weight"])) for ln in data["links"]]
    t, s, w = (np.array(x) for x in zip(*links)) if links else (np.zeros(0, int),) * 2 + (np.zeros(0),)
    adjacency = sp.csr_array((w.astype(np.float32), (t.astype(np.int64), s.astype(np.int64))), shape=(n, n))
    emb = nodes[nodes["kind"] == "embedding"].set_index("pos")["token_id"].to_dict()
    gen = dict(meta.get("generation_settings") or {})
    settings = {k: v for k, v in gen.items() if k not in ("transcoder_id", "is_cross_layer")}
    settings["qParams"] = dict(data.get("qParams") or {})
    graph = cls(
        prompt=str(meta.get("prompt", "")), input_ids=[int(emb.get(p, -1)) for p in range(len(tokens))],
        tokens=tokens, nodes=nodes, adjacency=adjacency, n_layers=n_layers,
        model_id=str(meta.get("scan", "")), transcoder_id=str(gen.get("transcoder_id", "")),
        settings=settings, is_cross_layer=bool(gen.get("is_cross_layer", False)),
    )  # fmt: skip
    ps = meta.get("pruning_settings") or {}
    view_node = ps.get("node_threshold", meta.get("node_threshold", 1.0))
    view_edge = ps.get("edge_threshold", 1.0)
    return graph.mark_pruned(
        ps.get("export_node_threshold", view_node),
        ps.get("export_edge_threshold", view_edge),
        view_node_threshold=view_node,
        view_edge_threshold=view_edge,
    )
