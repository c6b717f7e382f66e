"""Stage 4 of the engine: the node-order adjacency, the constant terms and the node table.

Node order: visited features (canonical order), errors (layer, pos >= 1), embeddings (pos), logit
targets. Adjacency rows are targets, columns sources; only feature and logit rows are filled."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..graphs.graph import NODE_COLUMNS
from ..replacement.local import LocalReplacement
from .targets import Target

# Graph's node-table columns but node_id, which Graph makes from the others.
NODE_TABLE_COLUMNS = [c for c in NODE_COLUMNS if c != "node_id"]


def csr_parts(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data [nnz] float32, column indices [nnz] int64, nonzeros per row [R]) of a dense block."""
    mask = block != 0
    return block[mask], np.flatnonzero(mask) % block.shape[1], np.count_nonzero(mask, axis=1)


def csr_from_parts(parts: list, row_starts: list[int], n: int) -> sp.csr_array:
    """CSR [n, n] whose rows row_starts[i] .. get the rows of parts[i] (row starts ascending)."""
    counts = np.zeros(n, dtype=np.int64)
    for (_, _, c), r0 in zip(parts, row_starts):
        counts[r0 : r0 + len(c)] = c
    nnz = int(counts.sum())
    idx_dtype = np.int32 if max(nnz, n) < np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(n + 1, dtype=idx_dtype)
    np.cumsum(counts, out=indptr[1:])
    data = np.empty(nnz, dtype=np.float32)
    indices = np.empty(nnz, dtype=idx_dtype)
    for (d, i, _), r0 in zip(parts, row_starts):
        lo = int(indptr[r0])
        data[lo : lo + len(d)] = d
        indices[lo : lo + len(d)] = i
    out = sp.csr_array((data, indices, indptr), shape=(n, n), copy=False)
    out.has_sorted_indices = True
    return out


class AdjacencyBuilder:
    """The adjacency [N, N] float32 being filled: a dense array when N * N * 4 <= limit_bytes
    (allocated on first use), else CSR built from per-block parts, so memory grows with the
    nonzeros rather than with N^2."""

    def __init__(self, n_nodes: int, limit_bytes: int):
        self.n = n_nodes
        self.dense = n_nodes * n_nodes * 4 <= limit_bytes
        self._array: np.ndarray | None = None
        self._parts: list = []  # CSR: (data, indices, counts) per block, and its first row
        self._starts: list[int] = []

    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.zeros((self.n, self.n), dtype=np.float32)
        return self._array

    def rows_view(self, r0: int, r1: int, n_cols: int) -> torch.Tensor | None:
        """Zero-filled rows r0:r1, columns :n_cols of the dense array to write into, or None (CSR)."""
        return torch.from_numpy(self.array())[r0:r1, :n_cols] if self.dense else None

    def put(self, r0: int, block: np.ndarray) -> None:
        """Rows r0 .. r0 + len(block), columns :block.shape[1]; CSR blocks go in ~4M-entry chunks
        so the boolean masks of `csr_parts` stay small."""
        if self.dense:
            self.array()[r0 : r0 + len(block), : block.shape[1]] = block
            return
        step = max(1, (1 << 22) // max(1, block.shape[1]))
        for lo in range(0, len(block), step):
            self.put_parts(r0 + lo, csr_parts(block[lo : lo + step]))

    def put_parts(self, r0: int, parts: tuple) -> None:
        self._parts.append(parts)
        self._starts.append(r0)

    def finish(self) -> tuple[np.ndarray | sp.csr_array, np.ndarray, int]:
        """(adjacency, row sums [N], number of nonzero entries)."""
        if self.dense:
            adjacency = self.array()
            return adjacency, adjacency.sum(1), int(np.count_nonzero(adjacency))
        adjacency = csr_from_parts(self._parts, self._starts, self.n)
        self._parts, self._starts = [], []
        return adjacency, np.asarray(adjacency.sum(1)).ravel(), int(np.count_nonzero(adjacency.data))


def constant_terms(
    n_nodes: int, target_rows: np.ndarray, pre_activations: np.ndarray, logit_values: np.ndarray, row_sums: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(bias_terms [N], target_values [N]) float64: a target's value minus its incoming edges.
    target_rows: the visited feature rows then the K logit rows, valued by pre_activations [n_v]
    and logit_values [K]; other nodes get zeros."""
    target_values = np.zeros(n_nodes, dtype=np.float64)
    n_v, K = len(pre_activations), len(logit_values)
    target_values[:n_v] = pre_activations
    target_values[n_nodes - K :] = logit_values
    bias_terms = np.zeros(n_nodes, dtype=np.float64)
    bias_terms[target_rows] = target_values[target_rows] - row_sums[target_rows]
    return bias_terms, target_values


def node_table(rm, lr: LocalReplacement, vis: np.ndarray, tgts: list[Target], logit_values) -> pd.DataFrame:
    """Node table in adjacency order (no node_id column: the graph layer names nodes)."""
    L, P = rm.n_layers, lr.n_pos
    ids = lr.input_ids.tolist()
    toks = rm.decode_tokens(ids)
    f = lr.features
    vt = torch.as_tensor(vis, dtype=torch.long)
    fl, fp, fi = f.layer[vt].tolist(), f.pos[vt].tolist(), f.index[vt].tolist()
    fa = f.activation[vt].float().tolist()
    err_norm = lr.errors[:, 1:].float().norm(dim=-1)  # [L, P-1]
    emb_norm = lr.embeds.float().norm(dim=-1)  # [P]
    rows = []
    for l, p, i, a in zip(fl, fp, fi, fa):
        rows.append(("feature", l, p, i, ids[p], toks[p], a, 0.0, 0.0, ""))
    for l in range(L):
        for p in range(1, P):
            rows.append(("error", l, p, -1, ids[p], toks[p], float(err_norm[l, p - 1]), 0.0, 0.0, ""))
    for p in range(P):
        rows.append(("embedding", -1, p, -1, ids[p], toks[p], float(emb_norm[p]), 0.0, 0.0, ""))
    for t, v in zip(tgts, logit_values.tolist()):
        rows.append(("logit", L, P - 1, -1, t.token_id, t.label, float(v), t.prob, t.weight, t.label))
    return pd.DataFrame(rows, columns=NODE_TABLE_COLUMNS)
