"""Stage 3 of the engine: which active features become nodes, and their edge rows.

`choose_selection` picks one strategy per call:
- `AllFeatures` ("all"): every active feature is visited, in canonical order, each batch's rows
  written straight into the adjacency (dense) or turned into CSR parts (sparse);
- `GreedyRowStore` ("greedy"): under `max_feature_nodes`, the features with most estimated
  influence on the targets go first (re-ranked every `rerank_batches` batches, `ranking`); the full
  rows [cap, n_src] stay in host memory as |A| plus sign bits, and the kept columns are copied out;
- `TwoPass` ("two-pass"): the same greedy order where that row store would not fit (long prompts):
  the ranking keeps each row's `rank_top_entries` largest entries, and a second sweep recomputes the
  selected rows exactly.
Every strategy returns `FeatureRows`, including the share of influence that ends on the features
left out (`ranking.left_out_share`)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Protocol

import numpy as np
import psutil
import torch

from .assemble import AdjacencyBuilder, csr_parts
from .options import AttributionOptions
from .ranking import left_out_share, logit_influence, logit_influence_top

if TYPE_CHECKING:
    from .engine import BackwardPasses


@dataclass
class LogitRows:
    """Stage 2's output: the logit targets' edge rows and values."""

    rows: torch.Tensor  # [K, n_src] on the device
    values: torch.Tensor  # [K] centred logit (or custom direction) values
    weights: torch.Tensor  # [K] float32 influence weights (probabilities for token targets)


@dataclass
class FeatureRows:
    """Stage 3's output: the feature nodes and their edge rows."""

    visited: np.ndarray  # [n_v] int64 canonical indices of the features made nodes, ascending
    block: np.ndarray | None  # [n_v, n_cols] their rows over `kept_columns`; None: already in the adjacency
    left_out_share: float = 0.0  # ranking.left_out_share; 0 when every active feature is a node


class Selection(Protocol):
    name: str  # stats["selection"]

    def feature_rows(self, bwd: BackwardPasses, logits: LogitRows, adj: AdjacencyBuilder) -> FeatureRows: ...


