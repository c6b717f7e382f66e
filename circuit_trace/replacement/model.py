"""ReplacementModel: an HF causal LM plus a transcoder set that imitates its MLPs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..models import ModelAdapter, get_adapter
from .full import replace_mlps


@torch.no_grad()
def _check_finite_weights(tc, chunk: int = 1 << 24) -> None:
    """NaN/inf in in-memory transcoder weights -> ValueError naming the tensor. Needed because some
    never show up in a forward pass (a NaN threshold silently disables its feature, a NaN decoder row
    of a feature inactive on the prompt is never read). Lazy decoders are checked by their loader."""
    for name, p in tc.named_parameters():
        flat = p.detach().reshape(-1)
        for lo in range(0, flat.numel(), chunk):
            part = flat[lo : lo + chunk]
            if not bool(torch.isfinite(part).all()):
                n_bad = int((~torch.isfinite(flat)).sum())
                raise ValueError(
                    f"transcoder {getattr(tc, 'name', '') or '<unnamed>'}: tensor {name} contains "
                    f"{n_bad} NaN/inf value(s)"
                )


class PromptError(ValueError):
    """The prompt cannot be traced (empty, too long, ...)."""


class ReplacementModel:
    """An HF model (`.model`, also wrapped for nnsight as `.nnsight`) with its transcoders.

    `replaced()` runs the model with every MLP output replaced by the transcoder's output (for
    fidelity metrics); `local_context(ids)` builds the frozen local replacement model of one prompt
    that attribution differentiates through."""

    def __init__(self, model: nn.Module, tokenizer, transcoders, *, model_id: str | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.adapter: ModelAdapter = get_adapter(model)
        self.transcoders = transcoders
        transcoders.validate_against(self.adapter)
        _check_finite_weights(transcoders)
        self.model_id = model_id or getattr(model.config, "name_or_path", "") or type(model).__name__
        self._nnsight = None
        # Attribution differentiates with respect to activations only, never weights.
        for p in [*self.model.parameters(), *transcoders.parameters()]:
            p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device=None, dtype=None) -> ReplacementModel:
        """Move the model and transcoders (dtype given as a torch dtype or a name like "bfloat16")."""
        from ..models import resolve_dtype

        dt = resolve_dtype(dtype)
        kwargs: dict[str, Any] = {k: v for k, v in (("device", device), ("dtype", dt)) if v is not None}
        self.model.to(**kwargs)
        self.transcoders.to(**kwargs)
        return self

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers

    def __repr__(self) -> str:
        tc = self.transcoders
        kind = "CLT" if tc.is_cross_layer else "PLT"
        return (
            f"ReplacementModel(model={self.model_id!r} ({self.adapter.family}, {self.n_layers} layers, "
            f"d_model {self.adapter.d_model}), transcoders={tc.name or None!r} ({kind}, {tc.d_features} "
            f"{tc.activation} features per layer), device={self.device}, dtype={str(self.dtype).removeprefix('torch.')})"
        )

    @property
    def nnsight(self):
        """The same HF model wrapped as an nnsight LanguageModel for your own interventions."""
        if self._nnsight is None:
            import warnings

            from nnsight.modeling.language import LanguageModel

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._nnsight = LanguageModel(self.model, tokenizer=self.tokenizer)
        return self._nnsight

    # -- tokens ---------------------------------------------------------------------------------
    def tokenize(self, prompt: str | list[int] | torch.Tensor) -> torch.Tensor:
        """[P] token ids with BOS first (prepended when the tokenizer has one and did not add it)."""
        if isinstance(prompt, str):
            if not prompt.strip():
                raise PromptError("empty prompt: give at least one token of text to trace")
            ids = list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])
            bos = self.tokenizer.bos_token_id
            if bos is not None and (not ids or ids[0] != bos):
                ids = [bos] + ids
        else:
            ids = [int(i) for i in (prompt.tolist() if isinstance(prompt, torch.Tensor) else prompt)]
        if len(ids) < 2:
            raise PromptError("the prompt has no token after BOS: give at least one token of text to trace")
        if len(ids) > self.adapter.n_ctx:
            raise PromptError(f"prompt is {len(ids)} tokens (with BOS) but the model's context is {self.adapter.n_ctx}")
        bad = [i for i in ids if not 0 <= i < self.adapter.vocab_size]
        if bad:
            raise PromptError(f"token ids {bad[:5]} are outside the model's vocabulary of {self.adapter.vocab_size}")
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def decode_tokens(self, ids) -> list[str]:
        return [self.tokenizer.decode([int(i)]) for i in ids]

    # -- full replacement ------------------------------------------------------------------------
    @contextmanager
    def replaced(self) -> Iterator[None]:
        """Inside, every MLP output is the transcoder's reconstruction (the replacement model; see
        `replacement.full.replace_mlps`)."""
        with replace_mlps(self.adapter, self.transcoders):
            yield

    def local_context(self, prompt):
        """The local replacement model of one prompt (see `LocalReplacement`)."""
        from .local import LocalReplacement

        return LocalReplacement.record(self, self.tokenize(prompt))
