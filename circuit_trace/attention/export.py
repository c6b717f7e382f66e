"""Attach heads and QK contributors to a graph, in Neuronpedia's `qk_tracing_results` form.

`attach_attention(model, graph)` takes the graph's strongest cross-position edges, their top heads
by |loading|, and for each (target, head) the QK attribution of the direct hop: query at the
target's position, key at the source's. The result is a plain JSON-able dict stored in
`graph.settings["attention"]` (so it survives `save`/`load` and pruning); the Neuronpedia writer
copies it into `nodes[].qk_tracing_results` and the top-level `qk_only_nodes`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..graphs import Graph
from ..graphs.ids import cantor_pair
from .components import record_residuals
from .loadings import cross_position_edges, head_loadings_top
from .qk import QKAttribution, qk_attribution_local

__all__ = ["attach_attention", "ATTENTION_KEY"]

ATTENTION_KEY = "attention"  # graph.settings key of the payload
PAYLOAD_VERSION = 1


def _num(x: float) -> float:
    x = float(x)
    return x if math.isfinite(x) else 0.0


def _descriptor(row: Any, tokens: list[int], activations: dict[str, float]) -> dict:
    """A Neuronpedia node descriptor (the `qk_only_nodes` entry) of one QK component."""
    kind, layer, pos, feat, cid = row["kind"], int(row["layer"]), int(row["pos"]), int(row["feature"]), row["id"]
    base = {"node_id": cid, "ctx_idx": pos, "clerp": str(row["label"]), "activation": activations.get(cid)}
    if kind == "feature":
        return {
            **base,
            "feature": cantor_pair(layer, feat),
            "layer": str(layer),
            "feature_type": "cross layer transcoder",
            "jsNodeId": f"{layer}_{feat}-0",
        }
    if kind == "error":
        return {
            **base,
            "feature": -1,
            "layer": str(layer),
            "feature_type": "mlp reconstruction error",
            "jsNodeId": f"{layer}_-1-{pos}",
        }
    if kind == "embedding":
        return {**base, "feature": pos, "layer": "E", "feature_type": "embedding", "jsNodeId": f"E_{tokens[pos]}-{pos}"}
    return {**base, "feature": None, "layer": str(max(layer, 0)), "feature_type": str(kind), "jsNodeId": f"{cid}-{pos}"}


def _kept_edges(graph: Graph, n_edges: int, thresholds: tuple[float, float] | None) -> pd.DataFrame:
    """cross_position_edges of the pruned graph, indexed in `graph`."""
    if thresholds is None:
        return cross_position_edges(graph, n_edges)
    edges = cross_position_edges(graph.prune(*thresholds).graph, n_edges)
    index = {node_id: i for i, node_id in enumerate(graph.nodes["node_id"])}
    return edges.assign(source_index=edges["source"].map(index), target_index=edges["target"].map(index))


def _lists(r: QKAttribution, n: int) -> dict:
    return {
        "pair_wise_contributors": [[a, b, _num(v)] for a, b, v in r.pairs.head(n).itertuples(index=False)],
        "top_q_marginal_contributors": [[a, _num(v)] for a, v in r.query_marginal.head(n).itertuples(index=False)],
        "top_k_marginal_contributors": [[a, _num(v)] for a, v in r.key_marginal.head(n).itertuples(index=False)],
    }


def _edge_entry(s: str, t: str, df: pd.DataFrame, n_heads: int) -> dict:
    """One edge of the payload: its weight, bypass loadings by layer and its top heads by |loading|."""
    heads = df[df["kind"] == "head"]
    top = heads.iloc[np.argsort(-np.abs(np.asarray(heads["loading"], dtype=float)), kind="stable")[:n_heads]]
    bypass = df.loc[df["kind"] == "bypass", ["layer", "loading"]]
    return {
        "source": s,
        "target": t,
        "edge": _num(df["edge"].iloc[0]),
        "bypass": {str(int(m)): _num(v) for m, v in bypass.itertuples(index=False)},
        "heads": [
            {"layer": int(m), "head": int(h), "loading": _num(v)}
            for m, h, v in top[["layer", "head", "loading"]].itertuples(index=False)
        ],
    }


def _head_detail(head: dict, s: str, key: tuple[int, int, int, int], r: QKAttribution, n: int) -> dict:
    """One (edge, head)'s QK result: scores and its top `n` pair and marginal contributors."""
    return {
        **head,
        "source": s,
        "query_pos": key[2],
        "key_pos": key[3],
        "score": _num(r.score),
        "capped_score": _num(r.capped_score),
        "pattern": _num(r.pattern),
        **_lists(r, n),
    }


