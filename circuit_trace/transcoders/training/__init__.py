"""Training transcoders on a model's MLPs: activation buffer, losses (JumpReLU recipe, TopK + AuxK),
normalisation folding, metrics (FVU, NMSE, L0, dead fraction, replacement KL / top-1) and the trainer."""

from .buffer import (ActivationBuffer, CorpusError, TensorBuffer, document_windows, make_windows, read_corpus,
                     tokenize_windows)
from .losses import decoder_norms, jumprelu_loss, topk_loss
from .metrics import ReconstructionStats, dead_fraction, fvu, l0, nmse, replace_mlps, replacement_metrics
from .normalize import Normalizer, fold_normalization
from .trainer import (OutputDirError, Trainer, TrainConfig, TrainingReport, add_train_arguments,
                      new_transcoder, train, train_from_args)

__all__ = [
    "TrainConfig", "TrainingReport", "train", "train_from_args", "add_train_arguments", "Trainer",
    "new_transcoder", "ActivationBuffer", "TensorBuffer", "read_corpus", "tokenize_windows", "make_windows",
    "document_windows", "CorpusError",
    "OutputDirError", "jumprelu_loss", "topk_loss", "decoder_norms", "Normalizer", "fold_normalization",
    "ReconstructionStats", "fvu", "nmse", "l0", "dead_fraction", "replace_mlps", "replacement_metrics",
]
