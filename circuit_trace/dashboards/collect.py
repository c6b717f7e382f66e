"""Running per-feature statistics of one transcoder layer over a stream of contexts, in memory
that does not grow with the corpus: O(F · (top_k + n_samples) · P) for the kept examples, plus
O(F · n_bins) for the histograms.

- top-k contexts by max activation (a running top-k, merged batch by batch; slots unordered);
- a uniform sample of the contexts where the feature is active (reservoir sampling by random
  priority keys), grouped into activation quantiles at the end;
- activation frequency (active token positions / all token positions), max and sum;
- a histogram of the nonzero activations on fixed log10 bins;
- optionally, the activation mass per concept (for labels; see `labels.ConceptMap`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["LayerStats", "StatsOptions"]


@dataclass
class StatsOptions:
    top_k: int = 12  # top-activating contexts kept per feature
    n_samples: int = 24  # uniformly sampled active contexts per feature (become the quantile groups)
    n_bins: int = 48  # histogram bins over log10(activation) in [log10_min, log10_max]
    log10_min: float = -3.0
    log10_max: float = 3.0
    seed: int = 0


def _merge(
    keys: torch.Tensor,
    new_keys: torch.Tensor,
    payloads: list[torch.Tensor],
    fetch: Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]],
) -> None:
    """Keep, per feature (row), the K largest of keys [F, K] ∪ new_keys [F, B], and the payloads
    ([F, K, ...]) that go with them; in place, slots unordered: a new entry that makes it in takes
    the slot of one that drops out, so kept payloads never move. `fetch(f, b)` gives the new
    entries' payloads ([n, ...] each) for the (feature, context) pairs that made it in: only those
    are ever built, since a batch's full [F, B, P] payload would cost more than the rest."""
    k = keys.shape[1]
    rows = (new_keys > keys.amin(1, keepdim=True)).any(1).nonzero().squeeze(1)  # [R]: rows that change
    if not len(rows):
        return
    both = torch.cat([keys[rows], new_keys[rows]], 1)  # [R, K + B]
    kept = torch.zeros_like(both, dtype=torch.bool).scatter_(1, both.topk(k, dim=1).indices, True)
    # Per row, as many old entries drop out as new ones come in; nonzero lists both row by row, so
    # the i-th freed slot goes to the i-th newcomer.
    r_out, slot = (~kept[:, :k]).nonzero(as_tuple=True)
    r_in, b = kept[:, k:].nonzero(as_tuple=True)
    f_out, f_in = rows[r_out], rows[r_in]
    keys[f_out, slot] = new_keys[f_in, b]
    for o, new in zip(payloads, fetch(f_in, b)):
        o[f_out, slot] = new.to(o.dtype)


