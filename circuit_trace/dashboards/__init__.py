"""Feature dashboards for any transcoder: top-activating contexts, activation density, logit effects
and evidence-based (heuristic) labels, written in Neuronpedia's and circuit-tracer's formats.

Sits on top of models/transcoders/graphs: `feature_dashboards(model, corpus)` streams a corpus in
bounded memory (resumable); `open_dashboards(dir)` reads either format back."""

from .build import DashboardError, DashboardOptions, DashboardResult, feature_dashboards
from .corpus import CorpusError, read_documents
from .identity import (
    default_dashboard_dir,
    find_dashboards,
    folder_name,
    transcoder_fingerprint,
    transcoder_id,
)
from .labels import ConceptMap, FeatureLabel, LabelOptions, TokenConcepts, label_feature
from .logits import logit_effects
from .store import (
    CompactDashboards,
    DashboardStoreError,
    NeuronpediaDashboards,
    open_dashboards,
    read_labels,
)

__all__ = [
    "CompactDashboards",
    "ConceptMap",
    "CorpusError",
    "DashboardError",
    "DashboardOptions",
    "DashboardResult",
    "DashboardStoreError",
    "FeatureLabel",
    "LabelOptions",
    "NeuronpediaDashboards",
    "TokenConcepts",
    "default_dashboard_dir",
    "feature_dashboards",
    "find_dashboards",
    "folder_name",
    "label_feature",
    "logit_effects",
    "open_dashboards",
    "read_documents",
    "read_labels",
    "transcoder_fingerprint",
    "transcoder_id",
]
