"""Small models the project trains itself (a US-states fact world), shipped with their tokenizer,
weights and transcoders as package data: the embedded default model."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .corpus import HELD_OUT_CITIES, EvalItem, eval_sets, generate_corpus

if TYPE_CHECKING:
    from .evaluation import evaluate_items, evaluate_organism, predict_next, run_patched

__all__ = [
    "ORGANISM_MODEL_ID",
    "ORGANISM_DIR",
    "ORGANISM_NAME",
    "load_organism",
    "organism_metrics",
    "HELD_OUT_CITIES",
    "EvalItem",
    "eval_sets",
    "generate_corpus",
    "evaluate_items",
    "evaluate_organism",
    "predict_next",
    "run_patched",
]

ORGANISM_NAME = "states"
#: The embedded model's id: what graphs and the transcoders trained on it record as its name.
ORGANISM_MODEL_ID = "circuit-trace/states-organism"
#: Directory of the embedded model (HF ``save_pretrained`` layout: config, safetensors, tokenizer).
ORGANISM_DIR: Path = Path(str(resources.files(__name__) / "states" / "model"))


def load_organism(device=None, dtype=None, path: str | Path | None = None):
    """Load the embedded `states` organism: ``(LlamaForCausalLM, tokenizer)``, model in eval mode.

    ``dtype`` defaults to float32; ``device`` to CPU.  The tokenizer prepends BOS.  ``path``: another
    model directory of the same layout (e.g. a freshly trained organism before it is packaged).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with resources.as_file(resources.files(__name__) / "states" / "model") as packaged:
        where = str(path if path is not None else packaged)
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype or torch.float32)
    model.config._name_or_path = ORGANISM_MODEL_ID  # not the folder it was read from (as `load_model` does)
    if device is not None:
        model = model.to(device)
    model.eval()
    return model, tokenizer


def organism_metrics() -> dict:
    """The ``metrics.json`` written beside the model by training (accuracies and settings)."""
    return json.loads((resources.files(__name__) / "states" / "model" / "metrics.json").read_text())


# The evaluation helpers need torch; imported on first use (PEP 562), so that reading the world's
# facts or the demo's constants (the command line's parser does) stays cheap.
_EVALUATION = ("evaluate_items", "evaluate_organism", "predict_next", "run_patched")


def __getattr__(name: str) -> Any:
    if name in _EVALUATION:
        from . import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
