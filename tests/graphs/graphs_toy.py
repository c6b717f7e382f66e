"""The hand-built toy graph whose numbers the tests work out by hand.

Toy graph (n_layers = 2, prompt "<bos> cat", rows in contract order):

    idx  name  kind       layer pos feature token_id
    0    F0    feature    0     1   5       -
    1    F1    feature    0     1   7       -
    2    F2    feature    1     1   3       -
    3    Err   error      0     1   -       -
    4    E0    embedding  -1    0   -       1
    5    E1    embedding  -1    1   -       42
    6    L0    logit      2     1   -       11   p = 0.75
    7    L1    logit      2     1   -       22   p = 0.25

Edges A[target, source]:
    F0 <- E1  2,  F0 <- E0 -2
    F1 <- E1  3,  F1 <- E0  1
    F2 <- F0  1,  F2 <- F1 -1,  F2 <- Err 2
    L0 <- F2  3,  L0 <- F0  1
    L1 <- F1 -2,  L1 <- E1  2
Every nonzero row has |row| summing to 4 except F2 (4 as well: 1 + 1 + 2), so Â = |A| / 4.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from circuit_trace.graphs import NODE_COLUMNS, Graph

F0, F1, F2, ERR, E0, E1, L0, L1 = range(8)

EDGES = [
    (F0, E1, 2.0), (F0, E0, -2.0),
    (F1, E1, 3.0), (F1, E0, 1.0),
    (F2, F0, 1.0), (F2, F1, -1.0), (F2, ERR, 2.0),
    (L0, F2, 3.0), (L0, F0, 1.0),
    (L1, F1, -2.0), (L1, E1, 2.0),
]  # fmt: skip


def toy_adjacency() -> np.ndarray:
    a = np.zeros((8, 8), dtype=np.float32)
    for t, s, w in EDGES:
        a[t, s] = w
    return a


def make_toy_graph(sparse: bool = False) -> Graph:
    rows = [
        # node_id, kind, layer, pos, feature, token_id, token, activation, logit_prob,
        # target_weight, label
        ("0_5_1", "feature", 0, 1, 5, -1, "", 1.5, 0.0, 0.0, "cat-ish"),
        ("0_7_1", "feature", 0, 1, 7, -1, "", 2.0, 0.0, 0.0, ""),
        ("1_3_1", "feature", 1, 1, 3, -1, "", 0.5, 0.0, 0.0, "say animal"),
        ("0_-1_1", "error", 0, 1, -1, -1, "", 0.3, 0.0, 0.0, ""),
        ("E_1_0", "embedding", -1, 0, -1, 1, "<bos>", 1.0, 0.0, 0.0, ""),
        ("E_42_1", "embedding", -1, 1, -1, 42, " cat", 1.0, 0.0, 0.0, ""),
        ("3_11_1", "logit", 2, 1, -1, 11, " dog", 4.0, 0.75, 0.75, ""),
        ("3_22_1", "logit", 2, 1, -1, 22, "\n", 2.0, 0.25, 0.25, ""),
    ]
    nodes = pd.DataFrame(rows, columns=list(NODE_COLUMNS))
    a = toy_adjacency()
    bias = np.array([0.5, 0, 0, 0, 0, 0, -1.0, 0], dtype=np.float32)
    return Graph(
        prompt="<bos> cat",
        input_ids=[1, 42],
        tokens=["<bos>", " cat"],
        nodes=nodes,
        adjacency=sp.csr_array(a) if sparse else a,
        n_layers=2,
        model_id="toy-model",
        transcoder_id="toy-plt",
        settings={"batch_size": 256, "max_feature_nodes": 7500},
        is_cross_layer=False,
        bias_terms=bias,
        target_values=a.sum(axis=1) + bias,
    )
