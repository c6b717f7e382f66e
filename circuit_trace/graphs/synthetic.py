"""Random but valid layered attribution graphs, for tests and viewer development (no model needed).

The graph follows the Graph contract: node order, id formats, a DAG (sources sit at strictly lower
layers and never later positions), and h_t = Σ_s A[t, s] + bias_terms[t] for features and logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .defaults import DESIRED_LOGIT_PROB
from .graph import NODE_COLUMNS, Graph
from .ids import node_ids

__all__ = ["random_graph"]


@dataclass
class _Nodes:
    """The node columns of a random graph, in contract order, and the tokens they name."""

    kind: np.ndarray  # [N] object: "feature" | "error" | "embedding" | "logit"
    layer: np.ndarray  # [N] int64
    pos: np.ndarray  # [N] int64
    feature: np.ndarray  # [N] int64, -1 for non-features
    token_id: np.ndarray  # [N] int64, -1 for features / errors
    input_ids: np.ndarray  # [P]
    logit_tokens: np.ndarray  # [n_logits]
    probs: np.ndarray  # [n_logits] descending


def _random_nodes(
    rng: np.random.Generator, L: int, P: int, n_features: int, d_features: int, vocab_size: int, n_logits: int
) -> _Nodes:
    slots = L * (P - 1)
    # Features: unique codes (layer, pos - 1, index) in row-major order, so sorting the codes
    # gives the contract order (layer, pos, feature).
    codes = (
        np.sort(rng.choice(slots * d_features, size=n_features, replace=False)) if n_features else np.zeros(0, np.int64)
    )
    f_cell, f_idx = np.divmod(codes, d_features)
    f_layer, f_pos = np.divmod(f_cell, max(P - 1, 1))
    f_pos = f_pos + 1
    # Errors: layer-major over positions 1..P-1.
    e_layer = np.repeat(np.arange(L), P - 1)
    e_pos = np.tile(np.arange(1, P), L)
    input_ids = rng.integers(0, vocab_size, size=P)
    logit_tokens = rng.choice(vocab_size, size=n_logits, replace=False)
    probs = np.sort(rng.dirichlet(np.ones(n_logits)))[::-1] * 0.9  # descending, sum 0.9
    nf, ne = n_features, e_layer.size
    return _Nodes(
        kind=np.array(["feature"] * nf + ["error"] * ne + ["embedding"] * P + ["logit"] * n_logits, dtype=object),
        layer=np.concatenate([f_layer, e_layer, np.full(P, -1), np.full(n_logits, L)]).astype(np.int64),
        pos=np.concatenate([f_pos, e_pos, np.arange(P), np.full(n_logits, P - 1)]).astype(np.int64),
        feature=np.concatenate([f_idx, np.full(ne + P + n_logits, -1)]).astype(np.int64),
        token_id=np.concatenate([np.full(nf + ne, -1), input_ids, logit_tokens]).astype(np.int64),
        input_ids=input_ids,
        logit_tokens=logit_tokens,
        probs=probs,
    )


def _random_edges(rng: np.random.Generator, nd: _Nodes, edges_per_node: int) -> sp.csr_array:
    """A[t, s] [N, N] float32: each feature / logit reads from lower layers at positions <= its own."""
    kind, layer, pos = nd.kind, nd.layer, nd.pos
    # Candidate sources sorted by layer: embeddings (layer -1), then features + errors per layer.
    pool = np.flatnonzero(kind != "logit")
    pool = pool[np.argsort(layer[pool], kind="stable")]
    targets = np.flatnonzero((kind == "feature") | (kind == "logit"))
    n_lower = np.searchsorted(layer[pool], layer[targets], side="left")  # [T] eligible by layer
    k = max(edges_per_node, 1)
    fan_in = np.where(kind[targets] == "logit", 4 * k, k)  # logits read from many nodes
    rep = np.repeat(np.arange(targets.size), 2 * fan_in)  # 2x draws: some fail the causal test
    src = pool[(rng.random(rep.size) * n_lower[rep]).astype(np.int64)]
    tgt = targets[rep]
    ok = pos[src] <= pos[tgt]  # causal: no reading from later positions
    emb_at = np.flatnonzero(kind == "embedding")[pos[targets]]  # guaranteed source per target
    src = np.concatenate([src[ok], emb_at])
    tgt = np.concatenate([tgt[ok], targets])
    w = rng.normal(0.0, 1.0, size=src.size) * np.where(kind[src] == "embedding", 2.0, 1.0)
    w[w == 0] = 1e-3  # every drawn edge is a real edge
    adj = sp.csr_array((w, (tgt, src)), shape=(kind.size, kind.size))
    adj.sum_duplicates()
    adj.eliminate_zeros()
    return sp.csr_array(adj.astype(np.float32))  # (the stubs lose the array type through astype)


def _node_table(rng: np.random.Generator, nd: _Nodes, adj: sp.csr_array, L: int) -> tuple[pd.DataFrame, dict]:
    """The node table, and the graph's tokens, bias_terms and target_values (h = row sum + bias)."""
    kind, layer, feature, n = nd.kind, nd.layer, nd.feature, nd.kind.size
    row_sum = np.asarray(adj.sum(axis=1), dtype=np.float64).ravel()  # [N]
    is_target = (kind == "feature") | (kind == "logit")
    bias = np.where(is_target, rng.normal(0.0, 0.1, size=n), 0.0).astype(np.float32)
    target_values = np.where(is_target, row_sum + bias, 0.0).astype(np.float32)
    activation = np.where(
        kind == "feature",
        rng.exponential(1.0, size=n) + 0.1,
        np.where(kind == "logit", target_values, rng.uniform(0.5, 2.0, size=n)),
    )
    logit_prob = np.zeros(n)
    logit_prob[kind == "logit"] = nd.probs
    tok_text = {int(t): f" t{int(t)}" for t in np.concatenate([nd.input_ids, nd.logit_tokens])}
    tokens = ["<bos>"] + [tok_text[int(t)] for t in nd.input_ids[1:]]
    token = np.array([""] * n, dtype=object)
    token[kind == "embedding"] = tokens
    token[kind == "logit"] = [tok_text[int(t)] for t in nd.logit_tokens]
    label = np.array([""] * n, dtype=object)
    labelled = np.flatnonzero(kind == "feature")[::3]  # some features carry a label
    label[labelled] = [f"feature {li}/{f}" for li, f in zip(layer[labelled], feature[labelled])]
    columns = {
        "node_id": node_ids(list(kind), layer, feature, nd.pos, nd.token_id, L),
        "kind": kind.astype(str),
        "layer": layer,
        "pos": nd.pos,
        "feature": feature,
        "token_id": nd.token_id,
        "token": token.astype(str),
        "activation": activation.astype(np.float32),
        "logit_prob": logit_prob.astype(np.float32),
        "target_weight": logit_prob.astype(np.float32),
        "label": label.astype(str),
    }
    rest = {"tokens": tokens, "bias_terms": bias, "target_values": target_values}
    return pd.DataFrame(columns, columns=list(NODE_COLUMNS)), rest


