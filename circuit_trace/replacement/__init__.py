"""ReplacementModel = HF model + transcoders: full replacement for fidelity metrics, and the local
replacement context for one prompt (frozen attention and norms, error terms) that attribution uses."""

from .local import ActiveFeatures, FrozenOutputs, LocalReplacement
from .model import PromptError, ReplacementModel

__all__ = ["ReplacementModel", "PromptError", "LocalReplacement", "ActiveFeatures", "FrozenOutputs"]
