"""Memory of `ct.prune` and `Graph.scores()` on large synthetic sparse graphs: O(edges), not O(N²).

    OMP_NUM_THREADS=1 python benchmarks/bench_prune_scale.py --threads 1 --json out/prune-scale.json
    OMP_NUM_THREADS=1 python benchmarks/bench_prune_scale.py --case 100000:20 --case 100000:80 --runs 3

Each `--case NODES:K` builds `random_graph(10 layers, 40 positions, ..., sparse=True,
edges_per_node=K)` with exactly NODES nodes (CSR adjacency; K ~ sources drawn per feature, so about
K x NODES edges), then runs `g.prune()` (default thresholds 0.8 / 0.98) and `g.scores()` `--runs`
times each. Per operation it reports the wall time (median), the peak RSS increase over the RSS
measured just before the call (after gc and glibc malloc_trim; psutil sampled every 5 ms in a
thread, `PeakRSS` from bench_attribution.py; and the kernel's exact high-water mark VmHWM, reset
through /proc/self/clear_refs where Linux allows it), the tracemalloc peak of one extra call, and
bytes per edge = peak increase / nnz, next to the N x N float32 dense size (N² x 4 bytes) for contrast.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# bench_attribution imports torch: that moves the RSS baseline, not the increases measured here.
from bench_attribution import PeakRSS

from circuit_trace.atomic import atomic_write_json
from circuit_trace.graphs import random_graph

N_LAYERS, N_POS, N_LOGITS = 10, 40, 3
# (nodes, edges_per_node): 2M / 8M / 30M edges at 100k nodes; 25k..200k nodes at K = 80; 200k nodes
# at K = 160 (about the edges of 100k at K = 320, with 4x the N²).
DEFAULT_CASES = ["100000:20", "100000:80", "100000:320", "25000:80", "50000:80", "200000:80", "200000:160"]
MIB = 2**20


def build(n_nodes: int, k: int, seed: int):
    n_other = N_LAYERS * (N_POS - 1) + N_POS + N_LOGITS  # errors + embeddings + logits
    g = random_graph(N_LAYERS, N_POS, n_nodes - n_other, seed=seed, n_logits=N_LOGITS, sparse=True, edges_per_node=k)
    assert g.n_nodes == n_nodes and g.is_sparse
    return g


def _malloc_trim() -> bool:
    """Give glibc's free heap pages back to the OS, so the RSS baseline holds no reusable free memory
    (graph building frees hundreds of MiB that later allocations would reuse unseen). False if no glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)  # returns whether anything was released
        return True
    except (OSError, AttributeError):
        return False