def random_graph(
    n_layers: int,
    n_pos: int,
    n_features: int,
    seed: int = 0,
    *,
    n_logits: int = 3,
    edges_per_node: int = 8,
    sparse: bool = False,
    d_features: int | None = None,
    vocab_size: int = 1000,
) -> Graph:
    """A random PLT-style graph: n_features active features at positions 1..n_pos-1 (BOS has none).

    Each feature / logit draws about `edges_per_node` sources among the nodes at lower layers and
    positions <= its own (embeddings count as layer -1), plus one guaranteed edge from the
    embedding at its own position. sparse=True stores A as CSR (for 100k-node graphs), else a
    dense float32 array. Deterministic in `seed`.
    """
    if n_layers < 1 or n_pos < 1 or n_features < 0 or n_logits < 1:
        raise ValueError("need n_layers >= 1, n_pos >= 1, n_features >= 0, n_logits >= 1")
    rng = np.random.default_rng(seed)
    slots = n_layers * (n_pos - 1)  # (layer, pos) cells that may hold features
    if d_features is None:
        d_features = max(64, 2 * -(-n_features // max(slots, 1)))
    if n_features > slots * d_features:
        raise ValueError(f"{n_features} features do not fit {slots} cells x {d_features} features")
    nd = _random_nodes(rng, n_layers, n_pos, n_features, d_features, vocab_size, n_logits)
    adj = _random_edges(rng, nd, edges_per_node)
    nodes, rest = _node_table(rng, nd, adj, n_layers)
    settings = {"max_n_logits": n_logits, "desired_logit_prob": DESIRED_LOGIT_PROB, "batch_size": 256}
    return Graph(
        prompt="".join(rest["tokens"][1:]),
        input_ids=nd.input_ids.tolist(),
        nodes=nodes,
        adjacency=adj if sparse else adj.toarray(),  # pyright: ignore[reportArgumentType]  # scipy stubs: adj is a csr_array
        n_layers=n_layers,
        model_id="synthetic",
        transcoder_id="synthetic-plt",
        settings=settings | {"max_feature_nodes": 7500, "seed": seed},
        is_cross_layer=False,
        **rest,
    )
