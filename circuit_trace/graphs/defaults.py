"""The SPEC defaults, in one place: logit-target selection (SPEC §3) and pruning thresholds (§4).

Every function, CLI option and benchmark that takes one of these takes its default from here. The
module imports nothing, so any stage can read it."""

from __future__ import annotations

__all__ = ["DESIRED_LOGIT_PROB", "EDGE_THRESHOLD", "MAX_N_LOGITS", "NODE_THRESHOLD"]

MAX_N_LOGITS = 10  # most logit targets
DESIRED_LOGIT_PROB = 0.95  # cumulative probability the logit targets cover
NODE_THRESHOLD = 0.8  # cumulative node influence kept by pruning
EDGE_THRESHOLD = 0.98  # cumulative edge influence kept by pruning
