"""Attribution targets (logits, custom directions), the batched backward engine that fills the
adjacency matrix (`engine`, `selection`, `sources`, `assemble`), and influence-ordered selection (`ranking`)."""

from .engine import AttributionResult, compute_attribution
from .options import AttributionOptions
from .targets import (
    Target,
    TargetError,
    custom_target,
    logit_difference,
    salient_logits,
    token_targets,
)

__all__ = [
    "AttributionOptions",
    "AttributionResult",
    "Target",
    "TargetError",
    "compute_attribution",
    "custom_target",
    "logit_difference",
    "salient_logits",
    "token_targets",
]
