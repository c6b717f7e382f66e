"""ReplacementModel: an HF causal LM plus a transcoder set that imitates its MLPs."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..models import ModelAdapter, get_adapter
from ..models.freeze import patched_forward


def decode_layer(tc, acts: dict[int, torch.Tensor], layer: int) -> torch.Tensor:
    """ŷ_layer [..., d] from the activations [..., F] of the source layers that write to `layer`."""
    out = tc.b_dec[layer]
    for src, a in acts.items():
        if layer not in tc.output_layers(src):
            continue
        active = (a != 0).reshape(-1, a.shape[-1]).any(0).nonzero().squeeze(1)  # [k]
        dec = tc.decoder_vectors(src, active)[:, layer - src]  # [k, d]
        out = out + a[..., active] @ dec
    return out


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

    def to(self, device=None, dtype=None) -> "ReplacementModel":
        """Move the model and transcoders (dtype given as a torch dtype or a name like "bfloat16")."""
        from ..models import resolve_dtype

        dt = resolve_dtype(dtype)
        kwargs = {k: v for k, v in (("device", device), ("dtype", dt)) if v is not None}
        self.model.to(**kwargs)
        self.transcoders.to(**kwargs)
        return self

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers

    @property
    def nnsight(self):
        """The same HF model wrapped as an nnsight LanguageModel for your own interventions."""
        if self._nnsight is None:
            from nnsight.modeling.language import LanguageModel

            import warnings

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
            raise PromptError(
                f"prompt is {len(ids)} tokens (with BOS) but the model's context is {self.adapter.n_ctx}"
            )
        bad = [i for i in ids if not 0 <= i < self.adapter.vocab_size]
        if bad:
            raise PromptError(f"token ids {bad[:5]} are outside the model's vocabulary of {self.adapter.vocab_size}")
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def decode_tokens(self, ids) -> list[str]:
        return [self.tokenizer.decode([int(i)]) for i in ids]

    # -- full replacement ------------------------------------------------------------------------
    @contextmanager
    def replaced(self) -> Iterator[None]:
        """Inside, every MLP output is the transcoder's reconstruction (the replacement model).

        A CLT's layer-l output needs features of layers <= l, which are encoded as each layer's input
        passes by; the per-layer activations are cached for the duration of one forward pass."""
        tc, ad = self.transcoders, self.adapter
        acts: dict[int, torch.Tensor] = {}
        xs: dict[int, torch.Tensor] = {}
        hooks, patches = [], []

        def make_pre(layer: int):
            def pre(_module, args, kwargs):
                x = args[0] if args else next(iter(kwargs.values()))
                xs[layer] = x
                acts[layer] = tc.encode(x.to(tc_dtype), layer)
            return pre

        tc_dtype = next(tc.parameters()).dtype
        for layer in range(ad.n_layers):
            in_mod, _, _ = ad.hook_module(tc.feature_input_hook, layer)
            hooks.append(in_mod.register_forward_pre_hook(make_pre(layer), with_kwargs=True))

        def make_out(layer: int, original):
            def forward(*args, **kwargs):
                out = original(*args, **kwargs)  # keeps shapes/dtypes; its value is replaced
                recon = decode_layer(tc, acts, layer) + tc.skip(xs[layer].to(tc_dtype), layer)
                return recon.to(out.dtype)
            return forward

        for layer in range(ad.n_layers):
            out_mod, _, _ = ad.hook_module(tc.feature_output_hook, layer)
            patches.append((out_mod, make_out(layer, out_mod.forward)))
        try:
            with patched_forward(patches):
                yield
        finally:
            for h in hooks:
                h.remove()

    def local_context(self, prompt):
        """The local replacement model of one prompt (see `LocalReplacement`)."""
        from .local import LocalReplacement

        return LocalReplacement.record(self, self.tokenize(prompt))
