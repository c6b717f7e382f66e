"""Greedy generation from the real model with feature edits applied (free mode)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..replacement.model import ReplacementModel
from .edits import EditLike
from .intervene import FreeEdits, check_choice, prepare_edits

__all__ = ["GenerationResult", "generate"]


@dataclass
class GenerationResult:
    prompt: str
    text: str  # the generated continuation only
    token_ids: list[int]  # generated ids
    tokens: list[str]  # generated tokens, decoded one by one
    input_ids: list[int]  # prompt ids (with BOS)
    settings: dict = field(default_factory=dict)

    @property
    def full_text(self) -> str:
        return self.prompt + self.text


@torch.no_grad()
def generate(
    model: ReplacementModel,
    prompt: str | list[int],
    edits: EditLike | Sequence = (),
    *,
    max_new_tokens: int = 20,
    apply_to: Literal["prompt", "all"] = "prompt",
    layers: Sequence[int] | range | None = None,
    stop_at_eos: bool = True,
) -> GenerationResult:
    """Greedy continuation of `prompt` under `edits`.

    apply_to "prompt": edits without explicit positions act on every prompt position after BOS;
    "all": also on every generated token. Edits with explicit positions act there only. The whole
    sequence is re-run at each step (no KV cache), so an edit at the prompt keeps acting on the
    recomputed prompt states and every step sees the same edited model."""
    check_choice("apply_to", apply_to, ("prompt", "all"))
    if int(max_new_tokens) < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    ids, flat, layer_set = prepare_edits(model, prompt, edits, layers)
    P = int(ids.numel())
    n_ctx = model.adapter.n_ctx
    eos = getattr(model.tokenizer, "eos_token_id", None)
    runner = FreeEdits(model, flat, layer_set, P if apply_to == "prompt" else None)
    seq = ids.clone()
    new: list[int] = []
    with runner.installed():
        for _ in range(int(max_new_tokens)):
            if seq.numel() >= n_ctx:
                break  # the model's context is full
            nxt = int(model.model(input_ids=seq[None]).logits[0, -1].argmax())
            new.append(nxt)
            seq = torch.cat([seq, seq.new_tensor([nxt])])
            if stop_at_eos and eos is not None and nxt == eos:
                break
    text = model.tokenizer.decode(new) if new else ""
    prompt_text = prompt if isinstance(prompt, str) else model.tokenizer.decode(ids.tolist())
    return GenerationResult(
        prompt=prompt_text,
        text=text,
        token_ids=new,
        tokens=model.decode_tokens(new),
        input_ids=ids.tolist(),
        settings={"max_new_tokens": int(max_new_tokens), "apply_to": apply_to, "n_edits": len(flat)},
    )
