"""Attention in the graph: which heads carry a cross-position edge (head loadings) and which
residual-stream components make a head attend there (QK attribution), exported for Neuronpedia."""

from .export import ATTENTION_KEY, attach_attention
from .loadings import cross_position_edges, frozen_edge, head_loadings, head_loadings_top, remove_heads
from .qk import QKAttribution, qk_attribution, qk_attribution_local

__all__ = [
    "ATTENTION_KEY",
    "QKAttribution",
    "attach_attention",
    "cross_position_edges",
    "frozen_edge",
    "head_loadings",
    "head_loadings_top",
    "qk_attribution",
    "qk_attribution_local",
    "remove_heads",
]