@dataclass
class _Entries:
    """One batch's active entries (activation > 0 at a counted position) as coordinate lists, and
    what turning some of them back into per-token rows needs."""

    b: torch.Tensor  # [n] context within the batch
    p: torch.Tensor  # [n] position
    f: torch.Tensor  # [n] feature
    cell: torch.Tensor  # [n] the entry's (context, feature) cell, b · F + f
    vals: torch.Tensor  # [n] float32
    shape: tuple[int, int]  # (B, F)
    first: int  # index of the batch's first context
    ctx_len: int  # P: what the stored per-token rows are padded to

    @classmethod
    def of(cls, acts: torch.Tensor, mask: torch.Tensor, first: int, ctx_len: int) -> _Entries:
        """acts [B, P', F], mask [B, P']."""
        B, Pb, F = acts.shape
        flat = acts.reshape(-1)
        idx = flat.nonzero().squeeze(1)  # [n]: the one dense pass; the rest works on the entries
        vals = flat[idx].float()
        b, p, f = idx // (Pb * F), idx // F % Pb, idx % F
        keep = ((vals > 0) & mask[b, p]).nonzero().squeeze(1)  # positive, at a position that counts
        b, p, f = b[keep], p[keep], f[keep]
        return cls(b, p, f, b * F + f, vals[keep], (B, F), first, ctx_len)

    def rows(self, f: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """f, b [m] -> [m, P]: feature f's activation at every position of context b (0 where it is
        silent or the position does not count), built from the entries, never from a dense read."""
        n_ctx, n_feat = self.shape
        row_of = torch.full((n_ctx * n_feat,), -1, dtype=torch.long, device=f.device)
        row_of[b * n_feat + f] = torch.arange(len(f), device=f.device)
        r = row_of[self.cell]  # [n]: the row each entry belongs to, or -1
        hit = (r >= 0).nonzero().squeeze(1)
        out = torch.zeros(len(f), self.ctx_len, device=f.device)
        out[r[hit], self.p[hit]] = self.vals[hit]
        return out


class LayerStats:
    """Statistics of F features over contexts of at most P tokens (see the module docstring)."""

    def __init__(
        self,
        n_features: int,
        ctx_len: int,
        options: StatsOptions,
        *,
        n_concepts: int = 0,
        device: torch.device | str = "cpu",
    ):
        F, P, K, S = n_features, ctx_len, options.top_k, options.n_samples
        self.options, self.device = options, torch.device(device)
        z: dict[str, Any] = {"device": self.device}
        self.top_val = torch.full((F, K), -1.0, **z)  # max activation in the context; -1 = empty slot
        self.top_ctx = torch.full((F, K), -1, dtype=torch.long, **z)
        self.top_acts = torch.zeros(F, K, P, dtype=torch.float16, **z)
        self.smp_key = torch.full((F, S), -1.0, **z)  # random priority; -1 = empty slot
        self.smp_val = torch.zeros(F, S, **z)
        self.smp_ctx = torch.full((F, S), -1, dtype=torch.long, **z)
        self.smp_acts = torch.zeros(F, S, P, dtype=torch.float16, **z)
        self.n_active = torch.zeros(F, dtype=torch.long, **z)  # active token positions
        self.act_max = torch.zeros(F, **z)
        self.act_sum = torch.zeros(F, dtype=torch.float64, **z)
        self.hist = torch.zeros(F, options.n_bins, dtype=torch.long, **z)
        self.concept_mass = torch.zeros(F, n_concepts + 1, dtype=torch.float64, **z) if n_concepts else None
        self.n_tokens = torch.zeros((), dtype=torch.long, **z)

    @torch.no_grad()
    def update(
        self, acts: torch.Tensor, mask: torch.Tensor, first: int, concept_ids: torch.Tensor | None = None
    ) -> None:
        """acts [B, P', F] (P' ≤ P) of contexts first..first+B-1; mask [B, P'] marks the positions
        that count (real tokens, BOS excluded); concept_ids [B, P'] (0..C, C = no concept).
        Everything is computed from the active entries alone (activation > 0 at a counted position):
        transcoders are sparse, and the one pass that finds those entries is the only dense work."""
        B, _, F = acts.shape
        e = _Entries.of(acts, mask, first, self.top_acts.shape[2])
        b, p, f, vals = e.b, e.p, e.f, e.vals
        ctx_max = vals.new_zeros(B * F).scatter_reduce_(0, e.cell, vals, "amax")
        ctx_max = ctx_max.view(B, F).T  # [F, B]; 0 where the feature is silent in the context
        self._update_top(ctx_max, e)
        self._update_sample(ctx_max, e)
        self.n_active += torch.bincount(f, minlength=F)
        self.n_tokens += mask.sum()
        self.act_max = torch.maximum(self.act_max, ctx_max.amax(1))
        self.act_sum.index_add_(0, f, vals.double())
        self._update_hist(f, vals)
        if self.concept_mass is not None and concept_ids is not None:
            n_col = self.concept_mass.shape[1]
            self.concept_mass.view(-1).index_add_(0, f * n_col + concept_ids.to(acts.device)[b, p], vals.double())

    def _update_top(self, ctx_max: torch.Tensor, e: _Entries) -> None:
        keys = torch.where(ctx_max > 0, ctx_max, torch.full_like(ctx_max, -1.0))
        _merge(self.top_val, keys, [self.top_ctx, self.top_acts], lambda f, b: [e.first + b, e.rows(f, b)])

    def _update_sample(self, ctx_max: torch.Tensor, e: _Entries) -> None:
        # Priority keys from a generator seeded by the batch's first context: a resumed run draws
        # the same keys for the same contexts.
        gen = torch.Generator(device=ctx_max.device).manual_seed(self.options.seed * 1_000_003 + e.first)
        rand = torch.rand(ctx_max.shape, generator=gen, device=ctx_max.device)
        keys = torch.where(ctx_max > 0, rand, torch.full_like(rand, -1.0))
        _merge(
            self.smp_key,
            keys,
            [self.smp_val, self.smp_ctx, self.smp_acts],
            lambda f, b: [ctx_max[f, b], e.first + b, e.rows(f, b)],
        )

    def _update_hist(self, f: torch.Tensor, vals: torch.Tensor) -> None:
        """f, vals [n]: the features and values of the active entries."""
        o = self.options
        if not len(f):
            return
        width = (o.log10_max - o.log10_min) / o.n_bins
        b = ((vals.log10() - o.log10_min) / width).floor().clamp(0, o.n_bins - 1).long()
        self.hist.view(-1).index_add_(0, f * o.n_bins + b, torch.ones_like(b))

    def bin_edges(self) -> list[float]:
        o = self.options
        step = (o.log10_max - o.log10_min) / o.n_bins
        return [10 ** (o.log10_min + i * step) for i in range(o.n_bins + 1)]

    # -- resume ------------------------------------------------------------------------------------
    _FIELDS = (
        "top_val",
        "top_ctx",
        "top_acts",
        "smp_key",
        "smp_val",
        "smp_ctx",
        "smp_acts",
        "n_active",
        "act_max",
        "act_sum",
        "hist",
        "n_tokens",
        "concept_mass",
    )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).detach().cpu().contiguous() for k in self._FIELDS if getattr(self, k) is not None}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k in self._FIELDS:
            cur = getattr(self, k)
            if cur is None:
                continue
            if k not in state or state[k].shape != cur.shape:
                raise ValueError(f"saved dashboard state does not fit: {k}")
            setattr(self, k, state[k].to(cur.device, cur.dtype))
