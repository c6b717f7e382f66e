"""Tracing one prompt of a sweep: attribute, prune, render graph + JSON, and its summary row.

The row file is written last and atomically: its presence is what marks a prompt as finished."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_json
from ..graphs.defaults import DESIRED_LOGIT_PROB, EDGE_THRESHOLD, MAX_N_LOGITS, NODE_THRESHOLD
from .prompts import PromptSpec

GRAPHS_DIR, JSON_DIR, ROWS_DIR = "graphs", "json", "rows"


@dataclass(frozen=True)
class SweepOptions:
    """Attribution and pruning settings applied to every prompt of a sweep (recorded in sweep.json;
    a resumed sweep must use the same ones)."""

    max_feature_nodes: int | None = None
    max_n_logits: int = MAX_N_LOGITS
    desired_logit_prob: float = DESIRED_LOGIT_PROB
    batch_size: int | None = None
    node_threshold: float = NODE_THRESHOLD
    edge_threshold: float = EDGE_THRESHOLD
    save_full_graph: bool = False  # the full graph is 35-1000x the pruned one (hundreds of MB at 7,500 features)
    gzip_json: bool = False  # json/<key>.json.gz: Neuronpedia JSON of dense graphs shrinks ~4x


def row_path(out: Path, spec: PromptSpec) -> Path:
    return out / ROWS_DIR / f"{spec.key}.json"


def _feature_influence(pruned) -> list[list]:
    """[[layer, feature, influence summed over positions, label], ...] for the pruned graph's features;
    influence is the node's logit influence in the full graph (PruneResult.node_influence)."""
    g = pruned.graph
    kept = np.flatnonzero(pruned.node_mask)  # full-graph indices of g's nodes, in order
    feats = np.flatnonzero(g.nodes["kind"].to_numpy() == "feature")
    totals: dict[tuple[int, int], float] = {}
    labels: dict[tuple[int, int], str] = {}
    for i in feats:
        key = (int(g.nodes["layer"].iat[i]), int(g.nodes["feature"].iat[i]))
        totals[key] = totals.get(key, 0.0) + float(pruned.node_influence[kept[i]])
        labels[key] = str(g.nodes["label"].iat[i])
    return [[layer, feature, infl, labels[(layer, feature)]] for (layer, feature), infl in sorted(totals.items())]


def _graph_row(graph, pruned) -> dict:
    top = graph.logit_nodes().iloc[0]
    scores = graph.scores()
    return {
        "n_tokens": len(graph.input_ids),
        "top_token": str(top["token"]),
        "top_prob": float(top["logit_prob"]),
        "replacement": float(scores.replacement),
        "completeness": float(scores.completeness),
        "n_nodes": int(graph.n_nodes),
        "n_edges": int(graph.n_edges),
        "n_nodes_pruned": int(pruned.graph.n_nodes),
        "n_edges_pruned": int(pruned.graph.n_edges),
    }


def _render_outputs(graph, pruned, spec: PromptSpec, options: SweepOptions) -> dict[str, bytes]:
    """The prompt's files as bytes keyed by path relative to the sweep directory. Workers return
    bytes rather than writing, so a multi-node cluster needs no shared filesystem."""
    files = {}
    with tempfile.TemporaryDirectory(prefix="ct-sweep-") as tmp:
        gpath, jpath = Path(tmp) / "graph.safetensors", Path(tmp) / "graph.json"
        (graph if options.save_full_graph else pruned.graph).save(gpath)
        graph.to_json(
            jpath,
            slug=spec.key,
            node_threshold=options.node_threshold,
            edge_threshold=options.edge_threshold,
            pruned=pruned,
        )
        files[f"{GRAPHS_DIR}/{spec.key}.safetensors"] = gpath.read_bytes()
        if options.gzip_json:
            files[f"{JSON_DIR}/{spec.key}.json.gz"] = gzip.compress(jpath.read_bytes(), compresslevel=6)
        else:
            files[f"{JSON_DIR}/{spec.key}.json"] = jpath.read_bytes()
    return files


def trace_prompt(rm, spec: PromptSpec, options: SweepOptions, worker: str = "main") -> tuple[dict, dict[str, bytes]]:
    """Trace one prompt: (summary row, files). A prompt-level failure becomes the row's `error`."""
    from ..api import attribute
    from ..graphs import prune

    t0 = time.perf_counter()
    row: dict = {
        "key": spec.key,
        "index": spec.index,
        "prompt": spec.prompt,
        "targets": json.dumps(list(spec.targets), ensure_ascii=False),
        "error": "",
        "worker": worker,
    }
    files: dict[str, bytes] = {}
    try:
        graph = attribute(
            rm,
            spec.prompt,
            targets=list(spec.targets) or None,
            max_feature_nodes=options.max_feature_nodes,
            max_n_logits=options.max_n_logits,
            desired_logit_prob=options.desired_logit_prob,
            batch_size=options.batch_size,
            progress=False,
        )
        pruned = prune(graph, node_threshold=options.node_threshold, edge_threshold=options.edge_threshold)
        row.update(_graph_row(graph, pruned))
        files = _render_outputs(graph, pruned, spec, options)
        gfile, jfile = sorted(files)  # "graphs/..." < "json/..."
        row.update(graph_file=gfile, json_file=jfile, graph_bytes=len(files[gfile]), json_bytes=len(files[jfile]))
        row["features"] = _feature_influence(pruned)
    except ValueError as exc:  # the prompt's own fault (PromptError, TargetError): too long, bad target
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    except Exception as exc:  # noqa: BLE001 - recorded with its traceback so one odd prompt never stops thousands
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        row["traceback"] = traceback.format_exc(limit=8)
    row["seconds"] = time.perf_counter() - t0
    return row, files


def write_result(out: Path, spec: PromptSpec, row: dict, files: dict[str, bytes]) -> None:
    """Files first, the row last (atomically): a row on disk means the prompt is finished."""
    for rel, payload in files.items():
        atomic_write_bytes(out / rel, payload)
    atomic_write_json(row_path(out, spec), row)


CRASH_ENV = "CIRCUIT_TRACE_SWEEP_CRASH_ONCE"


def crash_hook() -> None:
    """Fault injection for the tests: when CIRCUIT_TRACE_SWEEP_CRASH_ONCE names an existing file,
    the first worker process that manages to delete it dies at once (as a killed worker would)."""
    token = os.environ.get(CRASH_ENV)
    if not token:
        return
    try:
        os.unlink(token)
    except FileNotFoundError:
        return
    os._exit(1)
