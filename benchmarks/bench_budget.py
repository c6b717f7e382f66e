"""What a training budget buys (issue 13: "say what budget reaches what"): held-out FVU per layer of
TopK PLTs trained from one activation cache at several token budgets, same settings otherwise.

    circuit-trace harvest --model GGUF_DIR --corpus DIR --out CACHE --layers 0,9,11,15,28,29 ...
    python benchmarks/bench_budget.py --cache CACHE --out OUT --budgets 131072 262144 524288 1048576 \
        [--features 2048 --k 32 --lr LR --threads 2 --skip --autocast] [--compare RUN ...]

Each budget is one `ct.train(cache=...)` run (PLT, TopK, the layers the cache holds), evaluated on
the cache's held-out windows (its last ones, never trained on). OUT/budget.json holds every report
and the load average around each run; the printed table is budget x layer FVU, with L0, the dead
share and the training speed. Budgets above the cache's training tokens take several passes.
``--compare`` evaluates other runs' transcoders (full or partial sets, e.g. trained for several epochs
on a smaller cache of the same corpus) on the same held-out windows, at the layers both hold: the
same token-steps on fewer unique tokens, side by side."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def run_budget(cache: Path, out: Path, tokens: int, args: argparse.Namespace) -> dict:
    """Train one PLT set on `tokens` tokens of the cache; its report with the load average."""
    import circuit_trace as ct
    from circuit_trace.transcoders.training import CacheInfo

    layers = ",".join(map(str, CacheInfo.load(cache).layers))  # every layer the cache holds

    cfg = ct.TrainConfig(
        kind="plt",
        activation="topk",
        k=args.k,
        n_features=args.features,
        n_tokens=tokens,
        layers=layers,
        batch_size=args.batch_size,
        lr=args.lr,
        eval_tokens=args.eval_tokens,
        threads=args.threads,
        skip=args.skip,
        autocast=args.autocast,
        checkpoint_every=10**9,  # only the final checkpoint: this measures quality, not resuming
        keep_checkpoints=1,
        out_dir=str(out),
        seed=args.seed,
    )
    load_before = os.getloadavg()[0]
    report = ct.train(None, None, None, cfg, cache=cache, progress=not args.no_progress)
    row = dataclasses.asdict(report)
    row.pop("history")
    row["load_avg"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if not args.keep:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # ~3x the transcoder's size
    return row


def heldout_rows(cache, eval_tokens: int) -> torch.Tensor:
    """The cache rows `train` evaluates on: those of its held-out windows (the last ones)."""
    from circuit_trace.transcoders.training import split_windows

    _, held, _ = split_windows(cache.lengths, eval_tokens)
    return cache.content_rows(torch.arange(cache.info.n_windows)[held])


@torch.no_grad()
def inlier_fvu(cache_dir: Path, run: Path, eval_tokens: int, output_ratio: float = 100.0) -> dict:
    """Held-out FVU per layer of a finished run without the tokens the training filter drops (MLP
    output norm > `output_ratio` x the layer's held-out median, at any layer), and how many those are."""
    from circuit_trace.transcoders.training import ActivationCache, load_partial
    from circuit_trace.transcoders.training.chunks import outlier_mask
    from circuit_trace.transcoders.training.metrics import ReconstructionStats, reconstruct_tokens

    cache = ActivationCache(cache_dir)
    tc, layers, _ = load_partial(run / "transcoder")
    rows = heldout_rows(cache, eval_tokens)
    keep, counts = outlier_mask(*cache.norms(rows), None, output_ratio)
    stats = ReconstructionStats(len(layers))
    x, y = cache.gather(rows[keep], cache.layer_positions(layers))
    stats.update(y.float(), reconstruct_tokens(tc, x.float())[0])
    return {"fvu": stats.fvu(), "excluded": counts.outputs, "tokens": int(keep.sum())}


@torch.no_grad()
def heldout_fvu(cache_dir: Path, run: Path, eval_tokens: int) -> dict:
    """Held-out FVU of a PLT run's transcoder at every cache layer it holds, on the cache's held-out
    windows (as `run_budget`'s evaluation): {model layer: FVU}."""
    from circuit_trace.transcoders.training import ActivationCache, load_partial
    from circuit_trace.transcoders.training.metrics import ReconstructionStats

    cache = ActivationCache(cache_dir)
    tc, tc_layers, _ = load_partial(run)  # a whole set holds every model layer
    common = [m for m in cache.info.layers if m in tc_layers]
    x, y = cache.gather(heldout_rows(cache, eval_tokens), cache.layer_positions(common))  # [N, len(common), d]
    y_hat = []
    for i, m in enumerate(common):  # one layer of a PLT at a time: its own encoder, decoder and skip
        j = tc_layers.index(m)
        xi = x[:, i].to(tc.dtype)
        y_hat.append(tc.encode(xi, j) @ tc.decoder(j)[:, 0] + tc.b_dec[j] + tc.skip(xi, j))
    stats = ReconstructionStats(len(common))
    stats.update(y.float(), torch.stack(y_hat, 1))
    return dict(zip(common, stats.fvu(), strict=True))


def table(rows: list[dict]) -> str:
    """Markdown: one line per budget, held-out FVU of every trained layer, then L0 / dead / speed."""
    layers = rows[0]["layers"] or list(range(rows[0]["n_layers"]))
    head = ["tokens", *(f"FVU L{layer}" for layer in layers), "L0 per layer", "dead", "train tok/s", "load"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['tokens']:,}", *(f"{v:.3f}" for v in r["fvu"])]
        dead = "–" if r["dead_fraction"] is None else f"{100 * r['dead_fraction']:.1f} %"
        cells += [
            f"{sum(r['l0']) / len(r['l0']):.1f}",
            dead,
            f"{r['tokens'] / r['seconds']:.0f}",
            "→".join(map(str, r["load_avg"])),
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if "inliers" in r:  # same run, without the held-out tokens the output filter drops
            cells = [f"same, {r['inliers']['excluded']} outliers out", *(f"{v:.3f}" for v in r["inliers"]["fvu"])]
            lines.append("| " + " | ".join(cells + [""] * 4) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--cache", type=Path, required=True, help="activation cache (`circuit-trace harvest`)")
    ap.add_argument("--out", type=Path, required=True, help="one run directory per budget, and budget.json")
    ap.add_argument("--budgets", type=int, nargs="*", default=[], help="training tokens per run")
    ap.add_argument("--features", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=None, help="default: TrainConfig's")
    ap.add_argument("--eval-tokens", type=int, default=16384)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", action="store_true", help="train with a skip connection")
    ap.add_argument("--autocast", action="store_true", help="bf16 autocast")
    ap.add_argument("--compare", type=Path, nargs="*", default=[], help="other runs evaluated on the same windows")
    ap.add_argument("--keep", action="store_true", help="keep each run's checkpoints")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--inliers", action="store_true", help="also the held-out FVU without the output outliers")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from circuit_trace.atomic import atomic_write_text

    summary = args.out / "budget.json"
    settings = vars(args) | {"cache": str(args.cache), "out": str(args.out), "compare": [str(c) for c in args.compare]}
    rows = json.loads(summary.read_text())["runs"] if summary.exists() else []
    done = {r["tokens"] for r in rows}
    for tokens in args.budgets:
        if tokens in done:  # resumable: one finished run per budget
            continue
        rows.append(run_budget(args.cache, args.out / f"tokens-{tokens}", tokens, args))
        rows.sort(key=lambda r: r["tokens"])
        atomic_write_text(summary, json.dumps({"settings": settings, "runs": rows}, indent=1))
    if args.inliers:
        for r in rows:
            r["inliers"] = inlier_fvu(args.cache, args.out / f"tokens-{r['tokens']}", args.eval_tokens)
        atomic_write_text(summary, json.dumps({"settings": settings, "runs": rows}, indent=1))
    if rows:
        print(table(rows))
    if args.compare:
        compared = {str(run): heldout_fvu(args.cache, run, args.eval_tokens) for run in args.compare}
        atomic_write_text(summary, json.dumps({"settings": settings, "runs": rows, "compared": compared}, indent=1))
        for run, fvu in compared.items():
            print(f"{run}: " + ", ".join(f"FVU L{m} {v:.3f}" for m, v in fvu.items()))


if __name__ == "__main__":
    main()
