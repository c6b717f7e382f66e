"""Head loadings: an edge s -> t of the graph split over the heads of each attention layer.

The maths. In the frozen local replacement model (attention patterns, norm denominators frozen) the
target's value is an affine function of what each source writes, and the edge is
A[t, s] = Σ_leaves (∂t/∂leaf)[p_s] · w_s, with w_s the source's written vector(s). At layer m the
residual stream after attention is r + W_O z(r), z = [z_1 .. z_H] the heads' outputs, so every path
from s to t crosses layer m either through exactly one head's OV circuit or around the attention
(the residual "bypass"). With G_m = ∂t/∂z_m (one backward pass from t):

    loading(m, h) = Σ_leaves (∂/∂leaf <G_m restricted to head h, z_m>)[p_s] · w_s

i.e. the backward pass from z_m seeded with head h's slice of G_m only: the sum over the paths that
run through head h at layer m (whatever they do before and after m). Equivalently, with a gate g_h
multiplying head h's output, loading(m, h) = ∂A[t, s]/∂g_h at g = 1, and since the frozen model is
affine in each gate, also A[t, s] - A[t, s | head h removed] (tested). The bypass of layer m is
A[t, s] - Σ_h loading(m, h): the edge in the model whose layer-m heads are all removed (tested).
Layers at or below the source's first write (an MLP at layer l writes after attention l) and
layers above the target carry nothing: loadings 0 (`head_loadings_top` leaves them out).

Cost per target row: one batch-1 frozen forward over the positions up to the target (the heads'
inputs z_m recorded in it), one backward to the leaves and every z_m, and one backward vmapped over
the (layer, head) pairs below the target (L_t · H rows, chunked by `max_rows`); every source of
that target is then read off by dot products. `head_loadings_top` groups edges by target."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..graphs import Graph
from ..models.heads import HeadGeometry, head_geometry, head_inputs
from ..replacement.local import LocalReplacement
from .nodes import NodeRef, check_edge, contract, node_ref, source_writes, target_layers, target_n_pos, target_value

__all__ = ["head_loadings", "head_loadings_top", "remove_heads", "frozen_edge", "cross_position_edges"]

LOADING_COLUMNS = ["layer", "head", "kind", "loading"]


def _local(model, graph: Graph) -> LocalReplacement:
    return model.local_context(list(graph.input_ids))


def _target_rows(
    lr: LocalReplacement, geo: HeadGeometry, target: NodeRef, sources: list[NodeRef], max_rows: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(edges [S], loadings [S, L, H]) float64 of sources -> target (see the module docstring)."""
    L, H, dh = lr.rm.n_layers, geo.n_heads, geo.head_dim
    top = target_layers(lr, target)
    zs: list[torch.Tensor | None] = [None] * L
    with head_inputs(lr.rm.adapter, range(top), lambda layer, z: zs.__setitem__(layer, z)):
        fo = lr.frozen_forward(n_pos=target_n_pos(lr, target))
    heads_in = [z for z in zs[:top] if z is not None]  # [1, P', H * dh] per layer below the target
    assert len(heads_in) == top, "every attention layer below the target records its heads' outputs"
    leaves = [fo.embeds, *fo.mlp_out[:top]]
    value = target_value(lr, fo, target).sum()
    grads = torch.autograd.grad(value, [*leaves, *heads_in], retain_graph=True, allow_unused=True)
    g_leaves: list[torch.Tensor | None] = list(grads[: len(leaves)])
    g_heads = grads[len(leaves) :]
    writes = [source_writes(lr, s) for s in sources]
    edges = np.array([_value(contract(g_leaves, w, s.pos)) for w, s in zip(writes, sources)])
    pairs = [(m, h) for m in range(top) for h in range(H) if g_heads[m] is not None]
    loadings = np.zeros((len(sources), L, H))
    for lo in range(0, len(pairs), max_rows):
        chunk = pairs[lo : lo + max_rows]
        seeds = [torch.zeros(len(chunk), *z.shape, dtype=z.dtype, device=z.device) for z in heads_in]
        for row, (m, h) in enumerate(chunk):
            cols = slice(h * dh, (h + 1) * dh)
            seeds[m][row, ..., cols] = g_heads[m][..., cols]
        last = lo + max_rows >= len(pairs)
        hg = torch.autograd.grad(
            heads_in, leaves, seeds, is_grads_batched=True, allow_unused=True, retain_graph=not last
        )
        hg = [None if g is None else g[:, 0] for g in hg]  # drop the forward's batch of 1
        for i, (w, s) in enumerate(zip(writes, sources)):
            vals = contract(hg, w, s.pos)
            if vals is not None:
                for row, (m, h) in enumerate(chunk):
                    loadings[i, m, h] = float(vals[row])
    return edges, loadings


