"""Attribution targets (logits, custom directions), the batched backward engine that fills the
adjacency matrix (`engine`, `sources`), and influence-ordered node selection (`ranking`)."""

from .engine import AttributionResult, compute_attribution
from .targets import Target, TargetError, custom_target, logit_difference, salient_logits, token_targets

__all__ = [
    "AttributionResult", "compute_attribution", "Target", "TargetError", "custom_target",
    "logit_difference", "salient_logits", "token_targets",
]
