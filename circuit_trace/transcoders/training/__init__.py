"""Training transcoders on a model's MLPs: activation buffer and cache (harvest once, train many),
losses, normalisation folding, metrics, the trainer (data-parallel, layer subsets, freed memory kept
for reuse on the CPU), held-out evaluation of any set on a cache, and merging (splicing retrained
layers into a set)."""

from .buffer import (
    ActivationBuffer,
    CorpusError,
    TensorBuffer,
    document_windows,
    make_windows,
    read_corpus,
    tokenize_windows,
)
from .cache import ActivationCache, CacheBuffer, CacheError, CacheInfo
from .evaluation import evaluate_cached, split_windows
from .harvest import HarvestConfig, harvest
from .layerspec import parse_layers
from .losses import decoder_norms, jumprelu_loss, relu_loss, topk_loss
from .merge import MergeError, load_partial, merge_transcoders
from .metrics import (
    ReconstructionStats,
    dead_fraction,
    fvu,
    l0,
    nmse,
    replacement_metrics,
)
from .normalize import Normalizer, fold_normalization
from .trainer import (
    OutputDirError,
    TrainConfig,
    Trainer,
    TrainingReport,
    new_transcoder,
    resume_conflicts,
    train,
)

__all__ = [
    "ActivationBuffer",
    "ActivationCache",
    "CacheBuffer",
    "CacheError",
    "CacheInfo",
    "HarvestConfig",
    "MergeError",
    "evaluate_cached",
    "harvest",
    "load_partial",
    "merge_transcoders",
    "parse_layers",
    "split_windows",
    "CorpusError",
    "Normalizer",
    "OutputDirError",
    "ReconstructionStats",
    "TensorBuffer",
    "TrainConfig",
    "Trainer",
    "TrainingReport",
    "dead_fraction",
    "decoder_norms",
    "document_windows",
    "fold_normalization",
    "fvu",
    "jumprelu_loss",
    "relu_loss",
    "l0",
    "make_windows",
    "new_transcoder",
    "nmse",
    "read_corpus",
    "replacement_metrics",
    "resume_conflicts",
    "tokenize_windows",
    "topk_loss",
    "train",
]


def __getattr__(name: str):
    # `replace_mlps` (the full replacement model) imports transformers: only on first use, so a
    # data-parallel worker training from a cache starts without it.
    if name == "replace_mlps":
        from ...replacement.full import replace_mlps

        return replace_mlps
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
