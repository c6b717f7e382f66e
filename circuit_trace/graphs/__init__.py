"""Graph (node table + adjacency + metadata): influence, pruning, replacement/completeness scores,
and exporters (Neuronpedia JSON, networkx, pandas) and readers."""

from .graph import NODE_COLUMNS, NODE_KINDS, Graph
from .ids import cantor_pair, cantor_unpair
from .influence import InfluenceDidNotConvergeError, influence, node_scores, normalize
from .neuronpedia import load_json, to_neuronpedia
from .paths import node_name, strongest_path
from .prune import PruneResult, prune
from .scores import GraphScores, graph_scores
from .synthetic import random_graph

__all__ = [
    "Graph",
    "GraphScores",
    "InfluenceDidNotConvergeError",
    "NODE_COLUMNS",
    "NODE_KINDS",
    "PruneResult",
    "cantor_pair",
    "cantor_unpair",
    "graph_scores",
    "influence",
    "load_json",
    "node_name",
    "node_scores",
    "normalize",
    "prune",
    "random_graph",
    "strongest_path",
    "to_neuronpedia",
]
