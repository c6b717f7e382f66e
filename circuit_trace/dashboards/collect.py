"""Running per-feature statistics of one transcoder layer over a stream of contexts, in memory
that does not grow with the corpus: O(F · (top_k + n_samples) · P) for the kept examples, plus
O(F · n_bins) for the histograms.

- top-k contexts by max activation (a running top-k, merged batch by batch);
- a uniform sample of the contexts where the feature is active (reservoir sampling by random
  priority keys), grouped into activation quantiles at the end;
- activation frequency (active token positions / all token positions), max and sum;
- a histogram of the nonzero activations on fixed log10 bins;
- optionally, the activation mass per concept (for labels; see `labels.ConceptMap`)."""

from __future__ import annotations

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
    keys: torch.Tensor, new_keys: torch.Tensor, payloads: list[torch.Tensor], new_payloads: list[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Keep, per feature (row), the K largest of keys [F, K] ∪ new_keys [F, B], and the payloads
    ([F, K, ...] and [F, B, ...]) that go with them."""
    k = keys.shape[1]
    kept, idx = torch.cat([keys, new_keys], 1).topk(k, dim=1)  # [F, K]
    out = []
    for old, new in zip(payloads, new_payloads):
        both = torch.cat([old, new.to(old.dtype)], 1)
        gather_idx = idx.view(*idx.shape, *([1] * (both.dim() - 2))).expand(-1, -1, *both.shape[2:])
        out.append(both.gather(1, gather_idx))
    return kept, out


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
        that count (real tokens, BOS excluded); concept_ids [B, P'] (0..C, C = no concept)."""
        B, Pb, F = acts.shape
        acts = acts.float() * mask[..., None]
        ctx_max = acts.amax(1).T  # [F, B]
        per_tok = acts.permute(2, 0, 1)  # [F, B, P']
        P = self.top_acts.shape[2]
        if Pb < P:
            per_tok = torch.nn.functional.pad(per_tok, (0, P - Pb))
        ctx_ids = torch.arange(first, first + B, device=acts.device).expand(F, B)
        self._update_top(ctx_max, ctx_ids, per_tok)
        self._update_sample(ctx_max, ctx_ids, per_tok, first)
        flat = acts.reshape(B * Pb, F)
        active = flat > 0
        self.n_active += active.sum(0)
        self.n_tokens += mask.sum()
        self.act_max = torch.maximum(self.act_max, ctx_max.amax(1))
        self.act_sum += flat.sum(0, dtype=torch.float64)
        self._update_hist(flat, active)
        if self.concept_mass is not None and concept_ids is not None:
            onehot = torch.nn.functional.one_hot(concept_ids.reshape(-1).to(acts.device), self.concept_mass.shape[1])
            self.concept_mass += (flat.T @ onehot.to(flat.dtype)).double()  # [F, C+1]

    def _update_top(self, ctx_max: torch.Tensor, ctx_ids: torch.Tensor, per_tok: torch.Tensor) -> None:
        keys = torch.where(ctx_max > 0, ctx_max, torch.full_like(ctx_max, -1.0))
        if not bool((keys > self.top_val[:, -1:]).any()):
            return  # nothing beats the current k-th context of any feature
        self.top_val, (self.top_ctx, self.top_acts) = _merge(
            self.top_val, keys, [self.top_ctx, self.top_acts], [ctx_ids, per_tok]
        )

    def _update_sample(self, ctx_max: torch.Tensor, ctx_ids: torch.Tensor, per_tok: torch.Tensor, first: int) -> None:
        # Priority keys from a generator seeded by the batch's first context: a resumed run draws
        # the same keys for the same contexts.
        gen = torch.Generator(device=ctx_max.device).manual_seed(self.options.seed * 1_000_003 + first)
        rand = torch.rand(ctx_max.shape, generator=gen, device=ctx_max.device)
        keys = torch.where(ctx_max > 0, rand, torch.full_like(rand, -1.0))
        if not bool((keys > self.smp_key[:, -1:]).any()):
            return
        self.smp_key, (self.smp_val, self.smp_ctx, self.smp_acts) = _merge(
            self.smp_key, keys, [self.smp_val, self.smp_ctx, self.smp_acts], [ctx_max, ctx_ids, per_tok]
        )

    def _update_hist(self, flat: torch.Tensor, active: torch.Tensor) -> None:
        o = self.options
        pos, feat = active.nonzero(as_tuple=True)
        if not len(feat):
            return
        width = (o.log10_max - o.log10_min) / o.n_bins
        b = ((flat[pos, feat].log10() - o.log10_min) / width).floor().clamp(0, o.n_bins - 1).long()
        self.hist.view(-1).index_add_(0, feat * o.n_bins + b, torch.ones_like(b))

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