def _referenced(results: dict) -> set[str]:
    """Ids of every contributor named in the targets' lists and their heads' lists."""
    referenced = set()
    for node in results.values():
        for lists in [node, *node["heads"]]:
            referenced.update(x for item in lists["pair_wise_contributors"] for x in item[:2])
            for name in ("top_q_marginal_contributors", "top_k_marginal_contributors"):
                referenced.update(item[0] for item in lists[name])
    return referenced


def attach_attention(
    model,
    graph: Graph,
    n_edges: int = 20,
    n_heads: int = 2,
    n_contributors: int = 10,
    *,
    thresholds: tuple[float, float] | None = (0.8, 0.98),
    edges: pd.DataFrame | None = None,
    progress: bool = False,
) -> dict:
    """Head loadings of the `n_edges` strongest cross-position edges that survive pruning at
    `thresholds` (node, edge; None: of the whole graph), or of `edges` (a `cross_position_edges`
    frame), and, for each edge's `n_heads` top heads, the top `n_contributors` QK pairs and
    marginals. Stores and returns the payload (`graph.settings["attention"]`):
    {"edges": [...], "qk_tracing_results": {target id: {...}}, "contributors": {id: descriptor}}.
    Each target's three Neuronpedia lists are those of its strongest (edge, head); "heads" lists all.
    Cost: `head_loadings_top` for the edges plus one QK capture pass per distinct (head, q, k)."""
    if edges is None:
        edges = _kept_edges(graph, n_edges, thresholds)
    loads = head_loadings_top(model, graph, edges=edges, progress=progress)
    lr = model.local_context(list(graph.input_ids))
    res = record_residuals(lr)
    pos = dict(zip(graph.nodes["node_id"], graph.nodes["pos"].astype(int)))
    out_edges, results, rows = [], {}, {}
    cache: dict[tuple, QKAttribution] = {}
    for key, df in loads.groupby(["source", "target"], sort=False):
        s, t = str(key[0]), str(key[1])  # type: ignore[index]
        out_edges.append(_edge_entry(s, t, df, n_heads))
        for head in out_edges[-1]["heads"]:
            qk = (head["layer"], head["head"], pos[t], pos[s])
            if qk not in cache:
                cache[qk] = qk_attribution_local(lr, *qk, residuals=res)
            r = cache[qk]
            rows.update((row["id"], row) for _, row in r.components.iterrows())
            node = results.setdefault(t, {"heads": [], "_best": -1.0})
            node["heads"].append(_head_detail(head, s, qk, r, n_contributors))
            if abs(head["loading"]) > node["_best"]:
                node.update(_best=abs(head["loading"]), **_lists(r, n_contributors))
    for node in results.values():
        node.pop("_best")
    feats = graph.nodes[graph.nodes["kind"] == "feature"]
    acts = dict(zip(feats["node_id"], feats["activation"].astype(float)))
    contributors = {i: _descriptor(rows[i], list(graph.input_ids), acts) for i in sorted(_referenced(results))}
    payload = {
        "version": PAYLOAD_VERSION,
        "edges": out_edges,
        "qk_tracing_results": results,
        "contributors": contributors,
        "note": "QK scores are pre-softmax and, for Gemma-2, pre-softcap; query at the target's "
        "position, key at the source's",
    }
    graph.settings[ATTENTION_KEY] = payload
    return payload
