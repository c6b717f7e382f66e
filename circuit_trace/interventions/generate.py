"""Generation from the real model with feature edits applied (free mode): greedy or sampled, with
the unedited continuation beside it, stopping at EOS, `max_new_tokens` or the context limit."""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..replacement.model import ReplacementModel
from .edits import EditLike
from .intervene import FreeEdits, check_choice, prepare_edits

__all__ = ["ApplyTo", "Continuation", "GenerationResult", "StopReason", "generate"]

ApplyTo = Literal["prompt", "generated", "all"]
StopReason = Literal["eos", "max_new_tokens", "context_limit"]


@dataclass
class Continuation:
    """One generated continuation: its text, ids, tokens and why it stopped."""

    text: str
    token_ids: list[int]
    tokens: list[str]
    stop_reason: StopReason


@dataclass
class GenerationResult:
    """The continuation of `prompt` under the edits (`edited`) and, with compare=True, without them
    (`unedited`, same seed). `warnings` says when the context limit cut a continuation short."""

    prompt: str
    input_ids: list[int]  # prompt ids (with BOS)
    edited: Continuation
    unedited: Continuation | None = None
    warnings: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The edited continuation (generated text only)."""
        return self.edited.text

    @property
    def token_ids(self) -> list[int]:
        return self.edited.token_ids

    @property
    def tokens(self) -> list[str]:
        return self.edited.tokens

    @property
    def stop_reason(self) -> StopReason:
        return self.edited.stop_reason

    @property
    def full_text(self) -> str:
        return self.prompt + self.edited.text

    @property
    def unedited_text(self) -> str | None:
        return None if self.unedited is None else self.unedited.text

    @property
    def changed(self) -> bool | None:
        """Whether the edits changed the generated tokens (None without the unedited run)."""
        return None if self.unedited is None else self.unedited.token_ids != self.edited.token_ids

    def __str__(self) -> str:
        return format_generation(self)

    def __repr__(self) -> str:
        return (
            f"GenerationResult(prompt={self.prompt!r}, text={self.text!r}, unedited_text={self.unedited_text!r}, "
            f"stop_reason={self.stop_reason!r})"
        )


def format_generation(result: GenerationResult) -> str:
    """Prompt, then the edited and unedited continuations one under the other, labelled and aligned,
    with each one's stop reason; then any warning."""
    s = result.settings
    how = (
        "greedy"
        if not s.get("do_sample")
        else f"sampled (T={s['temperature']:g}, top_p={s['top_p']:g}, seed {s['seed']})"
    )
    n_edits = s.get("n_edits", 0)
    where = f"{n_edits} edits at {s.get('apply_to')} positions" if n_edits else "no edits"
    lines = [f"prompt: {result.prompt!r}   {how}, {where}"]
    rows = [("edited", result.edited)] if n_edits else [("text", result.edited)]
    if result.unedited is not None and n_edits:
        rows.append(("unedited", result.unedited))
    for name, c in rows:
        lines.append(f"  {name:<9}{c.text!r}   [{len(c.token_ids)} tokens, stop: {c.stop_reason}]")
    if n_edits and result.unedited is not None and not result.changed:
        lines.append("  (the edits did not change the generated tokens)")
    lines.extend(f"warning: {w}" for w in result.warnings)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class _Sampler:
    """Picks the next token from last-position logits: argmax, or a draw from softmax(logits / T)
    restricted to the smallest top-p nucleus, with its own torch.Generator (CPU, so a seed gives
    the same draws on every device)."""

    do_sample: bool
    temperature: float
    top_p: float
    seed: int

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def pick(self, logits: torch.Tensor, gen: torch.Generator) -> int:  # logits [V]
        if not self.do_sample:
            return int(logits.argmax())
        probs = torch.softmax(logits.detach().double().cpu() / self.temperature, -1)  # [V]
        if self.top_p < 1.0:
            p_sorted, order = probs.sort(descending=True)
            keep = (p_sorted.cumsum(0) - p_sorted) < self.top_p  # the first token is always kept
            probs = torch.zeros_like(probs).scatter(0, order[keep], p_sorted[keep])
        return int(torch.multinomial(probs, 1, generator=gen))


def _check_sampling(max_new_tokens: int, temperature: float, top_p: float, seed: int | None) -> None:
    if int(max_new_tokens) < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 < float(top_p) <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if seed is not None and not isinstance(seed, int):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")


