"""Held-out evaluation of a trained transcoder: FVU / NMSE / L0 per layer on raw activations (read
from the model or from an activation cache), and replacement KL / top-1 agreement through the model
(only when the transcoder covers every layer: the replacement model needs them all)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ..transcoder import Transcoder
from .chunks import content_mask
from .metrics import ReconstructionStats, reconstruct_tokens, replacement_metrics
from .reader import read_mlp_io

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


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
def reconstruction_summary(tc: Transcoder, batches: Batches, progress: bool = False) -> dict:
    """FVU / NMSE / L0 per layer and in total over ``batches``."""
    from tqdm.auto import tqdm

    stats = ReconstructionStats(tc.n_layers)
    for x, y in tqdm(batches, disable=not progress, desc="evaluate", unit="batch"):
        y_hat, acts = reconstruct_tokens(tc, x.to(tc.device, tc.dtype))
        stats.update(y.to(tc.device, tc.dtype), y_hat, acts)
    return stats.summary()


@torch.no_grad()
def evaluate(
    adapter,
    tc: Transcoder,
    windows: torch.Tensor,
    config,
    lengths: torch.Tensor | None = None,
    *,
    layers: list[int] | None = None,
    batches: Batches | None = None,
    progress: bool = False,
    skip_token_ids: Sequence[int] = (),
) -> dict:
    """FVU / NMSE / L0 per layer on raw activations of ``windows`` (position 0, padding beyond
    ``lengths`` and the boundary tokens ``skip_token_ids`` skipped; from ``batches`` when given,
    e.g. `cache_batches`), and replacement KL / top-1 agreement on the same tokens when ``adapter``
    is given and ``tc`` covers every layer (else ``kl`` and ``top1_agreement`` are None)."""
    layers = list(range(tc.n_layers)) if layers is None else layers
    if batches is None:
        batches = stream_batches(adapter, windows, lengths, config, layers, skip_token_ids)
    out = reconstruction_summary(tc, batches, progress)
    out.update(kl=None, top1_agreement=None)
    if adapter is not None and tc.n_layers == adapter.n_layers:
        fb = config.windows_per_forward(windows.shape[1])
        rep = replacement_metrics(
            adapter, tc, windows, batch_size=fb, lengths=lengths, skip_token_ids=skip_token_ids, progress=progress
        )
        out.update(kl=rep["kl"], top1_agreement=rep["top1_agreement"])
    return out
