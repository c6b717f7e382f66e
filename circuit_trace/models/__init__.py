"""Loading HF causal LMs and the per-family adapters that say where MLP inputs/outputs, norms,
attention and the unembedding live, and how to freeze them. Only this package knows architectures."""

from .activations import mlp_io
from .adapters import HOOK_NAMES, SUPPORTED_FAMILIES, ModelAdapter, UnsupportedArchitectureError, get_adapter
from .loading import LoadedModel, clean_model_id, default_device, load_hf, load_model, resolve_dtype, set_bos
from .mlp_hooks import mlp_hooks, module_input

__all__ = [
    "HOOK_NAMES",
    "SUPPORTED_FAMILIES",
    "ModelAdapter",
    "UnsupportedArchitectureError",
    "get_adapter",
    "mlp_io",
    "mlp_hooks",
    "module_input",
    "load_hf",
    "load_model",
    "LoadedModel",
    "clean_model_id",
    "set_bos",
    "default_device",
    "resolve_dtype",
]
