"""Top-1 evaluation of a causal LM on :class:`~circuit_trace.organisms.corpus.EvalItem` sets."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .corpus import EvalItem

__all__ = ["predict_next", "evaluate_items", "evaluate_organism", "run_patched"]


@torch.no_grad()
def _batch_logits(model, tokenizer, texts: Sequence[str]):
    device = next(model.parameters()).device
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    ids = enc["input_ids"].to(device)
    mask = enc["attention_mask"].to(device)
    logits = model(input_ids=ids, attention_mask=mask).logits
    return logits.float(), ids, mask


@torch.no_grad()
def predict_next(model, tokenizer, prompt: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens after ``prompt`` (BOS added), with probabilities."""
    logits, _, _ = _batch_logits(model, tokenizer, [prompt])
    probs = logits[0, -1].softmax(-1)
    top = probs.topk(k)
    return [(tokenizer.decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices)]


@torch.no_grad()
def evaluate_items(model, tokenizer, items: Sequence[EvalItem], batch_size: int = 128) -> dict:
    """Top-1 accuracy of ``items``.

    ``first_token``: the answer's first token is the argmax after the prompt.
    ``exact``: every answer token is the argmax given the prompt and the previous answer tokens
    (greedy decoding reproduces the whole answer).
    """
    was_training = model.training
    model.eval()
    n_first = n_exact = 0
    failures = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        texts = [it.prompt + it.answer for it in chunk]
        logits, ids, mask = _batch_logits(model, tokenizer, texts)
        pred = logits.argmax(-1)
        for row, it in enumerate(chunk):
            n_prompt = len(tokenizer(it.prompt)["input_ids"])
            n_total = int(mask[row].sum())
            target = ids[row, n_prompt:n_total]
            guess = pred[row, n_prompt - 1 : n_total - 1]
            first = bool(guess[0] == target[0])
            exact = bool((guess == target).all())
            n_first += first
            n_exact += exact
            if not first:
                failures.append((it.prompt, it.answer, tokenizer.decode([int(guess[0])])))
    model.train(was_training)
    n = max(len(items), 1)
    return {"n": len(items), "first_token": n_first / n, "exact": n_exact / n, "failures": failures}


def evaluate_organism(model, tokenizer, sets: dict | None = None) -> dict:
    """Accuracies on the organism's eval sets (``one_hop``, ``two_hop_trained``, ``two_hop_held_out``)."""
    from .corpus import eval_sets

    sets = eval_sets() if sets is None else sets
    return {name: evaluate_items(model, tokenizer, items) for name, items in sets.items()}


@torch.no_grad()
def run_patched(
    model, ids: torch.Tensor, patch: tuple[int, int, torch.Tensor] | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Activation patching in the real model (no transcoders): the last position's logits and the
    residual stream after every layer ([T, d] each) for `ids` [1, T]; `patch` = (layer, pos, value)
    replaces that entry of the residual after `layer`, and everything downstream sees it."""
    resid: list[torch.Tensor] = []

    def hook(layer_idx: int):
        def replace(_module, _inputs, out):
            h = out[0] if isinstance(out, tuple) else out
            if patch is not None and patch[0] == layer_idx:
                h = h.clone()
                h[0, patch[1]] = patch[2]
            resid.append(h[0].detach().clone())
            return (h, *out[1:]) if isinstance(out, tuple) else h

        return replace

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(model.model.layers)]
    try:
        logits = model(ids).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    return logits, resid
