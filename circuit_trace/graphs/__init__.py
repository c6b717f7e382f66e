"""Graph (node table + adjacency + metadata): influence, pruning, replacement/completeness scores,
and exporters (Neuronpedia JSON, networkx, pandas) and readers."""
