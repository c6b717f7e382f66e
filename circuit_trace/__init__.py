"""circuit_trace: attribution graphs that show how a transformer reaches an answer.

    import circuit_trace as ct
    model = ct.load()                       # the embedded states organism with its CLT
    graph = ct.attribute(model, "Fact: the capital of the state containing Dallas is")
    pruned = ct.prune(graph)                # node 0.8 / edge 0.98 thresholds (SPEC §4)
    graph.to_json("graphs/dallas-austin.json", slug="dallas-austin")
"""

from .api import attribute, load
from .attribution.targets import Target, custom_target, logit_difference
from .graphs import Graph, GraphScores, PruneResult, prune
from .interventions import (
    Edit, InterventionResult, Supernode, ValidationReport, ablate_errors, add_feature, generate, intervene,
    scale_feature, set_feature, swap, validate,
)
from .replacement.model import PromptError, ReplacementModel
from .transcoders import Transcoder, load_transcoders
from .transcoders.training import TrainConfig, TrainingReport, train

__version__ = "0.1.0"


def plot(graph, **kwargs):
    """Interactive plotly figure of a graph (see `circuit_trace.viz.plot`)."""
    from .viz import plot as _plot

    return _plot(graph, **kwargs)

__all__ = [
    "load", "attribute", "prune", "plot", "Graph", "GraphScores", "PruneResult", "ReplacementModel", "PromptError",
    "Transcoder", "load_transcoders", "train", "TrainConfig", "TrainingReport", "intervene", "generate", "validate", "Edit", "Supernode",
    "InterventionResult", "ValidationReport", "set_feature", "scale_feature", "add_feature", "ablate_errors", "swap", "Target", "custom_target", "logit_difference", "__version__",
]
