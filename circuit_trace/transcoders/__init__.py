"""Per-layer and cross-layer transcoders (JumpReLU, ReLU, TopK, optional skip), their on-disk
formats (circuit-tracer layout), and the trainer that fits them to a model's MLPs."""

from .activations import ACTIVATIONS, jumprelu, jumprelu_ste, relu, step_ste, topk
from .errors import CheckpointError, TranscoderError, TranscoderMismatchError
from .formats import load_transcoders, save_transcoder
from .hooks import VALID_HOOKS, normalize_hook_name
from .transcoder import Transcoder

__all__ = [
    "Transcoder",
    "load_transcoders",
    "save_transcoder",
    "TranscoderError",
    "CheckpointError",
    "TranscoderMismatchError",
    "ACTIVATIONS",
    "jumprelu",
    "jumprelu_ste",
    "step_ste",
    "relu",
    "topk",
    "VALID_HOOKS",
    "normalize_hook_name",
]
