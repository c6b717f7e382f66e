"""Node identifiers: Cantor pairing and the Neuronpedia node-id formats (SPEC §4).

Kept tiny and dependency-free: the node table (`Graph`), the Neuronpedia exporter, the CLI and the
viewer's feature-detail files all name nodes through these functions.
"""

from __future__ import annotations

from math import isqrt
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

__all__ = [
    "cantor_pair",
    "cantor_unpair",
    "feature_node_id",
    "error_node_id",
    "embedding_node_id",
    "logit_node_id",
    "node_id",
]


def cantor_pair(layer: int, index: int) -> int:
    """(l + i)(l + i + 1) / 2 + i: one integer per (layer, feature index), for Neuronpedia."""
    if layer < 0 or index < 0:
        raise ValueError(f"cantor_pair needs non-negative integers, got ({layer}, {index})")
    s = layer + index
    return s * (s + 1) // 2 + index


def cantor_unpair(z: int) -> tuple[int, int]:
    """Inverse of `cantor_pair`: z -> (layer, index); isqrt keeps it exact for big z."""
    if z < 0:
        raise ValueError(f"cantor_unpair needs a non-negative integer, got {z}")
    w = (isqrt(8 * z + 1) - 1) // 2  # the diagonal l + i
    index = z - w * (w + 1) // 2
    return w - index, index


def feature_node_id(layer: int, feature: int, pos: int) -> str:
    return f"{layer}_{feature}_{pos}"


def error_node_id(layer: int, pos: int) -> str:
    # feature slot -1 is never a real feature index, so this cannot collide with a feature id and
    # still parses as three integers (circuit-tracer's current format).
    return f"{layer}_-1_{pos}"


def embedding_node_id(token_id: int, pos: int) -> str:
    return f"E_{token_id}_{pos}"


def logit_node_id(n_layers: int, token_id: int, pos: int) -> str:
    # Logits sit one layer above the last MLP in the viewer: layer L + 1.
    return f"{n_layers + 1}_{token_id}_{pos}"


def node_id(kind: str, layer: int, feature: int, pos: int, token_id: int, n_layers: int) -> str:
    """The Neuronpedia node id of one row of a Graph's node table."""
    if kind == "feature":
        return feature_node_id(layer, feature, pos)
    if kind == "error":
        return error_node_id(layer, pos)
    if kind == "embedding":
        return embedding_node_id(token_id, pos)
    if kind == "logit":
        return logit_node_id(n_layers, token_id, pos)
    raise ValueError(f"unknown node kind {kind!r}")


def node_ids(
    kinds: list[str],
    layers: Sequence[int] | np.ndarray,
    features: Sequence[int] | np.ndarray,
    positions: Sequence[int] | np.ndarray,
    token_ids: Sequence[int] | np.ndarray,
    n_layers: int,
) -> list[str]:
    """Neuronpedia ids for a whole node table, guaranteed unique.

    Custom (non-token) logit targets have token_id -1; the k-th of them takes token slot -(k + 1) so
    several of them stay distinct. Duplicate ids raise ValueError (they would merge viewer nodes).
    """
    out: list[str] = []
    n_custom = 0
    for kind, layer, feature, pos, token_id in zip(kinds, layers, features, positions, token_ids):
        if kind == "logit" and token_id < 0:
            n_custom += 1
            token_id = -n_custom
        out.append(node_id(kind, int(layer), int(feature), int(pos), int(token_id), n_layers))
    if len(set(out)) != len(out):
        seen: set[str] = set()
        dup = next(i for i in out if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate node id {dup!r} in the node table")
    return out
