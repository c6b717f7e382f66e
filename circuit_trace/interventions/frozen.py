"""Hold parts of the real model at one prompt's clean values, so that they stop answering an
intervention: a diagnostic for `validate(freeze=...)`.

A graph is linear in its sources because it freezes what the real model computes nonlinearly. Each
part named here is one of those nonlinearities; freezing more and more of them turns the real model
into the graph's linear model step by step, and the step that moves a validation score most is the
nonlinearity the graph misses most on that prompt:

* ``norms``: every norm's denominator (RMSNorm or LayerNorm, the QK-norms too);
* ``attention``: every attention pattern;
* ``errors``: each MLP output becomes the transcoder's live reconstruction plus the clean prompt's
  error (MLP output - reconstruction), a constant;
* ``choice``: the transcoder keeps the clean prompt's active features at every layer and position,
  each passing its live pre-activation through (none turns on or off). Needs ``errors``: without it
  the MLPs are the real ones and no transcoder chooses anything.

With all four frozen the real model is linear in every feature, as the graph assumes, and a graph
holding every active feature predicts its ablations exactly (tested)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext

import torch

from ..models import mlp_hooks
from ..models.freeze import FrozenState, freeze_mode
from ..replacement.full import reconstruct_layer, replace_mlps
from ..replacement.model import ReplacementModel

__all__ = ["FREEZE_PARTS", "freeze_parts", "frozen"]

FREEZE_PARTS = ("norms", "attention", "errors", "choice")  # in the order a diagnosis adds them


def freeze_parts(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """Check and order a `freeze` argument: None or "" (nothing), "all", "a,b", or names."""
    if spec is None:
        return ()
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return FREEZE_PARTS
    unknown = sorted(set(names) - set(FREEZE_PARTS))
    if unknown:
        raise ValueError(f"cannot freeze {', '.join(unknown)}: choose from {', '.join(FREEZE_PARTS)} or 'all'")
    if "choice" in names and "errors" not in names:
        raise ValueError("freezing 'choice' needs 'errors' too: otherwise the MLPs are the real ones")
    return tuple(p for p in FREEZE_PARTS if p in names)


@contextmanager
def frozen(model: ReplacementModel, input_ids: Sequence[int], freeze: str | Iterable[str] | None) -> Iterator[None]:
    """Inside, forward passes of `model` on `input_ids` (batch 1, the same length) run with the
    parts in `freeze` held at the values of the clean pass on those ids (recorded on entry)."""
    parts = freeze_parts(freeze)
    if not parts:
        yield
        return
    ad, tc = model.adapter, model.transcoders
    ids = torch.tensor([list(input_ids)], dtype=torch.long, device=model.device)
    state = FrozenState()
    xs: dict[int, torch.Tensor] = {}  # layer -> clean MLP input [1, P, d]
    ys: dict[int, torch.Tensor] = {}  # layer -> clean MLP output [1, P, d]
    record = mlp_hooks(  # the MLPs' clean inputs and outputs, for the errors and the active sets
        ad,
        tc.feature_input_hook,
        tc.feature_output_hook,
        on_input=lambda layer, x: xs.__setitem__(layer, x),
        on_output=lambda layer, y: ys.__setitem__(layer, y),
    )
    with torch.no_grad(), freeze_mode(ad, "record", state), record if "errors" in parts else nullcontext():
        ad.model(input_ids=ids)
    held = frozenset(parts) & {"norms", "attention"}
    with ExitStack() as stack:
        if held:
            stack.enter_context(freeze_mode(ad, "frozen", state, held))
        if "errors" in parts:
            errors, active = _clean_errors_and_active(tc, xs, ys, hold_choice="choice" in parts)
            stack.enter_context(replace_mlps(ad, tc, errors=errors, active=active))
        yield


def _clean_errors_and_active(
    tc, xs: dict[int, torch.Tensor], ys: dict[int, torch.Tensor], hold_choice: bool
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor] | None]:
    """Per layer, the clean MLP error (output - reconstruction; [1, P, d], on the output's device)
    and, with `hold_choice`, the clean active set ([1, P, F] bool; else None)."""
    xs = {layer: x.to(tc.device, tc.dtype) for layer, x in xs.items()}
    clean = {layer: tc.encode(x, layer) for layer, x in xs.items()}  # [1, P, F]
    errors = {
        layer: y - reconstruct_layer(tc, clean, xs[layer], layer).to(y.device, y.dtype) for layer, y in ys.items()
    }
    if not hold_choice:
        return errors, None
    active = {layer: a != 0 for layer, a in clean.items()}
    for layer, x in xs.items():  # held active, a feature's value must be its pre-activation
        if not torch.equal(tc.pre_activations(x, layer) * active[layer], clean[layer]):
            raise ValueError(f"{tc.activation} does not pass an active feature's pre-activation through")
    return errors, active
