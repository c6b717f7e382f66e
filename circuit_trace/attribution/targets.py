"""Attribution targets at the last position: salient logits, chosen tokens, or custom directions.

A token target's direction is its demeaned unembedding row W_U[t] - mean_v W_U[v] applied to the
final-normed hidden state z (so its value is logit_t - mean logit, before any final softcap); its
influence weight is its softmax probability (SPEC §3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..graphs.defaults import DESIRED_LOGIT_PROB, MAX_N_LOGITS


@dataclass
class Target:
    direction: torch.Tensor  # [d_model], applied to z at the last position
    weight: float  # influence weight (probability for token targets)
    label: str
    token_id: int = -1  # -1 for custom directions
    prob: float = 0.0
    bias: float = 0.0  # constant part of the target value (demeaned unembedding bias)


class TargetError(ValueError):
    """A requested target cannot be attributed."""


def _demeaned(rm, token_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return rm.adapter.centred_logit_directions(token_ids, torch.float32)  # [K, d], [K]


def salient_logits(
    rm, logits: torch.Tensor, max_n_logits: int = MAX_N_LOGITS, desired_logit_prob: float = DESIRED_LOGIT_PROB
) -> list[Target]:
    """The most likely next tokens until their cumulative probability reaches `desired_logit_prob`,
    at most `max_n_logits`. logits: [vocab] at the last position."""
    if max_n_logits < 1:
        raise TargetError(f"max_n_logits must be >= 1, got {max_n_logits}")
    if not 0 < desired_logit_prob <= 1:
        raise TargetError(f"desired_logit_prob must be in (0, 1], got {desired_logit_prob}")
    probs = torch.softmax(logits.float(), -1)
    top_p, top_i = probs.topk(min(max_n_logits, probs.numel()))
    n = int((top_p.cumsum(0) < desired_logit_prob).sum().item()) + 1
    return token_targets(rm, logits, top_i[:n].tolist())


def token_targets(rm, logits: torch.Tensor, tokens: list) -> list[Target]:
    """Targets for explicit tokens (ids or strings that encode to exactly one token)."""
    probs = torch.softmax(logits.float(), -1)
    ids = [resolve_token(rm, t) for t in tokens]
    dirs, bias = _demeaned(rm, ids)
    return [
        Target(
            direction=dirs[k],
            weight=float(probs[i]),
            label=rm.tokenizer.decode([i]),
            token_id=i,
            prob=float(probs[i]),
            bias=float(bias[k]),
        )
        for k, i in enumerate(ids)
    ]


def resolve_token(rm, token) -> int:
    if isinstance(token, int):
        if not 0 <= token < rm.adapter.vocab_size:
            raise TargetError(f"token id {token} is outside the vocabulary of {rm.adapter.vocab_size}")
        return token
    ids = rm.tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise TargetError(f"target {token!r} is {len(ids)} tokens {ids}; a token target must be exactly one token")
    return int(ids[0])


def logit_difference(rm, token_a, token_b, *, weight: float = 1.0) -> Target:
    """A custom target: logit(a) - logit(b) (the means cancel)."""
    a, b = resolve_token(rm, token_a), resolve_token(rm, token_b)
    dirs, bias = _demeaned(rm, [a, b])
    label = f"{rm.tokenizer.decode([a])} - {rm.tokenizer.decode([b])}"
    return Target(direction=dirs[0] - dirs[1], weight=weight, label=label, bias=float(bias[0] - bias[1]))


def custom_target(direction: torch.Tensor, *, weight: float = 1.0, label: str = "custom") -> Target:
    """A custom direction on the final-normed hidden state at the last position."""
    if direction.ndim != 1:
        raise TargetError(f"a custom target direction must be a vector [d_model], got shape {tuple(direction.shape)}")
    if not torch.isfinite(direction).all():
        raise TargetError("custom target direction contains NaN or infinite values")
    return Target(direction=direction, weight=float(weight), label=label)


def resolve_targets(rm, logits: torch.Tensor, targets, max_n_logits: int, desired_logit_prob: float) -> list[Target]:
    if targets is None:
        return salient_logits(rm, logits, max_n_logits, desired_logit_prob)
    if not isinstance(targets, (list, tuple)) or len(targets) == 0:
        raise TargetError("targets must be a non-empty list of tokens or Target objects")
    out, tokens = [], []
    for t in targets:
        (out if isinstance(t, Target) else tokens).append(t)
    if tokens:
        out = token_targets(rm, logits, tokens) + out
    d = rm.adapter.d_model
    for t in out:
        if t.direction.shape != (d,):
            raise TargetError(f"target {t.label!r} has direction shape {tuple(t.direction.shape)}, expected ({d},)")
    return out