def _window(apply_to: str, n_prompt: int) -> tuple[int, int | None]:
    """[start, stop) of the positions that edits without explicit positions act on."""
    if apply_to == "prompt":
        return 1, n_prompt
    if apply_to == "generated":
        return max(1, n_prompt - 1), None  # the last prompt position predicts the first new token
    return 1, None


@torch.no_grad()
def _continue(
    model: ReplacementModel,
    ids: torch.Tensor,
    runner: FreeEdits | None,
    sampler: _Sampler,
    max_new: int,
    stop_at_eos: bool,
) -> Continuation:
    """Generate up to `max_new` tokens after ids [P]; the whole sequence is re-run at each step (no
    KV cache), so edits at prompt positions keep acting on the recomputed prompt states."""
    n_ctx = model.adapter.n_ctx
    eos = getattr(model.tokenizer, "eos_token_id", None)
    gen = sampler.generator()
    seq, new = ids.clone(), []
    reason: StopReason = "max_new_tokens"
    with runner.installed() if runner is not None else nullcontext():
        for _ in range(max_new):
            if seq.numel() >= n_ctx:
                reason = "context_limit"
                break
            nxt = sampler.pick(model.model(input_ids=seq[None]).logits[0, -1], gen)
            new.append(nxt)
            seq = torch.cat([seq, seq.new_tensor([nxt])])
            if stop_at_eos and eos is not None and nxt == eos:
                reason = "eos"
                break
    text = model.tokenizer.decode(new) if new else ""
    return Continuation(text, new, model.decode_tokens(new), reason)


def generate(
    model: ReplacementModel,
    prompt: str | list[int],
    edits: EditLike | Sequence = (),
    *,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    apply_to: ApplyTo = "prompt",
    layers: Sequence[int] | range | None = None,
    stop_at_eos: bool = True,
    compare: bool = True,
) -> GenerationResult:
    """Continue `prompt` under `edits` (free mode), and without them when `compare`.

    apply_to — where edits without explicit positions act: "prompt": every prompt position after
    BOS; "generated": every position that predicts a new token (the last prompt position and each
    generated one: open-ended steering); "all": both. Edits with explicit positions act there only.
    do_sample: draw from softmax(logits / temperature) cut to the top_p nucleus, with a generator
    seeded by `seed` (a random one, recorded in `settings["seed"]`, when None); the edited and
    unedited runs use the same seed. Generation stops at EOS (stop_at_eos), after max_new_tokens,
    or when the sequence fills the model's context; the last is said in `warnings` (and warned).
    Hooks are removed on return, also on error: the model is unchanged afterwards."""
    check_choice("apply_to", apply_to, ("prompt", "generated", "all"))
    _check_sampling(max_new_tokens, temperature, top_p, seed)
    ids, flat, layer_set = prepare_edits(model, prompt, edits, layers)
    P = int(ids.numel())
    seed = seed if seed is not None else secrets.randbits(63)
    sampler = _Sampler(bool(do_sample), float(temperature), float(top_p), int(seed))
    start, stop = _window(apply_to, P)
    runner = FreeEdits(model, flat, layer_set, stop, start=start) if flat else None
    edited = _continue(model, ids, runner, sampler, int(max_new_tokens), stop_at_eos)
    unedited = None
    if compare:
        unedited = edited if runner is None else _continue(model, ids, None, sampler, int(max_new_tokens), stop_at_eos)
    notes = _context_warnings(model, P, int(max_new_tokens), edited, unedited)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    prompt_text = prompt if isinstance(prompt, str) else model.tokenizer.decode(ids.tolist())
    settings = {
        "max_new_tokens": int(max_new_tokens),
        "do_sample": bool(do_sample),
        "temperature": float(temperature),
        "top_p": float(top_p),
        "seed": int(seed) if do_sample else None,
        "apply_to": apply_to,
        "n_edits": len(flat),
        "layers": sorted(layer_set),
    }
    return GenerationResult(prompt_text, ids.tolist(), edited, unedited, notes, settings)


def _context_warnings(
    model: ReplacementModel, n_prompt: int, max_new: int, edited: Continuation, unedited: Continuation | None
) -> list[str]:
    hit = [
        name
        for name, c in (("edited", edited), ("unedited", unedited))
        if c is not None and c.stop_reason == "context_limit"
    ]
    if not hit:
        return []
    n_ctx = model.adapter.n_ctx
    return [
        f"generation stopped at the model's context limit of {n_ctx} tokens (prompt {n_prompt} + "
        f"{max(0, n_ctx - n_prompt)} new) before max_new_tokens={max_new} ({' and '.join(hit)} run)"
    ]
