"""Reading MLP inputs and outputs of every layer through nnsight (used by training and recording)."""

from __future__ import annotations

from typing import Any

import torch
from nnsight import NNsight

from .adapters import ModelAdapter


def _envoy(root: Any, path: str) -> Any:
    env = root
    for part in path.split("."):
        env = env[int(part)] if part.isdigit() else getattr(env, part)
    return env


def nnsight_wrapper(adapter: ModelAdapter) -> NNsight:
    """A cached plain NNsight wrapper over the adapter's model (no tokenizer needed)."""
    if adapter.nnsight_plain is None:
        adapter.nnsight_plain = NNsight(adapter.model)
    return adapter.nnsight_plain


@torch.no_grad()
def mlp_io(
    adapter: ModelAdapter,
    input_ids: torch.Tensor,
    input_hook: str,
    output_hook: str,
    layers: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (x, y), each [n_layers_read, B, P, d]: the transcoder input and target of each layer."""
    layers = list(range(adapter.n_layers)) if layers is None else list(layers)
    wrapped = nnsight_wrapper(adapter)
    xs: list[Any] = [None] * len(layers)
    ys: list[Any] = [None] * len(layers)
    with wrapped.trace(input_ids):
        # nnsight serves module values in execution order: visit layers bottom-up, store in caller order
        for i in sorted(range(len(layers)), key=lambda i: layers[i]):
            layer = layers[i]
            _, in_io, in_path = adapter.hook_module(input_hook, layer)
            _, out_io, out_path = adapter.hook_module(output_hook, layer)
            env_in, env_out = _envoy(wrapped, in_path), _envoy(wrapped, out_path)
            xs[i] = (env_in.input if in_io == "input" else env_in.output).save()
            ys[i] = (env_out.input if out_io == "input" else env_out.output).save()
    return torch.stack([x for x in xs]), torch.stack([y for y in ys])