def schedule(feats, features, bsz: int) -> list[list[int]]:
    """Backward batches for `features` (canonical indices): canonical order, cut at every layer
    change, each layer's run split into the fewest batches of at most `bsz` rows, of equal size.
    A batch's pass then starts at its own layer (nothing above it) and runs over the prefix up to
    its last position (nothing after it): causal-cone batching. The vmapped backward costs in
    proportion to rows x prefix length, so equal, position-sorted batches beat a full one plus a
    short tail (whose prefix is the whole prompt anyway)."""
    order = sorted(features)
    layers = feats.layer[torch.as_tensor(order, dtype=torch.long)].tolist()
    out: list[list[int]] = []
    lo = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or layers[i] != layers[lo]:
            n = i - lo
            k = -(-n // bsz)  # batches for this layer
            cuts = [lo + (n * j) // k for j in range(k + 1)]
            out += [order[a:b] for a, b in pairwise(cuts)]
            lo = i
    return out


def kept_columns(visited: np.ndarray, n_feat: int, n_src: int) -> np.ndarray:
    """Source columns that are node columns, in node order: visited features, errors, embeddings."""
    return np.concatenate([visited, np.arange(n_feat, n_src)])


def choose_selection(n_feat: int, n_visit: int, n_src: int, opts: AttributionOptions) -> Selection:
    if n_visit == n_feat:
        return AllFeatures()
    limit = opts.row_store_bytes
    if limit is None:
        limit = psutil.virtual_memory().available // 2
    if n_visit * n_src * 4 <= limit:
        return GreedyRowStore(n_visit, n_src, n_feat, opts.rerank_batches)
    return TwoPass(n_visit, n_feat, min(opts.rank_top_entries, n_feat), opts.rerank_batches)


class AllFeatures:
    """Every active feature, canonical order: node columns are exactly the source columns."""

    name = "all"

    def feature_rows(self, bwd: BackwardPasses, logits: LogitRows, adj: AdjacencyBuilder) -> FeatureRows:
        n_feat, n_src = len(bwd.lr.features), bwd.src.n_src
        for batch in schedule(bwd.lr.features, range(n_feat), bwd.batch_size):
            start, stop = batch[0], batch[-1] + 1
            out = bwd.feature_rows(batch, adj.rows_view(start, stop, n_src))
            if not adj.dense:
                adj.put_parts(start, csr_parts(out.cpu().numpy()))
        return FeatureRows(visited=np.arange(n_feat, dtype=np.int64), block=None)


class _Greedy:
    """Greedy visiting shared by the two capped strategies: next the unvisited features with most
    estimated influence on the logits, re-ranked every `rerank_batches` batches (circuit-tracer's
    update_interval). Subclasses say how rows are kept (`dest`, `keep`) and ranked (`influence`)."""

    def __init__(self, n_visit: int, n_feat: int, rerank_batches: int):
        self.n_visit, self.n_feat, self.rerank_batches = n_visit, n_feat, rerank_batches
        # set by `visit`: |logit rows| [K, n_src], their |.|_1 [K], the target weights [K]
        self.logit_abs = self.logit_sum = self.weights = torch.zeros(0)

    def visit(self, bwd: BackwardPasses, logits: LogitRows) -> list[int]:
        """Run the passes of n_visit features in greedy order; their canonical indices in that order."""
        self.weights = logits.weights
        self.logit_abs = logits.rows.cpu().abs()  # [K, n_src]
        self.logit_sum = self.logit_abs.sum(1)  # [K]
        visited: list[int] = []
        is_visited = torch.zeros(self.n_feat, dtype=torch.bool)
        while len(visited) < self.n_visit:
            infl = self.influence(visited)
            infl[is_visited] = -1.0
            queue = infl.topk(min(self.rerank_batches * bwd.batch_size, self.n_visit - len(visited))).indices.tolist()
            del infl
            for batch in schedule(bwd.lr.features, queue, bwd.batch_size):
                k0, k1 = len(visited), len(visited) + len(batch)
                self.keep(k0, k1, bwd.feature_rows(batch, self.dest(k0, k1)))
                visited.extend(batch)
            is_visited[torch.as_tensor(visited, dtype=torch.long)] = True
        return visited

    def influence(self, visited: list[int]) -> torch.Tensor:  # [n_feat]
        raise NotImplementedError

    def dest(self, k0: int, k1: int) -> torch.Tensor | None:
        return None

    def keep(self, k0: int, k1: int, out: torch.Tensor) -> None:
        """Keep what the ranking needs of rows k0:k1. `out` [b, n_src] (on the device) is the
        passes' scratch buffer or `dest`, free to overwrite: |.| is taken in place."""
        raise NotImplementedError

    def share(self, kept_abs: torch.Tensor, lost_abs: torch.Tensor, row_sum: torch.Tensor, vis: np.ndarray) -> float:
        return left_out_share(
            self.logit_abs, self.logit_sum, self.weights, kept_abs, lost_abs, row_sum, vis, self.n_feat
        )

    def left_mask(self, vis: np.ndarray, device=None) -> torch.Tensor:
        """[n_feat] float32: 1 on the feature columns left out."""
        left = torch.ones(self.n_feat, device=device)
        left[torch.as_tensor(vis, device=device)] = 0.0
        return left


class GreedyRowStore(_Greedy):
    """Greedy selection over the full rows, kept in host memory as |A| (what the ranking reads, in
    one mat-vec) and their signs as packed bits; only the kept columns are copied out."""

    name = "greedy"

    def __init__(self, n_visit: int, n_src: int, n_feat: int, rerank_batches: int):
        super().__init__(n_visit, n_feat, rerank_batches)
        self.rows = torch.zeros(n_visit, n_src)  # |rows| in visiting order
        self.neg = np.zeros((n_visit, (n_src + 7) // 8), dtype=np.uint8)  # their signs, 1 bit each
        self.sums = torch.zeros(n_visit)  # |row|_1

    def influence(self, visited: list[int]) -> torch.Tensor:
        k = len(visited)
        return logit_influence(
            self.logit_abs, self.logit_sum, self.weights, self.rows[:k], self.sums[:k], visited, self.n_feat
        )

    def dest(self, k0: int, k1: int) -> torch.Tensor:
        return self.rows[k0:k1]

    def keep(self, k0: int, k1: int, out: torch.Tensor) -> None:
        dest = self.rows[k0:k1]  # `out` itself on CPU; a copy of it on GPU
        self.neg[k0:k1] = np.packbits(dest.numpy() < 0, axis=1)
        self.sums[k0:k1] = dest.abs_().sum(1)

    def feature_rows(self, bwd: BackwardPasses, logits: LogitRows, adj: AdjacencyBuilder) -> FeatureRows:
        visited = np.asarray(self.visit(bwd, logits), dtype=np.int64)
        vis = np.sort(visited)
        keep_cols = kept_columns(vis, self.n_feat, self.rows.shape[1])
        order = np.argsort(visited, kind="stable")
        block = self.rows.numpy()[np.ix_(order, keep_cols)]  # [n_v, n_cols] |A|; no full-width copy
        lost = (self.rows[:, : self.n_feat] @ self.left_mask(vis))[torch.from_numpy(order)]
        share = self.share(torch.from_numpy(block[:, : len(vis)]), lost, self.sums[torch.from_numpy(order)], vis)
        bit = (7 - (keep_cols & 7)).astype(np.uint8)  # np.packbits is big-endian within a byte
        neg = (self.neg[np.ix_(order, keep_cols >> 3)] >> bit) & 1
        np.negative(block, out=block, where=neg.astype(bool))
        del self.rows, self.sums, self.neg  # free the row store before assembly
        return FeatureRows(visited=vis, block=block, left_out_share=share)


class TwoPass(_Greedy):
    """Greedy selection on each row's largest entries (memory O(cap x rank_top_entries)), then a
    second sweep over the selected features for their exact rows, kept columns only."""

    name = "two-pass"

    def __init__(self, n_visit: int, n_feat: int, n_top: int, rerank_batches: int):
        super().__init__(n_visit, n_feat, rerank_batches)
        self.top_idx = torch.zeros(n_visit, n_top, dtype=torch.long)  # filled in visiting order
        self.top_val = torch.zeros(n_visit, n_top)  # Â there (divided by the full row's |.|_1)

    def influence(self, visited: list[int]) -> torch.Tensor:
        k = len(visited)
        return logit_influence_top(
            self.logit_abs, self.logit_sum, self.weights, self.top_idx[:k], self.top_val[:k], visited, self.n_feat
        )

    def keep(self, k0: int, k1: int, out: torch.Tensor) -> None:
        # in place: a fresh [b, n_src] per batch cost the CPU page faults as large as the product
        # (a 512-token prompt: 110 s of system time in a 440-s call)
        out_abs = out.abs_()
        row_sum = out_abs.sum(1)
        v, i = out_abs[:, : self.n_feat].topk(self.top_idx.shape[1], dim=1)
        self.top_val[k0:k1] = (v / row_sum.clamp_min(1e-30)[:, None]).cpu()
        self.top_idx[k0:k1] = i.cpu()

    def feature_rows(self, bwd: BackwardPasses, logits: LogitRows, adj: AdjacencyBuilder) -> FeatureRows:
        bwd.bar.total += self.n_visit
        bwd.bar.set_description("attribution (selecting)")
        vis = np.sort(np.asarray(self.visit(bwd, logits), dtype=np.int64))
        del self.top_idx, self.top_val  # free the top lists before the second sweep
        bwd.bar.set_description("attribution (exact rows)")
        keep_cols = kept_columns(vis, self.n_feat, bwd.src.n_src)
        block = np.empty((len(vis), len(keep_cols)), dtype=np.float32)
        cols_dev = torch.as_tensor(keep_cols, device=bwd.device)
        left = self.left_mask(vis, bwd.device)
        lost, sums = torch.zeros(len(vis)), torch.zeros(len(vis))
        r = 0
        for batch in schedule(bwd.lr.features, vis.tolist(), bwd.batch_size):
            out = bwd.feature_rows(batch)
            block[r : r + len(batch)] = out[:, cols_dev].cpu().numpy()
            out_abs = out.abs_()  # the scratch buffer, as in `keep`
            sums[r : r + len(batch)] = out_abs.sum(1).cpu()
            lost[r : r + len(batch)] = (out_abs[:, : self.n_feat] @ left).cpu()
            r += len(batch)
        share = self.share(torch.from_numpy(np.abs(block[:, : len(vis)])), lost, sums, vis)
        return FeatureRows(visited=vis, block=block, left_out_share=share)