def _value(t: torch.Tensor | None) -> float:
    return 0.0 if t is None else float(t.reshape(-1)[0]) if t.numel() == 1 else float(t.sum())


def _frame(edge: float, loadings: np.ndarray, layers: list[int]) -> pd.DataFrame:
    """Rows (layer, head, "head", loading) then (layer, -1, "bypass", edge - Σ heads) per layer."""
    rows = []
    for m in layers:
        rows += [(m, h, "head", float(loadings[m, h])) for h in range(loadings.shape[1])]
        rows.append((m, -1, "bypass", edge - float(loadings[m].sum())))
    return pd.DataFrame(rows, columns=LOADING_COLUMNS)


def _layers(n_layers: int, layer: int | None) -> list[int]:
    if layer is None:
        return list(range(n_layers))
    if not 0 <= int(layer) < n_layers:
        raise ValueError(f"layer {layer} out of range for a {n_layers}-layer model")
    return [int(layer)]


def head_loadings(
    model,
    graph: Graph,
    source: int | str,
    target: int | str,
    layer: int | None = None,
) -> pd.DataFrame:
    """The edge source -> target split over the heads of attention layer `layer` (all layers when
    None) plus each layer's bypass, in the frozen local replacement model of the graph's prompt.

    Returns a DataFrame (layer, head, kind, loading): one "head" row per head and one "bypass" row
    (head -1) per layer; per layer, heads + bypass sum to the edge (`df.attrs["edge"]`, equal to
    `graph.adjacency[target, source]`). Nodes are node ids or node-table rows.
    Cost: one frozen forward and two backward passes (one vmapped over layers x heads) for the
    target; see the module docstring."""
    src, tgt = node_ref(graph, source), node_ref(graph, target)
    check_edge(src, tgt)
    lr = _local(model, graph)
    geo = head_geometry(model.adapter)
    edges, loadings = _target_rows(lr, geo, tgt, [src])
    df = _frame(float(edges[0]), loadings[0], _layers(model.n_layers, layer))
    df.attrs.update(edge=float(edges[0]), source=src.node_id, target=tgt.node_id)
    return df


def cross_position_edges(graph: Graph, n_edges: int = 100) -> pd.DataFrame:
    """The graph's `n_edges` strongest (|weight|) edges whose source sits at an earlier position
    than its target: columns source_index, target_index, source, target, weight."""
    a = sp.coo_array(graph.adjacency) if sp.issparse(graph.adjacency) else sp.coo_array(np.asarray(graph.adjacency))
    t, s, w = a.row.astype(np.int64), a.col.astype(np.int64), a.data.astype(np.float64)
    pos = graph.nodes["pos"].to_numpy()
    kinds = graph.nodes["kind"].to_numpy(dtype=object)
    keep = (
        (pos[s] < pos[t])
        & (w != 0)
        & np.isin(kinds[s], ["feature", "error", "embedding"])
        & np.isin(kinds[t], ["feature", "logit"])
    )
    keep &= ~((kinds[t] == "logit") & (graph.nodes["token_id"].to_numpy()[t] < 0))  # custom targets
    t, s, w = t[keep], s[keep], w[keep]
    order = np.argsort(-np.abs(w), kind="stable")[: int(n_edges)]
    ids = graph.nodes["node_id"].to_numpy(dtype=object)
    return pd.DataFrame(
        {
            "source_index": s[order],
            "target_index": t[order],
            "source": ids[s[order]],
            "target": ids[t[order]],
            "weight": w[order],
        }
    )


