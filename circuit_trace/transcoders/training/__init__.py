"""Training transcoders on a model's MLPs: activation buffer, losses (JumpReLU recipe, TopK + AuxK),
normalisation folding, metrics (FVU, NMSE, L0, dead fraction, replacement KL / top-1) and the trainer."""

from .buffer import (
    ActivationBuffer,
    CorpusError,
    TensorBuffer,
    document_windows,
    make_windows,
    read_corpus,
    tokenize_windows,
)
from .losses import decoder_norms, jumprelu_loss, topk_loss
from .metrics import (
    ReconstructionStats,
    dead_fraction,
    fvu,
    l0,
    nmse,
    replace_mlps,
    replacement_metrics,
)
from .normalize import Normalizer, fold_normalization
from .trainer import (
    OutputDirError,
    TrainConfig,
    Trainer,
    TrainingReport,
    new_transcoder,
    train,
)

__all__ = [
    "ActivationBuffer",
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
    "l0",
    "make_windows",
    "new_transcoder",
    "nmse",
    "read_corpus",
    "replace_mlps",
    "replacement_metrics",
    "tokenize_windows",
    "topk_loss",
    "train",
]
