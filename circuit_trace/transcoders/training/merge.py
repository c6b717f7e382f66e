"""Partial transcoder sets (runs trained on a subset of layers) and merging them into one set.

A partial set is saved in the circuit-tracer layout for its own layers, numbered 0..k-1, with two
more keys in ``config.yaml``: ``partial_layers`` (the model layers they stand for) and
``n_model_layers``. Loading one for attribution is refused with a one-line error (attribution needs
every layer); `merge_transcoders` joins runs that together cover every layer exactly once. PLT
subsets merge exactly (layers train independently); CLT subsets merge with no decoder between
layers of different runs (those weights are zero).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
import yaml

from ...atomic import atomic_write_text
from ..transcoder import Transcoder

PARTIAL_KEY = "partial_layers"


class MergeError(ValueError):
    """The runs cannot be merged into one transcoder set."""


def save_partial(tc: Transcoder, path: Path, layers: list[int], n_model_layers: int) -> None:
    """Save ``tc`` (trained on model ``layers``) as a partial set at ``path``."""
    tc.save(str(path))
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    cfg.update({PARTIAL_KEY: [int(l) for l in layers], "n_model_layers": int(n_model_layers)})
    atomic_write_text(path / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))


def _set_dir(path: str | os.PathLike) -> Path:
    """A training run's output directory or the transcoder directory itself."""
    p = Path(path)
    return p / "transcoder" if (p / "transcoder" / "config.yaml").is_file() else p


def load_partial(path: str | os.PathLike) -> tuple[Transcoder, list[int], int]:
    """(transcoder, model layers, n_model_layers) of a partial set."""
    from ..formats import load_transcoders

    folder = _set_dir(path)
    if not (folder / "config.yaml").is_file():
        raise MergeError(f"{path}: no transcoder set (config.yaml) there")
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    if not isinstance(cfg, dict) or PARTIAL_KEY not in cfg:
        raise MergeError(f"{folder} is not a partial set (a run trained with layers=); nothing to merge")
    layers, n_model = [int(l) for l in cfg.pop(PARTIAL_KEY)], int(cfg.pop("n_model_layers"))
    tmp = Path(tempfile.mkdtemp(prefix="ct-partial-"))
    try:  # the set without its partial keys, so the ordinary loader reads it (files linked, not copied)
        for f in folder.iterdir():
            if f.name != "config.yaml":
                os.symlink(f.resolve(), tmp / f.name)
        (tmp / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        tc = load_transcoders(tmp, lazy=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tc, layers, n_model


def _check_parts(parts: list[tuple[Transcoder, list[int], int]]) -> int:
    """Same recipe in every run, each model layer covered exactly once; the model's layer count."""
    first = parts[0][0]
    sig = lambda t: (t.is_cross_layer, t.d_model, t.d_features, t.activation, t.k, t.has_skip, t.feature_input_hook)
    n_model = parts[0][2]
    seen: dict[int, int] = {}
    for i, (tc, layers, n) in enumerate(parts):
        if sig(tc) != sig(first) or n != n_model:
            raise MergeError(f"run {i + 1} differs from run 1 in kind, size, activation, hooks or model")
        for l in layers:
            if l in seen:
                raise MergeError(f"layer {l} is in runs {seen[l] + 1} and {i + 1}")
            seen[l] = i
    missing = sorted(set(range(n_model)) - set(seen))
    if missing:
        raise MergeError(f"no run covers layer(s) {missing}; every layer of the {n_model}-layer model is needed")
    return n_model


@torch.no_grad()
def merge_transcoders(paths: list[str | os.PathLike], out: str | os.PathLike | None = None) -> Transcoder:
    """One transcoder set from partial runs that cover every model layer once (saved to ``out``)."""
    if not paths:
        raise MergeError("no runs to merge")
    parts = [load_partial(p) for p in paths]
    n_model = _check_parts(parts)
    f = parts[0][0]
    merged = f.empty_like(n_model)
    for tc, layers, _ in parts:
        for i, g in enumerate(layers):
            merged.W_enc[g].copy_(tc.W_enc[i])
            merged.b_enc[g].copy_(tc.b_enc[i])
            merged.b_dec[g].copy_(tc.b_dec[i])
            if merged.activation == "jumprelu":
                merged.threshold[g].copy_(tc.thresholds(i))
            if merged.W_skip is not None and tc.W_skip is not None:
                merged.W_skip[g].copy_(tc.W_skip[i])
            for slot, target in zip(range(tc.n_outputs(i)), layers[i:]):
                merged.decoder(g)[:, target - g if merged.is_cross_layer else 0].copy_(tc.decoder(i)[:, slot])
    if out is not None:
        merged.save(str(out))
    return merged
