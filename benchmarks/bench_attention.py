"""Cost of head loadings and QK attribution on a benchmark graph (random model and transcoders).

    OMP_NUM_THREADS=1 python benchmarks/bench_attention.py --preset l8-d128-f1024-t32-plt --threads 1 \
        --json benchmarks/results/attention-l8.json

Builds the preset of `bench_attribution.py`, attributes its prompt once, then times
`head_loadings_top` on the graph's `--edges` strongest cross-position edges (one pass per distinct
target: a frozen forward, a backward, and a backward vmapped over layers x heads) and
`qk_attribution` for one head (query at the last position, key at the strongest edge's source).
Reports wall times (median of `--runs`), per-target cost, and the QK table's size."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attribution import (  # noqa: E402
    PRESETS,
    calibrate_l0,
    default_hooks,
    machine_info,
    make_model,
    make_prompt,
    make_tokenizer,
    make_transcoder,
)

from circuit_trace.atomic import atomic_write_text  # noqa: E402


def _median_time(fn, runs: int) -> tuple[float, float, object]:
    """(median wall s, median CPU s of this process, last result): on a shared machine the CPU time
    is the steadier figure."""
    times, cpu, out = [], [], None
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), statistics.median(cpu), out


def run(args) -> dict:
    import circuit_trace as ct
    from circuit_trace.attention import cross_position_edges, head_loadings_top, qk_attribution

    p = PRESETS[args.preset]
    in_hook, out_hook = default_hooks(p.family)
    model = make_model(p, p.init_range, args.seed)
    tc = make_transcoder(p, args.seed + 1, in_hook, out_hook, False)
    rm = ct.load(model, tc, tokenizer=make_tokenizer(p.vocab), device="cpu")
    ids = make_prompt(p, args.seed)
    if getattr(p, "target_l0", None):
        calibrate_l0(rm, ids, p.target_l0)
    attribute_s, attribute_cpu, graph = _median_time(
        lambda: ct.attribute(rm, ids, max_feature_nodes=p.max_feature_nodes, progress=False), 1
    )
    edges = cross_position_edges(graph, args.edges)
    n_targets = int(edges["target_index"].nunique())
    loads_s, loads_cpu, loads = _median_time(lambda: head_loadings_top(rm, graph, edges=edges), args.runs)
    # the largest QK table: the last layer (most components below it), query at the last position,
    # key at the middle of the prompt
    layer, head, q_pos, k_pos = p.n_layers - 1, 0, len(ids) - 1, len(ids) // 2
    qk_s, qk_cpu, qk = _median_time(lambda: qk_attribution(rm, graph, layer, head, q_pos, k_pos), args.runs)
    n_q = int((qk.components["side"] == "query").sum())
    return {
        "preset": args.preset,
        "shape": {
            k: getattr(p, k) for k in ("family", "n_layers", "d_model", "n_heads", "d_features", "n_pos", "cross_layer")
        },
        "threads": torch.get_num_threads(),
        "runs": args.runs,
        "attribute_s": attribute_s,
        "attribute_cpu_s": attribute_cpu,
        "n_nodes": int(graph.n_nodes),
        "n_edges_requested": args.edges,
        "n_edges": len(edges),
        "n_targets": n_targets,
        "head_loadings_s": loads_s,
        "head_loadings_cpu_s": loads_cpu,
        "per_target_s": loads_s / max(1, n_targets),
        "per_target_cpu_s": loads_cpu / max(1, n_targets),
        "qk_layer": layer,
        "qk_head": head,
        "qk_query_pos": q_pos,
        "qk_key_pos": k_pos,
        "qk_s": qk_s,
        "qk_cpu_s": qk_cpu,
        "qk_query_components": n_q,
        "qk_key_components": int(len(qk.components) - n_q),
        "qk_pairs": int(len(qk.pairs)),
        "qk_score": qk.score,
        "qk_sum_error": abs(qk.total - qk.score),
        "machine": machine_info(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="l8-d128-f1024-t32-plt", choices=sorted(PRESETS))
    ap.add_argument("--edges", type=int, default=100, help="strongest cross-position edges (default 100)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = run(args)
    print(
        f"{res['preset']}: attribute {res['attribute_s']:.1f} s wall, {res['attribute_cpu_s']:.1f} s CPU, "
        f"{res['n_nodes']} nodes"
    )
    print(
        f"head loadings: {res['n_edges']} edges, {res['n_targets']} targets: {res['head_loadings_s']:.2f} s wall, "
        f"{res['head_loadings_cpu_s']:.2f} s CPU ({res['per_target_cpu_s'] * 1000:.0f} ms CPU per target)"
    )
    print(
        f"QK attribution L{res['qk_layer']} H{res['qk_head']} (q {res['qk_query_pos']}, k {res['qk_key_pos']}): "
        f"{res['qk_s']:.2f} s wall, {res['qk_cpu_s']:.2f} s CPU, {res['qk_query_components']} x {res['qk_key_components']} components, "
        f"|sum - score| = {res['qk_sum_error']:.2e} (score {res['qk_score']:.3f})"
    )
    if args.json:
        atomic_write_text(args.json, json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
