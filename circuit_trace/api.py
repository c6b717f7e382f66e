"""The front door: load a replacement model, attribute a prompt, prune the graph."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .attribution.engine import compute_attribution
from .graphs import Graph
from .models import default_device, load_hf, resolve_dtype
from .replacement.model import ReplacementModel
from .transcoders import Transcoder, load_transcoders


def _organism_paths() -> tuple[Path, Path]:
    from .organisms import ORGANISM_DIR

    return ORGANISM_DIR, ORGANISM_DIR.parent / "clt"


LABELS_FILE = "feature_labels.json"


def read_feature_labels(directory: Path) -> dict[str, str]:
    """Labels shipped beside a transcoder set: {"<layer>_<index>": "label"} (empty if none)."""
    path = directory / LABELS_FILE
    if not path.is_file():
        return {}
    labels = json.loads(path.read_text())
    if not isinstance(labels, dict):
        raise ValueError(f"{path}: expected a JSON object mapping '<layer>_<index>' to a label")
    return {str(k): str(v) for k, v in labels.items()}


def load(
    model: str | nn.Module | None = None,
    transcoders: str | Transcoder | None = None,
    *,
    tokenizer=None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> ReplacementModel:
    """Load a model and its transcoders as a `ReplacementModel`.

    model: a hub id, a local directory (HF layout, or one holding a .gguf file), or a built
        `PreTrainedModel` (then `tokenizer` is required). None loads the embedded `states`
        organism, with its CLT when `transcoders` is None too.
    transcoders: a hub id or local directory in the circuit-tracer layout, or a `Transcoder`.
    """
    dev, dt = default_device(device), resolve_dtype(dtype)
    organism_tc = None
    if model is None:
        model_dir, clt_dir = _organism_paths()
        if transcoders is None:
            transcoders, organism_tc = clt_dir, "circuit-trace/states-clt"
        model, model_id = str(model_dir), "circuit-trace/states-organism"
    else:
        model_id = model if isinstance(model, str) else None
    if isinstance(model, (str, Path)):
        hf_model, tok = load_hf(str(model), device=dev, dtype=dt)
        tokenizer = tokenizer or tok
    elif isinstance(model, nn.Module):
        if tokenizer is None:
            raise ValueError("a model passed as an object needs its tokenizer: load(model, transcoders, tokenizer=tok)")
        hf_model = model.to(device=dev, dtype=dt) if dt else model.to(dev)
    else:
        raise TypeError(f"model must be a hub id, a path or a PreTrainedModel, got {type(model).__name__}")
    if transcoders is None:
        raise ValueError("transcoders are required for a model other than the embedded organism "
                         "(a hub id, a circuit-tracer layout directory, or a Transcoder)")
    if isinstance(transcoders, (str, Path)):
        tc = load_transcoders(str(transcoders), device=dev, dtype=dt or torch.float32)
        tc.feature_labels = read_feature_labels(Path(transcoders))
        tc.source_path = str(transcoders)
        tc.name = organism_tc or tc.name
    elif isinstance(transcoders, Transcoder):
        tc = transcoders.to(device=dev, dtype=dt) if dt else transcoders.to(dev)
    else:
        raise TypeError(f"transcoders must be a hub id, a path or a Transcoder, got {type(transcoders).__name__}")
    return ReplacementModel(hf_model, tokenizer, tc, model_id=model_id)


def attribute(
    model: ReplacementModel,
    prompt: str | list[int],
    *,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    targets=None,
    max_feature_nodes: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    progress: bool = True,
) -> Graph:
    """Attribution graph of `prompt` (SPEC §3). `targets`: None (the most likely next tokens up to
    `desired_logit_prob`, at most `max_n_logits`), a list of tokens (ids or single-token strings),
    and/or `Target` objects (e.g. `logit_difference(model, " Austin", " Dallas")`).
    `max_feature_nodes` caps feature nodes (default 7500), chosen greedily by influence on the
    targets. `batch_size` targets per backward pass (default: the most that fit, at most 256)."""
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    result = compute_attribution(
        model, prompt, max_n_logits=max_n_logits, desired_logit_prob=desired_logit_prob, targets=targets,
        max_feature_nodes=max_feature_nodes, batch_size=batch_size, progress=progress,
    )
    labels = getattr(model.transcoders, "feature_labels", None)
    if labels:
        feats = result.nodes["kind"] == "feature"
        keys = result.nodes.loc[feats, "layer"].astype(str) + "_" + result.nodes.loc[feats, "feature"].astype(str)
        result.nodes.loc[feats, "label"] = keys.map(labels).fillna("")
    graph = Graph.from_attribution(result)
    graph.settings.setdefault("stats", result.stats)
    return graph
