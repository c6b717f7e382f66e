"""Random but valid layered attribution graphs, for tests and viewer development (no model needed).

The graph follows the Graph contract: node order, id formats, a DAG (sources sit at strictly lower
layers and never later positions), and h_t = Σ_s A[t, s] + bias_terms[t] for features and logits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .defaults import DESIRED_LOGIT_PROB
from .graph import NODE_COLUMNS, Graph
from .ids import node_ids

__all__ = ["random_graph"]


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
    L, P = n_layers, n_pos
    slots = L * (P - 1)  # (layer, pos) cells that may hold features
    if d_features is None:
        d_features = max(64, 2 * -(-n_features // max(slots, 1)))
    if n_features > slots * d_features:
        raise ValueError(f"{n_features} features do not fit {slots} cells x {d_features} features")

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
    kind = np.array(["feature"] * nf + ["error"] * ne + ["embedding"] * P + ["logit"] * n_logits, dtype=object)
    layer = np.concatenate([f_layer, e_layer, np.full(P, -1), np.full(n_logits, L)]).astype(np.int64)
    pos = np.concatenate([f_pos, e_pos, np.arange(P), np.full(n_logits, P - 1)]).astype(np.int64)
    feature = np.concatenate([f_idx, np.full(ne + P + n_logits, -1)]).astype(np.int64)
    token_id = np.concatenate([np.full(nf + ne, -1), input_ids, logit_tokens]).astype(np.int64)
    n = kind.size

    # Candidate sources sorted by layer: embeddings (layer -1), then features + errors per layer.
    pool = np.flatnonzero(kind != "logit")
    pool = pool[np.argsort(layer[pool], kind="stable")]
    pool_layer = layer[pool]
    targets = np.flatnonzero((kind == "feature") | (kind == "logit"))
    n_lower = np.searchsorted(pool_layer, layer[targets], side="left")  # [T] eligible by layer
    k = max(edges_per_node, 1)
    fan_in = np.where(kind[targets] == "logit", 4 * k, k)  # logits read from many nodes
    rep = np.repeat(np.arange(targets.size), 2 * fan_in)  # 2x draws: some fail the causal test
    src = pool[(rng.random(rep.size) * n_lower[rep]).astype(np.int64)]
    tgt = targets[rep]
    ok = pos[src] <= pos[tgt]  # causal: no reading from later positions
    src, tgt = src[ok], tgt[ok]
    emb_at = np.flatnonzero(kind == "embedding")[pos[targets]]  # guaranteed source per target
    src = np.concatenate([src, emb_at])
    tgt = np.concatenate([tgt, targets])
    w = rng.normal(0.0, 1.0, size=src.size) * np.where(kind[src] == "embedding", 2.0, 1.0)
    w[w == 0] = 1e-3  # every drawn edge is a real edge
    adj = sp.csr_array((w, (tgt, src)), shape=(n, n))
    adj.sum_duplicates()
    adj.eliminate_zeros()
    adj = adj.astype(np.float32)

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
    logit_prob[kind == "logit"] = probs
    tok_text = {int(t): f" t{int(t)}" for t in np.concatenate([input_ids, logit_tokens])}
    tokens = ["<bos>"] + [tok_text[int(t)] for t in input_ids[1:]]
    token = np.array([""] * n, dtype=object)
    token[kind == "embedding"] = tokens
    token[kind == "logit"] = [tok_text[int(t)] for t in logit_tokens]
    label = np.array([""] * n, dtype=object)
    labelled = np.flatnonzero(kind == "feature")[::3]  # some features carry a label
    label[labelled] = [f"feature {li}/{f}" for li, f in zip(layer[labelled], feature[labelled])]

    nodes = pd.DataFrame(
        {
            "node_id": node_ids(list(kind), layer, feature, pos, token_id, L),
            "kind": kind.astype(str),
            "layer": layer,
            "pos": pos,
            "feature": feature,
            "token_id": token_id,
            "token": token.astype(str),
            "activation": activation.astype(np.float32),
            "logit_prob": logit_prob.astype(np.float32),
            "target_weight": logit_prob.astype(np.float32),
            "label": label.astype(str),
        },
        columns=list(NODE_COLUMNS),
    )
    return Graph(
        prompt="".join(tokens[1:]),
        input_ids=input_ids.tolist(),
        tokens=tokens,
        nodes=nodes,
        adjacency=adj if sparse else adj.toarray(),  # pyright: ignore[reportArgumentType]  # scipy stubs: adj is a csr_array
        n_layers=L,
        model_id="synthetic",
        transcoder_id="synthetic-plt",
        settings={
            "max_n_logits": n_logits,
            "desired_logit_prob": DESIRED_LOGIT_PROB,
            "batch_size": 256,
            "max_feature_nodes": 7500,
            "seed": seed,
        },
        is_cross_layer=False,
        bias_terms=bias,
        target_values=target_values,
    )
