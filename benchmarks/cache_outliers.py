"""Where a model's massive MLP outputs sit in an activation cache (issue 13: outlier tokens, BOS choice).

    python benchmarks/cache_outliers.py CACHE [CACHE ...] [--ratio 100] [--tokenizer MODEL]

Per cached layer: the median output norm, the tokens over `--ratio` x that median, how many of them
are boundary tokens (the cache's `skip_token_ids`, which training and evaluation leave out) and how
many sit at the first position after the window's BOS, their share of the layer's summed squared
output norm (over all tokens, and over the tokens training reads), and their most frequent token ids. Reads the norms harvest stored (no shard is loaded).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import torch

from circuit_trace.transcoders.training import ActivationCache


def layer_outliers(cache: ActivationCache, ratio: float) -> list[dict]:
    """One dict per cached layer (see the module docstring)."""
    windows = torch.arange(len(cache.windows))
    rows = cache.rows_of(windows)  # every token after its window's BOS, in window order
    tokens = torch.cat([cache.windows[w, 1:n] for w, n in enumerate(cache.lengths.tolist())])  # [n_rows]
    pos = torch.cat([torch.arange(1, n) for n in cache.lengths.tolist()])  # position in the window
    skip = torch.isin(tokens, torch.tensor(list(cache.info.skip_token_ids), dtype=tokens.dtype))
    _, out_norms = cache.norms(rows)  # [n_rows, n_layers]
    result = []
    for j, layer in enumerate(cache.info.layers):
        norm = out_norms[:, j].float()
        big = norm > ratio * norm.median()
        result.append(
            {
                "layer": layer,
                "median_norm": round(float(norm.median()), 3),
                "max_over_median": round(float(norm.max() / norm.median()), 1),
                "n_outliers": int(big.sum()),
                "boundary_tokens": int((big & skip).sum()),
                "at_position_1": int((big & (pos == 1)).sum()),
                "energy_share": round(float((norm[big] ** 2).sum() / (norm**2).sum()), 4),
                # what training and evaluation see: the same without the boundary tokens
                "content_energy_share": round(float((norm[big & ~skip] ** 2).sum() / (norm[~skip] ** 2).sum()), 4),
                "top_token_ids": Counter(tokens[big].tolist()).most_common(5),
            }
        )
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("caches", nargs="+", help="activation cache directories (`circuit-trace harvest`)")
    ap.add_argument("--ratio", type=float, default=100.0, help="outlier: output norm over this x the median")
    args = ap.parse_args(argv)
    for path in args.caches:
        cache = ActivationCache(path)
        print(f"{path}: {cache.info.n_tokens:,} tokens, skip_token_ids {list(cache.info.skip_token_ids)}")
        for row in layer_outliers(cache, args.ratio):
            print(" ", json.dumps(row))


if __name__ == "__main__":
    main()
