"""Transcoder quality metrics, named as in SPEC §1: FVU, NMSE, L0 (per layer and total), dead fraction
over a stated token window, and replacement KL / top-1 agreement with every MLP replaced."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .chunks import content_mask


@dataclass
class ReconstructionStats:
    """Streaming sums for FVU = Σ‖y−ŷ‖² / Σ‖y−ȳ‖², NMSE = Σ‖y−ŷ‖² / Σ‖y‖² and L0, per layer
    (float64; ȳ is the per-layer mean over all tokens seen)."""

    n_layers: int
    n_tokens: int = 0
    sse: torch.Tensor = field(init=False)  # [L] Σ‖y−ŷ‖²
    ssy: torch.Tensor = field(init=False)  # [L] Σ‖y‖²
    sum_y: torch.Tensor | None = None  # [L, d] Σy
    active: torch.Tensor = field(init=False)  # [L] Σ (active features per token)

    def __post_init__(self):
        self.sse, self.ssy, self.active = (torch.zeros(self.n_layers, dtype=torch.float64) for _ in range(3))

    @torch.no_grad()
    def update(self, y: torch.Tensor, y_hat: torch.Tensor, acts: list[torch.Tensor] | None = None):
        """y, y_hat [N, L, d]; acts: per layer [N, F]."""
        y, y_hat = y.double().cpu(), y_hat.double().cpu()
        self.n_tokens += y.shape[0]
        self.sse += (y - y_hat).pow(2).sum((0, 2))
        self.ssy += y.pow(2).sum((0, 2))
        self.sum_y = y.sum(0) if self.sum_y is None else self.sum_y + y.sum(0)
        if acts is not None:
            self.active += torch.stack([(a != 0).sum().double().cpu() for a in acts])

    def without(self, part: ReconstructionStats) -> ReconstructionStats:
        """The sums over the tokens seen here but not by ``part`` (whose tokens must be a subset of
        these): a few excluded tokens are summed once, not the many kept ones a second time."""
        rest = ReconstructionStats(self.n_layers, self.n_tokens - part.n_tokens)
        rest.sse, rest.ssy, rest.active = self.sse - part.sse, self.ssy - part.ssy, self.active - part.active
        rest.sum_y = self.sum_y if part.sum_y is None or self.sum_y is None else self.sum_y - part.sum_y
        return rest

    def variance(self) -> torch.Tensor:
        """[L] Σ‖y−ȳ‖² (the FVU denominator), from the streaming sums."""
        if self.sum_y is None:
            raise ValueError("no tokens seen yet: call update() first")
        return self.ssy - self.sum_y.pow(2).sum(-1) / self.n_tokens

    def fvu(self) -> list[float]:
        return (self.sse / self.variance()).tolist()

    def nmse(self) -> list[float]:
        return (self.sse / self.ssy).tolist()

    def l0(self) -> list[float]:
        return (self.active / max(self.n_tokens, 1)).tolist()

    def summary(self) -> dict:
        return {
            "fvu": self.fvu(),
            "nmse": self.nmse(),
            "l0": self.l0(),
            "l0_total": sum(self.l0()),
            "fvu_total": float(self.sse.sum() / self.variance().sum()),
            "nmse_total": float(self.sse.sum() / self.ssy.sum()),
            "tokens": self.n_tokens,
        }


def fvu(
    y: torch.Tensor, y_hat: torch.Tensor, *, per_layer: bool = True, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """FVU of ``[N, L, d]`` tensors (ȳ = mean over N), computed in ``dtype``: per layer ``[L]``, or
    over all layers at once (a scalar) with ``per_layer=False``."""
    y, y_hat = y.to(dtype), y_hat.to(dtype)
    if not per_layer:
        return (y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum()
    return (y - y_hat).pow(2).sum((0, 2)) / (y - y.mean(0)).pow(2).sum((0, 2))


def nmse(y: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """Per-layer NMSE of ``[N, L, d]`` tensors."""
    y, y_hat = y.double(), y_hat.double()
    return (y - y_hat).pow(2).sum((0, 2)) / y.pow(2).sum((0, 2))


def l0(acts: list[torch.Tensor]) -> torch.Tensor:
    """Mean number of active features per token, per layer (acts: per layer ``[N, F]``)."""
    return torch.stack([(a != 0).float().sum(-1).mean() for a in acts])


def dead_fraction(tokens_since_fired: torch.Tensor, window: int) -> float:
    """Fraction of features that did not fire in the last ``window`` tokens."""
    return float((tokens_since_fired.cpu() >= window).float().mean())


@torch.no_grad()
def reconstruct_tokens(transcoder, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``x [N, L, d]`` -> (ŷ ``[N, L, d]`` incl. b_dec and skip, per-layer activations ``[N, F]``)."""
    acts = [transcoder.encode(x[:, l], l) for l in range(transcoder.n_layers)]
    y_hat = transcoder.decode(acts).transpose(0, 1)
    skips = torch.stack([transcoder.skip(x[:, l], l) for l in range(transcoder.n_layers)], 1)
    return y_hat + skips, acts


