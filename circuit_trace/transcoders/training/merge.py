"""Partial transcoder sets (runs trained on a subset of layers) and merging them into one set.

A partial set is saved in the circuit-tracer layout for its own layers, numbered 0..k-1, with two
more keys in ``config.yaml``: ``partial_layers`` (the model layers they stand for) and
``n_model_layers``. Loading one for attribution is refused with a one-line error (attribution needs
every layer); `merge_transcoders` joins runs that together cover every layer. A whole set counts as
a run covering every layer, and with ``replace=True`` a later run's layers replace an earlier one's
(retrain the weak layers of a set, then splice them in). With ``pad=True`` runs may differ in width
(e.g. a hard layer retrained with 4x the features): the set takes the widest, and a narrower layer's
extra features have zero weights and encoder bias -1, so they never fire and its reconstruction is
unchanged. PLT layers merge exactly (they train independently); a CLT's decoders are kept only
between layers taken from the same run (others are zero).
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
PAD_BIAS = -1.0  # encoder bias of a padding feature: with zero weights its pre-activation is always < 0


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
    """(transcoder, model layers, n_model_layers) of a partial set (of a whole set: every layer)."""
    from ..formats import load_transcoders

    folder = _set_dir(path)
    if not (folder / "config.yaml").is_file():
        raise MergeError(f"{path}: no transcoder set (config.yaml) there")
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    if not isinstance(cfg, dict) or PARTIAL_KEY not in cfg:  # a whole set: every layer of its model
        tc = load_transcoders(folder, lazy=False)
        return tc, list(range(tc.n_layers)), tc.n_layers
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


def _owners(parts: list[tuple[Transcoder, list[int], int]], replace: bool, pad: bool) -> list[int]:
    """Per model layer, the run it is taken from (the last run holding it when ``replace``); checks
    that every run has the same recipe (but for the width when ``pad``) and every layer is covered
    (exactly once unless ``replace``)."""
    first = parts[0][0]
    sig = lambda t: (t.is_cross_layer, t.d_model, t.activation, t.k, t.has_skip, t.feature_input_hook)
    n_model = parts[0][2]
    owner: dict[int, int] = {}
    for i, (tc, layers, n) in enumerate(parts):
        if sig(tc) != sig(first) or n != n_model:
            raise MergeError(f"run {i + 1} differs from run 1 in kind, activation, hooks or model")
        if tc.d_features != first.d_features and not pad:
            raise MergeError(
                f"run {i + 1} has {tc.d_features} features per layer, run 1 {first.d_features} "
                "(pad=True / --pad widens the narrower layers with features that never fire)"
            )
        for l in layers:
            if l in owner and not replace:
                raise MergeError(
                    f"layer {l} is in runs {owner[l] + 1} and {i + 1} (replace=True / --replace takes it from the later run)"
                )
            owner[l] = i
    missing = sorted(set(range(n_model)) - set(owner))
    if missing:
        raise MergeError(f"no run covers layer(s) {missing}; every layer of the {n_model}-layer model is needed")
    return [owner[l] for l in range(n_model)]


@torch.no_grad()
def merge_transcoders(
    paths: list[str | os.PathLike], out: str | os.PathLike | None = None, *, replace: bool = False, pad: bool = False
) -> Transcoder:
    """One transcoder set from runs (partial or whole sets) that cover every model layer, once each
    unless ``replace``: then each layer comes from the last run holding it. ``pad``: runs of other
    widths are allowed (see the module docstring). Saved to ``out``."""
    if not paths:
        raise MergeError("no runs to merge")
    parts = [load_partial(p) for p in paths]
    owner = _owners(parts, replace, pad)
    width = max(parts[run][0].d_features for run in set(owner))
    merged = parts[0][0].empty_like(len(owner), width)
    merged.b_enc.fill_(PAD_BIAS)  # every feature a layer's run does not fill stays silent
    for run, (tc, layers, _) in enumerate(parts):
        for i, g in enumerate(layers):
            if owner[g] == run:
                _copy_layer(
                    merged, g, tc, i, [(s, t) for s, t in zip(range(tc.n_outputs(i)), layers[i:]) if owner[t] == run]
                )
    if out is not None:
        merged.save(str(out))
    return merged


def _copy_layer(merged: Transcoder, g: int, tc: Transcoder, i: int, slots: list[tuple[int, int]]) -> None:
    """Run layer ``i`` into model layer ``g`` (its first features when the run is narrower): encoder,
    biases, threshold, skip and the decoder ``slots`` (run slot, model target layer)."""
    f = tc.d_features
    merged.W_enc[g, :f].copy_(tc.W_enc[i])
    merged.b_enc[g, :f].copy_(tc.b_enc[i])
    merged.b_dec[g].copy_(tc.b_dec[i])
    if merged.activation == "jumprelu":
        merged.threshold[g, :f].copy_(tc.thresholds(i))
    if merged.W_skip is not None and tc.W_skip is not None:
        merged.W_skip[g].copy_(tc.W_skip[i])
    for slot, target in slots:
        merged.decoder(g)[:f, target - g if merged.is_cross_layer else 0].copy_(tc.decoder(i)[:, slot])
