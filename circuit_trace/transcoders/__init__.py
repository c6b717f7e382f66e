"""Per-layer and cross-layer transcoders (JumpReLU, ReLU, TopK, optional skip), their on-disk
formats (circuit-tracer, GemmaScope(-2), sparsify), the catalogue of published sets, and the trainer."""

from .activations import ACTIVATIONS, jumprelu, jumprelu_ste, relu, step_ste, topk
from .catalogue import TranscoderSetInfo, get_transcoder_set, list_transcoder_sets, resolve_transcoders
from .errors import CheckpointError, TranscoderError, TranscoderMismatchError
from .formats import load_transcoders, save_transcoder
from .hooks import VALID_HOOKS, normalize_hook_name
from .transcoder import Transcoder

__all__ = [
    "Transcoder",
    "load_transcoders",
    "list_transcoder_sets",
    "get_transcoder_set",
    "resolve_transcoders",
    "TranscoderSetInfo",
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
