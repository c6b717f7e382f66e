"""Graph nodes as the frozen local replacement model sees them: what a source writes into the
residual stream (per leaf of the frozen pass) and the scalar a target reads from it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..graphs import Graph
from ..replacement.local import FrozenOutputs, LocalReplacement

SOURCE_KINDS = ("feature", "error", "embedding")
TARGET_KINDS = ("feature", "logit")


@dataclass(frozen=True)
class NodeRef:
    index: int  # row of the graph's node table
    node_id: str
    kind: str
    layer: int
    pos: int
    feature: int
    token_id: int


def node_ref(graph: Graph, node: int | str) -> NodeRef:
    """A node given by its node-table row or its node id."""
    if isinstance(node, (int, np.integer)):
        if not 0 <= int(node) < graph.n_nodes:
            raise ValueError(f"node index {node} is outside the graph's {graph.n_nodes} nodes")
        i = int(node)
    else:
        try:
            i = graph.index_of(str(node))
        except KeyError:
            raise ValueError(f"{node!r} is not a node id of this graph") from None
    r = graph.nodes.iloc[i]
    return NodeRef(
        i, str(r["node_id"]), str(r["kind"]), int(r["layer"]), int(r["pos"]), int(r["feature"]), int(r["token_id"])
    )


def check_edge(source: NodeRef, target: NodeRef) -> None:
    if source.kind not in SOURCE_KINDS:
        raise ValueError(f"source {source.node_id} is a {source.kind} node; sources are {', '.join(SOURCE_KINDS)}")
    if target.kind not in TARGET_KINDS:
        raise ValueError(f"target {target.node_id} is a {target.kind} node; targets are {', '.join(TARGET_KINDS)}")


def target_layers(lr: LocalReplacement, target: NodeRef) -> int:
    """How many attention layers (0 .. n-1) lie below the target: a feature reads its layer's MLP
    input, after that layer's attention; a logit reads the final residual stream."""
    return target.layer + 1 if target.kind == "feature" else lr.rm.n_layers


def target_n_pos(lr: LocalReplacement, target: NodeRef) -> int:
    return target.pos + 1 if target.kind == "feature" else lr.n_pos


def target_value(lr: LocalReplacement, fo: FrozenOutputs, target: NodeRef) -> torch.Tensor:
    """[B] the target's value in a frozen pass, up to a constant: a feature's pre-activation
    (encoder . x), a logit's centred value (demeaned unembedding . final-normed state)."""
    rm = lr.rm
    if target.kind == "feature":
        enc = rm.transcoders.encoder_vectors(target.layer, torch.tensor([target.feature], device=rm.device))[0]
        return fo.x[target.layer][:, target.pos].float() @ enc.float()
    if target.token_id < 0:
        raise ValueError(f"{target.node_id} is a custom logit target; head loadings need a token target")
    w_u = rm.adapter.unembed_weight().float()  # [V, d]
    direction = w_u[target.token_id] - w_u.mean(0)
    return fo.z[:, 0].float() @ direction


def source_writes(lr: LocalReplacement, source: NodeRef) -> list[tuple[int, torch.Tensor]]:
    """[(leaf, vector [d] float64)] what the source adds at its position: leaf 0 is the embeddings,
    leaf 1 + l the MLP output of layer l (a CLT feature writes to several)."""
    if source.kind == "embedding":
        return [(0, lr.embeds[source.pos].double())]
    if source.kind == "error":
        return [(1 + source.layer, lr.errors[source.layer, source.pos].double())]
    f = lr.features
    hit = ((f.layer == source.layer) & (f.pos == source.pos) & (f.index == source.feature)).nonzero()
    if hit.numel() == 0:
        raise ValueError(f"feature {source.node_id} is not active on this prompt")
    act = f.activation[hit[0, 0]].double()
    dec = lr.rm.transcoders.decoder_vectors(source.layer, f.index[hit[0]])[0].double()  # [n_out, d]
    return [(1 + source.layer + j, act * dec[j]) for j in range(dec.shape[0])]


def contract(
    grads: Sequence[torch.Tensor | None], writes: list[tuple[int, torch.Tensor]], pos: int
) -> torch.Tensor | None:
    """Σ over the source's leaves of grad[leaf][..., pos, :] . vector -> [...] float64.
    grads: per leaf [..., P, d] or None (not reached). None when no leaf is reached."""
    total = None
    for leaf, vec in writes:
        g = grads[leaf] if leaf < len(grads) else None
        if g is None or pos >= g.shape[-2]:
            continue
        term = g[..., pos, :].double() @ vec.to(g.device)
        total = term if total is None else total + term
    return total