class _Stop(Exception):
    """Raised by the unembedding's pre-hook: the final hidden state is all that is needed."""


@torch.no_grad()
def final_hidden(adapter, ids: torch.Tensor) -> torch.Tensor:
    """The unembedding's input ``[b, P, d]`` (after the final norm); the logits are never formed."""
    got: list[torch.Tensor] = []

    def grab(mod, args):
        got.append(args[0])
        raise _Stop

    handle = adapter.lm_head.register_forward_pre_hook(grab)
    try:
        adapter.model(input_ids=ids, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return got[0]


def logit_chunks(adapter, h: torch.Tensor, vocab_chunk: int):
    """Logits of hidden states ``h [n, d]``, ``vocab_chunk`` columns at a time (float32, softcapped
    like the model's own head)."""
    w, b, cap = adapter.lm_head.weight, adapter.lm_head.bias, adapter.final_logit_softcap
    for lo in range(0, w.shape[0], vocab_chunk):
        z = (h @ w[lo : lo + vocab_chunk].T).float()
        if b is not None:
            z = z + b[lo : lo + vocab_chunk].float()
        yield lo, (torch.tanh(z / cap) * cap if cap else z)


def chunked_kl_top1(adapter, h_ref: torch.Tensor, h_rep: torch.Tensor, vocab_chunk: int = 16384):
    """Per token KL(P_ref ‖ P_rep) (nats) and whether the top-1 tokens agree, from hidden states
    ``[n, d]``, holding at most ``n × vocab_chunk`` logits at a time (two passes over the vocabulary)."""
    n = h_ref.shape[0]
    lse = [torch.full((n,), -torch.inf, device=h_ref.device) for _ in range(2)]
    best = [torch.full((n,), -torch.inf, device=h_ref.device) for _ in range(2)]
    arg = [torch.zeros(n, dtype=torch.long, device=h_ref.device) for _ in range(2)]
    for i, h in enumerate((h_ref, h_rep)):
        for lo, z in logit_chunks(adapter, h, vocab_chunk):
            lse[i] = torch.logaddexp(lse[i], z.logsumexp(-1))
            m, j = z.max(-1)
            better = m > best[i]  # strict: the first maximum wins, as in argmax over the whole vocabulary
            best[i], arg[i] = torch.where(better, m, best[i]), torch.where(better, j + lo, arg[i])
    kl = torch.zeros(n, device=h_ref.device)
    for (_, zp), (_, zq) in zip(logit_chunks(adapter, h_ref, vocab_chunk), logit_chunks(adapter, h_rep, vocab_chunk)):
        lp, lq = zp - lse[0][:, None], zq - lse[1][:, None]
        kl += (lp.exp() * (lp - lq)).sum(-1)
    return kl, arg[0] == arg[1]


@torch.no_grad()
def replacement_metrics(
    adapter,
    transcoder,
    input_ids: torch.Tensor,
    *,
    batch_size: int = 8,
    lengths: torch.Tensor | None = None,
    skip_token_ids: Sequence[int] = (),
    vocab_chunk: int = 16384,
    progress: bool = False,
) -> dict:
    """KL(P_model ‖ P_replacement) per token (nats, mean) and top-1 agreement of the model with every
    MLP replaced by the transcoder vs the original, over windows ``input_ids [N, P]``, at the
    positions training reads (`chunks.content_mask`): the MLPs are replaced there, while position 0,
    the boundary tokens ``skip_token_ids`` and right padding (positions >= ``lengths``) keep the
    model's own MLP outputs (no transcoder is trained on them) and are not scored.
    Logits are formed ``vocab_chunk`` columns at a time, so memory stays bounded for any vocabulary."""
    from tqdm.auto import tqdm

    from ...replacement.full import replace_mlps  # the one full replacement model

    model = adapter.model
    device = next(model.parameters()).device
    kl_sum, agree, n = 0.0, 0, 0
    for i in tqdm(range(0, input_ids.shape[0], batch_size), disable=not progress, desc="replacement KL"):
        ids = input_ids[i : i + batch_size].to(device)
        keep = content_mask(ids, None if lengths is None else lengths[i : i + batch_size], skip_token_ids)
        ref = final_hidden(adapter, ids)
        with replace_mlps(adapter, transcoder, positions=keep):
            rep = final_hidden(adapter, ids)
        kl, same = chunked_kl_top1(adapter, ref[keep], rep[keep], vocab_chunk)
        kl_sum, agree, n = kl_sum + float(kl.sum()), agree + int(same.sum()), n + int(keep.sum())
    return {"kl": kl_sum / max(n, 1), "top1_agreement": agree / max(n, 1), "tokens": n}
