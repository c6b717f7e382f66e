"""Prompt sweeps: many prompts -> one pruned graph, Neuronpedia JSON and summary row each, in-process
or fanned out over Ray actors; resumable, with a cross-prompt feature table. Sits on top of graphs."""

from .prompts import PromptSpec, SweepInputError, SweepLoadError, read_prompts
from .runner import SweepResult, sweep
from .trace import SweepOptions

__all__ = ["PromptSpec", "SweepInputError", "SweepLoadError", "SweepOptions", "SweepResult", "read_prompts", "sweep"]
