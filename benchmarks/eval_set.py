"""Score whole transcoder sets on an activation cache's held-out windows, as `train --cache` scores
its own run (issue 13): per-layer FVU, L0, replacement KL and top-1 agreement. A set may be spliced
from several runs first (`merge-transcoders --replace`: the later runs' layers win), e.g. a whole
run plus a longer run of its weakest layers.

    python benchmarks/eval_set.py --cache CACHE --model GGUF_DIR --eval-tokens 16384 \\
        --set RUN [--set RUN ...] [--splice RUN PART ...] --out results/eval_set.json

Each ``--set`` is scored as it is; each ``--splice`` is merged in memory with replace=True and
pad=True (runs of other widths allowed) and scored. The table printed and the JSON hold every set's figures."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

GOAL_FVU = 0.25  # issue 13: every layer's held-out FVU at or under this


def score(model, tc, args: argparse.Namespace, name: str) -> dict:
    from circuit_trace.transcoders.training import TrainConfig, evaluate_cached

    start = time.perf_counter()
    ev = evaluate_cached(model, tc, args.cache, args.eval_tokens, TrainConfig(threads=args.threads), progress=False)
    fvu = [float(v) for v in ev["fvu"]]
    return {
        "set": name,
        "top1_agreement": ev["top1_agreement"],
        "kl": ev["kl"],
        "fvu": fvu,
        "fvu_total": ev["fvu_total"],
        "fvu_median": statistics.median(fvu),
        "layers_at_goal": sum(v <= GOAL_FVU for v in fvu),
        "above_goal": {i: round(v, 3) for i, v in enumerate(fvu) if v > GOAL_FVU},
        "l0_mean": sum(ev["l0"]) / len(ev["l0"]),
        "n_features": tc.d_features,
        "tokens": ev["tokens"],
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--model", required=True, help="the model the cache was harvested from")
    ap.add_argument("--eval-tokens", type=int, default=16384, help="as the runs' --eval-tokens")
    ap.add_argument("--set", type=Path, action="append", default=[], help="a whole set (run directory)")
    ap.add_argument("--splice", type=Path, nargs="+", action="append", default=[], help="runs merged, later win")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    import circuit_trace as ct
    from circuit_trace.transcoders.training import load_partial, merge_transcoders

    if args.threads:
        torch.set_num_threads(args.threads)
    model = ct.load_model(args.model, device="cpu").model
    rows = [score(model, load_partial(s)[0], args, str(s)) for s in args.set]
    for runs in args.splice:  # merged in memory: nothing written
        tc = merge_transcoders(runs, replace=True, pad=True)
        rows.append(score(model, tc, args, " + ".join(map(str, runs))))
    for r in rows:
        print(
            f"{r['set']}: top-1 {100 * r['top1_agreement']:.1f} %, KL {r['kl']:.3f}, FVU total {r['fvu_total']:.3f}, "
            f"median {r['fvu_median']:.3f}, {r['layers_at_goal']}/{len(r['fvu'])} layers <= {GOAL_FVU}, "
            f"above: {r['above_goal']} ({r['tokens']} tokens, {r['seconds']} s)"
        )
    if args.out:
        args.out.write_text(
            json.dumps({"cache": str(args.cache), "eval_tokens": args.eval_tokens, "sets": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
