"""circuit_trace: attribution graphs that show how a transformer reaches an answer.

import circuit_trace as ct
model = ct.load()                       # the embedded states organism with its CLT
graph = ct.attribute(model, "Fact: the capital of the state containing Dallas is")
pruned = ct.prune(graph)                # node 0.8 / edge 0.98 thresholds (docs/SPEC.md §4)
graph.to_json("graphs/dallas-austin.json", slug="dallas-austin")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Every public name and the module that defines it, imported on first use (PEP 562 `__getattr__`):
# `import circuit_trace` stays cheap, and torch / transformers / plotly load with the first call
# that needs them. To export a name, add it here and to the TYPE_CHECKING block below.
_EXPORTS: dict[str, str] = {
    # the front door
    "load": "api",
    "load_model": "api",
    "LoadedModel": "models",
    "attribute": "api",
    "prune": "graphs",
    "Graph": "graphs",
    "GraphScores": "graphs",
    "PruneResult": "graphs",
    "strongest_path": "graphs.paths",
    "plot": "viz",
    "ReplacementModel": "replacement.model",
    "Target": "attribution.targets",
    "custom_target": "attribution.targets",
    "logit_difference": "attribution.targets",
    "AttributionOptions": "attribution.options",
    # transcoders and their training
    "Transcoder": "transcoders",
    "load_transcoders": "transcoders",
    "TranscoderSetInfo": "transcoders.catalogue",
    "get_transcoder_set": "transcoders.catalogue",
    "list_transcoder_sets": "transcoders.catalogue",
    "train": "transcoders.training",
    "TrainConfig": "transcoders.training",
    "TrainingReport": "transcoders.training",
    "resume_conflicts": "transcoders.training",
    # interventions
    "intervene": "interventions",
    "generate": "interventions",
    "validate": "interventions",
    "diagnose_validation": "interventions",
    "activations_from": "interventions",
    "Edit": "interventions",
    "Supernode": "interventions",
    "InterventionResult": "interventions",
    "ValidationReport": "interventions",
    "ValidationDiagnosis": "interventions",
    "set_feature": "interventions",
    "scale_feature": "interventions",
    "add_feature": "interventions",
    "ablate_errors": "interventions",
    "swap": "interventions",
    "swap_from": "interventions",
    "GenerationResult": "interventions",
    "read_supernodes": "interventions",
    "read_pinned_ids": "interventions",
    "strongest_inputs": "interventions",
    # attention: head loadings and QK attribution
    "head_loadings": "attention",
    "head_loadings_top": "attention",
    "qk_attribution": "attention",
    "attach_attention": "attention",
    "QKAttribution": "attention",
    # prompt sweeps (in-process or on Ray)
    "sweep": "sweeps",
    "SweepOptions": "sweeps",
    "SweepResult": "sweeps",
    # feature dashboards (top contexts, logit effects, evidence-based labels)
    "feature_dashboards": "dashboards",
    "DashboardOptions": "dashboards",
    "DashboardResult": "dashboards",
    # errors (each also a ValueError, OSError or RuntimeError where that is what it is)
    "PromptError": "replacement.model",
    "TargetError": "attribution.targets",
    "EditError": "interventions",
    "TranscoderError": "transcoders",
    "CheckpointError": "transcoders",
    "TranscoderMismatchError": "transcoders",
    "UnsupportedArchitectureError": "models",
    "CorpusError": "transcoders.training",
    "OutputDirError": "transcoders.training",
}
# Subpackages reachable as attributes (`ct.interventions.FEATURE_GOAL`) without an explicit import.
_SUBPACKAGES = (
    "api",
    "atomic",
    "attention",
    "attribution",
    "cli",
    "dashboards",
    "graphs",
    "interventions",
    "models",
    "organisms",
    "replacement",
    "sweeps",
    "transcoders",
    "viz",
)

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from .api import attribute, load, load_model
    from .attention import QKAttribution, attach_attention, head_loadings, head_loadings_top, qk_attribution
    from .attribution.options import AttributionOptions
    from .attribution.targets import Target, TargetError, custom_target, logit_difference
    from .dashboards import DashboardOptions, DashboardResult, feature_dashboards
    from .graphs import Graph, GraphScores, PruneResult, prune
    from .graphs.paths import strongest_path
    from .interventions import (
        Edit,
        EditError,
        GenerationResult,
        InterventionResult,
        Supernode,
        ValidationDiagnosis,
        ValidationReport,
        ablate_errors,
        activations_from,
        add_feature,
        diagnose_validation,
        generate,
        intervene,
        read_pinned_ids,
        read_supernodes,
        scale_feature,
        set_feature,
        strongest_inputs,
        swap,
        swap_from,
        validate,
    )
    from .models import LoadedModel, UnsupportedArchitectureError
    from .replacement.model import PromptError, ReplacementModel
    from .sweeps import SweepOptions, SweepResult, sweep
    from .transcoders import CheckpointError, Transcoder, TranscoderError, TranscoderMismatchError, load_transcoders
    from .transcoders.catalogue import TranscoderSetInfo, get_transcoder_set, list_transcoder_sets
    from .transcoders.training import (
        CorpusError,
        OutputDirError,
        TrainConfig,
        TrainingReport,
        resume_conflicts,
        train,
    )
    from .viz import plot


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBPACKAGES})


# Built from _EXPORTS, not written out a third time; pyright reads the names from the TYPE_CHECKING block.
__all__ = [*_EXPORTS, "__version__"]  # pyright: ignore[reportUnsupportedDunderAll]
