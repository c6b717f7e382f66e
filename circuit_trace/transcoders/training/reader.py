"""Reading MLP inputs and outputs for training with plain PyTorch hooks: the forward stops right after
the last layer read, so the unembedding (and any layer above) never runs.

Same values as `models.activations.mlp_io` (which goes through nnsight and runs the whole model):
about twice as fast on a small model whose LM head is a large share of the compute.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class _StopForward(Exception):
    """Raised from a hook once every requested activation is captured."""


def _capture(store: dict, key: tuple[int, int], done: Callable[[], bool], io: str):
    def save(t):
        store[key] = (t[0] if isinstance(t, tuple) else t).detach()
        if done():
            raise _StopForward

    if io == "input":
        return lambda mod, args, kwargs: save(args[0] if args else next(iter(kwargs.values())))
    return lambda mod, args, kwargs, out: save(out)


@torch.no_grad()
def read_mlp_io(
    adapter, input_ids: torch.Tensor, input_hook: str, output_hook: str, layers: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y), each ``[n_layers_read, B, P, d]``: the transcoder input and target of each layer in
    ``layers`` (default all), in that order."""
    layers = list(range(adapter.n_layers)) if layers is None else list(layers)
    store: dict[tuple[int, int], torch.Tensor] = {}
    done = lambda: len(store) == 2 * len(layers)
    handles = []
    try:
        for layer in layers:
            for which, hook in ((0, input_hook), (1, output_hook)):
                module, io, _ = adapter.hook_module(hook, layer)
                fn = _capture(store, (which, layer), done, io)
                if io == "input":
                    handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
                else:
                    handles.append(module.register_forward_hook(fn, with_kwargs=True))
        try:
            adapter.model(input_ids=input_ids, use_cache=False)
        except _StopForward:
            pass
    finally:
        for h in handles:
            h.remove()
    if not done():
        raise RuntimeError(f"hooks {input_hook!r}/{output_hook!r} did not fire for every layer in {layers}")
    return torch.stack([store[0, l] for l in layers]), torch.stack([store[1, l] for l in layers])
