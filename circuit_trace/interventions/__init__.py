"""Ablate, steer, clamp and swap features and supernodes in the real model (constrained and free
modes), generation under edits, and validation of a graph's predictions against interventions (with
parts of the real model frozen at their clean values, to diagnose what the graph misses)."""

from .diagnose import PART_MEANING, ValidationDiagnosis, diagnose_validation
from .edits import (
    Edit,
    EditError,
    ErrorAblation,
    Supernode,
    ablate_errors,
    add_feature,
    parse_cli_edits,
    parse_feature_id,
    scale_feature,
    set_feature,
    swap,
)
from .frozen import FREEZE_PARTS, freeze_parts, frozen
from .generate import Continuation, GenerationResult, generate
from .intervene import (
    InterventionResult,
    TokenProb,
    activations_from,
    format_result,
    intervene,
    swap_from,
)
from .qparams import read_pinned_ids, read_qparams, read_supernodes, strongest_inputs
from .report import format_prob
from .validate import FEATURE_GOAL, ValidationReport, validate, validate_each

__all__ = [
    "FEATURE_GOAL",
    "FREEZE_PARTS",
    "PART_MEANING",
    "Continuation",
    "Edit",
    "EditError",
    "ErrorAblation",
    "GenerationResult",
    "InterventionResult",
    "Supernode",
    "TokenProb",
    "ValidationDiagnosis",
    "ValidationReport",
    "ablate_errors",
    "activations_from",
    "add_feature",
    "diagnose_validation",
    "format_prob",
    "format_result",
    "freeze_parts",
    "frozen",
    "generate",
    "intervene",
    "parse_cli_edits",
    "parse_feature_id",
    "read_pinned_ids",
    "read_qparams",
    "read_supernodes",
    "scale_feature",
    "set_feature",
    "strongest_inputs",
    "swap",
    "swap_from",
    "validate",
    "validate_each",
]