def _hwm_reset() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where Linux refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(fn, runs: int, traced: bool, summarise) -> dict:
    """Wall time, peak RSS increase (sampled, and VmHWM) over `runs` calls; tracemalloc peak of one more.

    summarise(out) -> dict of small figures, taken from the last timed call's output (outside the timing)."""
    proc = psutil.Process()
    times, d_rss, d_hwm = [], [], []
    for _ in range(runs):
        gc.collect()
        _malloc_trim()
        base = proc.memory_info().rss
        hwm_ok = _hwm_reset()
        with PeakRSS(0.005) as m:
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        if hwm_ok:
            d_hwm.append(_hwm() - base)
        d_rss.append(m.peak - base)
        summary = summarise(out)
        del out
    res = {
        **summary,
        "wall_s": statistics.median(times),
        "wall_runs": times,
        "peak_rss_increase": max(d_rss),
        "peak_rss_increase_runs": d_rss,
        "hwm_increase": max(d_hwm) if d_hwm else None,
        "hwm_increase_runs": d_hwm,
        "tracemalloc_peak": None,
    }
    if traced:
        gc.collect()
        _malloc_trim()
        tracemalloc.start()
        try:
            out = fn()
            res["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        del out
    return res


def run_case(n_nodes: int, k: int, args) -> list[dict]:
    t = time.perf_counter()
    g = build(n_nodes, k, args.seed)
    build_s = time.perf_counter() - t
    a = g.adjacency
    nnz = int(a.nnz)
    graph_bytes = a.data.nbytes + a.indices.nbytes + a.indptr.nbytes
    common = {
        "nodes": n_nodes,
        "edges_per_node": k,
        "nnz": nnz,
        "graph_bytes": graph_bytes,
        "index_dtype": str(a.indices.dtype),
        "data_dtype": str(a.data.dtype),
        "build_s": build_s,
        "dense_f32_bytes": n_nodes * n_nodes * 4,
    }
    rows = []
    summaries = {
        "prune": lambda res: {"pruned_nodes": int(res.graph.n_nodes), "pruned_edges": int(res.graph.n_edges)},
        "scores": lambda s: {"scores": s.to_dict()},
    }
    for op, fn in (("prune", g.prune), ("scores", g.scores)):
        r = measure(fn, args.runs, not args.no_tracemalloc, summaries[op])
        r.update(common, op=op)
        r["bytes_per_edge"] = r["peak_rss_increase"] / nnz
        r["hwm_bytes_per_edge"] = r["hwm_increase"] / nnz if r["hwm_increase"] is not None else None
        r["tracemalloc_bytes_per_edge"] = r["tracemalloc_peak"] / nnz if r["tracemalloc_peak"] is not None else None
        r["peak_over_dense"] = max(r["peak_rss_increase"], r["hwm_increase"] or 0) / r["dense_f32_bytes"]
        rows.append(r)
    del g, a
    gc.collect()
    return rows


def table(rows: list[dict]) -> str:
    head = [
        "nodes",
        "K",
        "edges (nnz)",
        "graph MiB",
        "op",
        "wall s (med)",
        "peak ΔRSS MiB",
        "ΔHWM MiB",
        "tracemalloc MiB",
        "B/edge (ΔRSS)",
        "B/edge (ΔHWM)",
        "B/edge (tm)",
        "dense N² f32 GiB",
        "peak / dense",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]

    def mib(x):
        return "-" if x is None else f"{x / MIB:.0f}"

    def bpe(x):
        return "-" if x is None else f"{x:.1f}"

    for r in rows:
        lines.append("| " + " | ".join([
            f"{r['nodes']:,}", str(r["edges_per_node"]), f"{r['nnz']:,}", mib(r["graph_bytes"]), r["op"],
            f"{r['wall_s']:.2f}", mib(r["peak_rss_increase"]), mib(r["hwm_increase"]), mib(r["tracemalloc_peak"]),
            bpe(r["bytes_per_edge"]), bpe(r["hwm_bytes_per_edge"]), bpe(r["tracemalloc_bytes_per_edge"]),
            f"{r['dense_f32_bytes'] / 2**30:.1f}", f"{r['peak_over_dense']:.4f}"]) + " |")  # fmt: skip
    return "\n".join(lines)


def parse_case(s: str) -> tuple[int, int]:
    try:
        n, k = (int(x) for x in s.split(":"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--case takes NODES:EDGES_PER_NODE, got {s!r}") from e
    if n <= N_LAYERS * (N_POS - 1) + N_POS + N_LOGITS or k < 1:
        raise argparse.ArgumentTypeError(f"--case {s!r}: too few nodes or K < 1")
    return n, k


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--case",
        action="append",
        type=parse_case,
        help=f"NODES:EDGES_PER_NODE (repeatable; default: {' '.join(DEFAULT_CASES)})",
    )
    ap.add_argument("--runs", type=int, default=2, help="timed + RSS-sampled calls per operation")
    ap.add_argument("--no-tracemalloc", action="store_true", help="skip the extra tracemalloc run")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (also set OMP_NUM_THREADS=1 for numpy)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results as JSON here (atomically)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cases = args.case or [parse_case(c) for c in DEFAULT_CASES]
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "mem_total_gib": psutil.virtual_memory().total / 2**30,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": __import__("scipy").__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "threads": args.threads,
        "runs": args.runs,
        "argv": sys.argv,
        "malloc_trim": _malloc_trim(),
        "loadavg_start": os.getloadavg(),
    }
    rows = []
    for n, k in cases:
        print(f"case {n} nodes, K={k} (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
        rows.extend(run_case(n, k, args))
        print(table(rows[-2:]), file=sys.stderr, flush=True)
    info.update(loadavg_end=os.getloadavg(), ru_maxrss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(table(rows))
    print(
        f"\nload {info['loadavg_start'][0]:.2f} -> {info['loadavg_end'][0]:.2f}; "
        f"process peak RSS (incl. graph building) {info['ru_maxrss_mib']:.0f} MiB"
    )
    if args.json:
        atomic_write_json(args.json, {"info": info, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
