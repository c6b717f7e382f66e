"""The one way the package reaches a layer's MLP: read the transcoder input, and read, replace or
add to the MLP output, at the hook points a transcoder names, for chosen layers, removed on exit.

Every caller (recording, the frozen local replacement, full replacement, free-mode edits,
validation) goes through `mlp_hooks`; the adapter maps hook names to modules."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .adapters import ModelAdapter
from .freeze import patched_forward

__all__ = ["InputFn", "OutputFn", "ForwardFactory", "mlp_hooks", "module_input"]

InputFn = Callable[[int, torch.Tensor], None]  # (layer, x [B, P, d]) -> None
OutputFn = Callable[[int, torch.Tensor], "torch.Tensor | None"]  # (layer, y [B, P, d]) -> new y or None
ForwardFactory = Callable[[int], Callable[..., Any]]  # layer -> forward that stands in for the module


def module_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden state a module was called with: its first argument, positional or keyword."""
    return args[0] if args else next(iter(kwargs.values()))


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _with_first(output: Any, new: torch.Tensor) -> Any:
    return (new, *output[1:]) if isinstance(output, tuple) else new


def _reader(module: nn.Module, io: str, layer: int, fn: InputFn) -> RemovableHandle:
    """Call fn(layer, value) with the module's input (pre-hook) or output (forward hook)."""
    if io == "input":

        def pre(_module, args, kwargs) -> None:
            fn(layer, module_input(args, kwargs))

        return module.register_forward_pre_hook(pre, with_kwargs=True)

    def post(_module, _args, output) -> None:
        fn(layer, _first(output))

    return module.register_forward_hook(post)


def _editor(module: nn.Module, layer: int, fn: OutputFn) -> RemovableHandle:
    """Forward hook: the output becomes fn(layer, output) unless that returns None."""

    def post(_module, _args, output):
        new = fn(layer, _first(output))
        return None if new is None else _with_first(output, new)

    return module.register_forward_hook(post)


def _output_module(adapter: ModelAdapter, output_hook: str, layer: int) -> nn.Module:
    module, io, _ = adapter.hook_module(output_hook, layer)
    if io != "output":
        raise ValueError(f"output hook {output_hook!r} is not a module output")
    return module


@contextmanager
def mlp_hooks(
    adapter: ModelAdapter,
    input_hook: str,
    output_hook: str,
    layers: Iterable[int] | None = None,
    *,
    on_input: InputFn | None = None,
    on_output: OutputFn | None = None,
    output_forward: ForwardFactory | None = None,
) -> Iterator[None]:
    """Inside, every forward pass of `adapter.model` calls, for each layer in `layers` (default all):

    * on_input(layer, x): x [B, P, d] is the value at `input_hook` (capture it, or encode it);
    * on_output(layer, y) -> new y or None: y [B, P, d] at `output_hook`; a returned tensor replaces
      it (capture: return None; replace: return the new value; add: return y + delta);
    * output_forward(layer) -> forward: stands in for the output module, which is then not run
      (the frozen pass uses it to make MLP outputs constants). Exclusive with on_output.

    Hooks fire in execution order (layer 0 first). Everything is removed on exit, also on error."""
    if on_output is not None and output_forward is not None:
        raise ValueError("give on_output or output_forward, not both")
    handles: list[RemovableHandle] = []
    patches: list[tuple[nn.Module, Callable[..., Any]]] = []
    try:
        for layer in range(adapter.n_layers) if layers is None else layers:
            if on_input is not None:
                module, io, _ = adapter.hook_module(input_hook, layer)
                handles.append(_reader(module, io, layer, on_input))
            if on_output is not None:
                handles.append(_editor(_output_module(adapter, output_hook, layer), layer, on_output))
            if output_forward is not None:
                patches.append((_output_module(adapter, output_hook, layer), output_forward(layer)))
        with patched_forward(patches):
            yield
    finally:
        for handle in handles:
            handle.remove()