def head_loadings_top(
    model, graph: Graph, n_edges: int = 100, *, edges: pd.DataFrame | None = None, progress: bool = False
) -> pd.DataFrame:
    """Head loadings of the graph's `n_edges` strongest cross-position edges (or of `edges`, a frame
    from `cross_position_edges`). One pass per distinct target (module docstring): columns source,
    target, edge, layer, head, kind, loading; per (edge, layer), heads + bypass sum to the edge. Only
    the layers that can carry the edge are listed: above the source's first write (embeddings: from
    layer 0) and below the target; elsewhere every head's loading is 0 and the bypass the edge."""
    from tqdm.auto import tqdm

    edges = cross_position_edges(graph, n_edges) if edges is None else edges
    lr = _local(model, graph)
    geo = head_geometry(model.adapter)
    by_target: dict[int, list[int]] = defaultdict(list)
    for s, t in zip(edges["source_index"].tolist(), edges["target_index"].tolist()):
        by_target[int(t)].append(int(s))
    frames = []
    for t, srcs in tqdm(by_target.items(), desc="head loadings", unit="target", disable=not progress):
        tgt = node_ref(graph, t)
        refs = [node_ref(graph, s) for s in srcs]
        vals, loadings = _target_rows(lr, geo, tgt, refs)
        for ref, edge, load in zip(refs, vals, loadings):
            df = _frame(float(edge), load, list(range(ref.layer + 1, target_layers(lr, tgt))))
            df.insert(0, "edge", float(edge))
            df.insert(0, "target", tgt.node_id)
            df.insert(0, "source", ref.node_id)
            frames.append(df)
    cols = ["source", "target", "edge", *LOADING_COLUMNS]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


# -- constrained interventions on heads ------------------------------------------------------------
@contextmanager
def remove_heads(model, heads: dict[int, list[int]]) -> Iterator[None]:
    """Inside, every forward pass of `model` (real or frozen) has the outputs of `heads`
    ({layer: [head, ...]}) set to zero before the output projection."""
    geo = head_geometry(model.adapter)
    for m, hs in heads.items():
        if not 0 <= int(m) < model.n_layers or any(not 0 <= int(h) < geo.n_heads for h in hs):
            raise ValueError(f"heads {hs} of layer {m}: the model has {model.n_layers} layers of {geo.n_heads} heads")

    def zero(layer: int, z: torch.Tensor) -> torch.Tensor:
        keep = torch.ones(geo.n_heads, geo.head_dim, dtype=z.dtype, device=z.device)
        keep[list(heads[layer])] = 0
        return z * keep.reshape(-1)

    with head_inputs(model.adapter, [int(m) for m in heads], zero):
        yield


def frozen_edge(
    model, graph: Graph, source: int | str, target: int | str, remove: dict[int, list[int]] | None = None
) -> float:
    """The edge source -> target measured in the frozen local replacement model of the graph's
    prompt, optionally with heads removed (`remove_heads`): the gradient of the target with respect
    to what the source writes (the model is affine, so this is the effect of removing the source)."""
    src, tgt = node_ref(graph, source), node_ref(graph, target)
    check_edge(src, tgt)
    lr = _local(model, graph)
    with remove_heads(model, remove or {}):
        fo = lr.frozen_forward(n_pos=target_n_pos(lr, tgt))
    leaves = [fo.embeds, *fo.mlp_out]
    grads = torch.autograd.grad(target_value(lr, fo, tgt).sum(), leaves, allow_unused=True)
    return _value(contract(list(grads), source_writes(lr, src), src.pos))
