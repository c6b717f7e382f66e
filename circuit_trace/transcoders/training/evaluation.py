"""Held-out evaluation of a trained transcoder: FVU / NMSE / L0 per layer on raw activations (read
from the model or from an activation cache), and replacement KL / top-1 agreement through the model
(only when the transcoder covers every layer: the replacement model needs them all). `split_windows`
says which windows a run holds out; `evaluate_cached` scores any set (e.g. one spliced together by
`merge_transcoders(replace=True)`) on a cache's held-out windows exactly as training does."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch

from ..transcoder import Transcoder
from .cache import ActivationCache, CacheError, check_model
from .chunks import content_mask, outlier_mask
from .config import TrainConfig
from .metrics import ReconstructionStats, reconstruct_tokens, replacement_metrics
from .reader import read_mlp_io

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


def split_windows(lengths: torch.Tensor, eval_tokens: int) -> tuple[slice, slice, bool]:
    """Hold out the last windows holding ``eval_tokens`` tokens, at most 10% of the windows; with
    fewer than 10 windows, evaluate on the first training windows instead."""
    n = lengths.shape[0]
    tokens_from_end = (lengths - 1).flip(0).cumsum(0)
    n_hold = min(int((tokens_from_end < eval_tokens).sum()) + 1, n // 10)
    if n_hold < 1:
        n_eval = int((lengths - 1).cumsum(0).lt(eval_tokens).sum()) + 1
        return slice(None), slice(0, n_eval), False
    return slice(0, n - n_hold), slice(n - n_hold, n), True


def stream_batches(
    adapter,
    windows: torch.Tensor,
    lengths: torch.Tensor | None,
    cfg,
    layers: list[int],
    skip_token_ids: Sequence[int] = (),
) -> Batches:
    """Raw ``(x, y) [n, L, d]`` of ``windows`` read through the model, at the positions training
    reads (`chunks.content_mask`: position 0, padding and the boundary tokens dropped)."""
    device = next(adapter.model.parameters()).device
    fb = cfg.windows_per_forward(windows.shape[1])
    for i in range(0, windows.shape[0], fb):
        ids = windows[i : i + fb]
        keep = content_mask(ids, None if lengths is None else lengths[i : i + fb], skip_token_ids)
        x, y = read_mlp_io(adapter, ids.to(device), cfg.input_hook, cfg.output_hook, layers)
        keep = keep.to(x.device)
        yield x[:, keep].transpose(0, 1), y[:, keep].transpose(0, 1)


def cache_batches(cache, windows: torch.Tensor, layer_pos: torch.Tensor | None, batch_tokens: int = 2048) -> Batches:
    """Raw ``(x, y)`` of cached ``windows`` (indices into the cache), ``batch_tokens`` rows at a time."""
    rows = cache.content_rows(windows)
    for i in range(0, rows.shape[0], batch_tokens):
        x, y = cache.gather(rows[i : i + batch_tokens], layer_pos)
        yield x.float(), y.float()


@torch.no_grad()
def reconstruction_summary(
    tc: Transcoder,
    batches: Batches,
    progress: bool = False,
    outlier_ratios: tuple[float | None, float | None] = (None, None),
) -> dict:
    """FVU / NMSE / L0 per layer and in total over ``batches``. With ``outlier_ratios`` (input,
    output; as `TrainConfig.outlier_ratio` / `output_outlier_ratio`) also the FVU per layer over the
    tokens training's filter would keep (`chunks.outlier_mask`, medians per evaluation batch rather
    than per training chunk) and how many it drops: a few dropped tokens with huge activations can
    carry almost all of a layer's held-out error, and they are tokens the transcoder never saw."""
    from tqdm.auto import tqdm

    stats, dropped = ReconstructionStats(tc.n_layers), ReconstructionStats(tc.n_layers)
    for x, y in tqdm(batches, disable=not progress, desc="evaluate", unit="batch"):
        y_hat, acts = reconstruct_tokens(tc, x.to(tc.device, tc.dtype))
        y = y.to(tc.device, tc.dtype)
        stats.update(y, y_hat, acts)
        keep, _ = outlier_mask(x.float().norm(dim=-1).cpu(), y.float().norm(dim=-1).cpu(), *outlier_ratios)
        if not keep.all():
            drop = ~keep.to(y.device)
            dropped.update(y[drop], y_hat[drop], [a[drop] for a in acts])
    out = stats.summary()
    out["outlier_tokens"] = dropped.n_tokens
    kept = stats.without(dropped)
    out["fvu_without_outliers"] = kept.fvu() if dropped.n_tokens and kept.n_tokens else None
    return out


@torch.no_grad()
def evaluate(
    adapter,
    tc: Transcoder,
    windows: torch.Tensor,
    config: TrainConfig,
    lengths: torch.Tensor | None = None,
    *,
    layers: list[int] | None = None,
    batches: Batches | None = None,
    progress: bool = False,
    skip_token_ids: Sequence[int] = (),
) -> dict:
    """FVU / NMSE / L0 per layer on raw activations of ``windows`` (position 0, padding beyond
    ``lengths`` and the boundary tokens ``skip_token_ids`` skipped; from ``batches`` when given,
    e.g. `cache_batches`), the FVU without the tokens ``config``'s outlier filter drops
    (`reconstruction_summary`), and replacement KL / top-1 agreement on the same tokens when ``adapter``
    is given and ``tc`` covers every layer (else ``kl`` and ``top1_agreement`` are None)."""
    layers = list(range(tc.n_layers)) if layers is None else layers
    if batches is None:
        batches = stream_batches(adapter, windows, lengths, config, layers, skip_token_ids)
    out = reconstruction_summary(tc, batches, progress, (config.outlier_ratio, config.output_outlier_ratio))
    out.update(kl=None, top1_agreement=None)
    if adapter is not None and tc.n_layers == adapter.n_layers:
        fb = config.windows_per_forward(windows.shape[1])
        rep = replacement_metrics(
            adapter, tc, windows, batch_size=fb, lengths=lengths, skip_token_ids=skip_token_ids, progress=progress
        )
        out.update(kl=rep["kl"], top1_agreement=rep["top1_agreement"])
    return out


def evaluate_cached(
    model,
    tc: Transcoder,
    cache_dir: str | os.PathLike,
    eval_tokens: int,
    config: TrainConfig | None = None,
    progress: bool = False,
) -> dict:
    """What `train(cache=...)` reports at its end, for any set ``tc`` of the cache's model covering
    every layer: FVU / NMSE / L0 per layer on the held-out windows of a run with the same
    ``eval_tokens`` (never trained on) and, with ``model`` (the harvested one), replacement KL and
    top-1 agreement on the same tokens. ``config`` (a `TrainConfig`) sets the forward batch."""
    from ...models import get_adapter  # only here: the cache-only paths never import the model stack

    cache = ActivationCache(cache_dir)
    info = cache.info
    if tc.n_layers != info.n_model_layers:
        raise CacheError(f"the set has {tc.n_layers} layers, the cache's model {info.n_model_layers}: give a whole set")
    if model is not None:
        check_model(info, model, cache_dir)
    _, held, heldout = split_windows(cache.lengths, eval_tokens)
    windows = torch.arange(info.n_windows)[held]
    batches = cache_batches(cache, windows, cache.layer_positions(list(range(tc.n_layers))))
    adapter = None if model is None else get_adapter(model)
    out = evaluate(
        adapter,
        tc,
        cache.windows[held],
        config or TrainConfig(),
        cache.lengths[held],
        batches=batches,
        progress=progress,
        skip_token_ids=info.skip_token_ids,
    )
    out["heldout"] = heldout
    return out
