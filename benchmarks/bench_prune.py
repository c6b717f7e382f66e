"""Time `ct.prune`, `Graph.scores()` and `Graph.to_json` on an exported graph (dense and CSR).

    python benchmarks/bench_prune.py out/l8-plt --threads 1 --runs 3 --json out/prune-l8-plt.json
    .venv-ct/bin/python benchmarks/bench_prune.py out/l8-plt --threads 1 --circuit-tracer

Reads `ours.npz` written by `bench_attribution.py --export DIR`. With `--circuit-tracer` (run it
from `.venv-ct`) it times circuit-tracer 0.5.0's `prune_graph` on the same dense float32 matrix
instead (its node layout: features, errors, tokens, logits; only the timing is comparable, since our
graph has no position-0 error nodes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load_graph(case: Path):
    import pandas as pd

    from circuit_trace.graphs import Graph

    z = np.load(case / "ours.npz")
    kind = z["kind"].astype(object)
    n = len(kind)
    nodes = pd.DataFrame({
        "kind": kind, "layer": z["layer"], "pos": z["pos"], "feature": z["feature"],
        "token_id": z["token_id"], "token": ["t"] * n, "activation": z["activation"],
        "logit_prob": z["logit_prob"], "target_weight": np.where(kind == "logit", z["logit_prob"], 0.0),
        "label": [""] * n,
    })  # fmt: skip
    ids = [int(t) for t in z["input_ids"]]
    return Graph(
        prompt="bench",
        input_ids=ids,
        tokens=[str(t) for t in ids],
        nodes=nodes,
        adjacency=z["adjacency"],
        n_layers=int(z["layer"].max()),
        model_id="bench",
        transcoder_id="bench",
    )


def timed(fn, runs: int) -> tuple[float, list[float], object]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, out


def ours(args) -> dict:
    import scipy.sparse as sp

    g = load_graph(Path(args.case))
    res = {"n_nodes": g.n_nodes, "n_edges": g.n_edges}
    with tempfile.TemporaryDirectory() as tmp:
        for storage in ("dense", "csr"):
            if storage == "csr":
                g.adjacency = sp.csr_array(g.adjacency)
            med, times, r = timed(g.prune, args.runs)
            res[f"{storage}_prune_s"], res[f"{storage}_prune_runs"] = med, times
            res["pruned_nodes"], res["pruned_edges"] = int(r.graph.n_nodes), int(r.graph.n_edges)
            med, times, s = timed(g.scores, args.runs)
            res[f"{storage}_scores_s"], res[f"{storage}_scores_runs"] = med, times
            res["scores"] = s.to_dict()
            med, times, _ = timed(lambda: g.to_json(os.path.join(tmp, "g.json")), args.runs)
            res[f"{storage}_to_json_s"], res[f"{storage}_to_json_runs"] = med, times
    return res


def circuit_tracer(args) -> dict:
    import torch
    from circuit_tracer.graph import prune_graph

    z = np.load(Path(args.case) / "ours.npz")
    kind = z["kind"]
    n_logit, n_tok, n_feat = (int((kind == k).sum()) for k in ("logit", "embedding", "feature"))
    g = types.SimpleNamespace(
        input_tokens=torch.zeros(n_tok),
        logit_targets=list(range(n_logit)),
        selected_features=torch.zeros(n_feat),
        adjacency_matrix=torch.from_numpy(z["adjacency"]),
        logit_probabilities=torch.from_numpy(z["logit_prob"][kind == "logit"]).float(),
    )
    med, times, r = timed(lambda: prune_graph(g), args.runs)
    return {
        "n_nodes": len(kind),
        "ct_prune_s": med,
        "ct_prune_runs": times,
        "ct_pruned_nodes": int(r.node_mask.sum()),
        "ct_pruned_edges": int(r.edge_mask.sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", help="directory written by bench_attribution.py --export")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--circuit-tracer", action="store_true", help="time circuit-tracer's prune_graph instead")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    load = os.getloadavg()
    res = circuit_tracer(args) if args.circuit_tracer else ours(args)
    res.update(
        case=args.case,
        runs=args.runs,
        threads=args.threads,
        loadavg_start=load,
        loadavg_end=os.getloadavg(),
        ru_maxrss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    )
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
