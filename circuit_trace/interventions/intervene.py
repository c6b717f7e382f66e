"""`intervene`: apply feature edits to one prompt and compare next-token predictions (SPEC §5).

Edits act in the real model: a feature change from a to a' adds (a' - a) · W_dec^{l_s -> l} to the
MLP output of every layer l the feature writes to (l_s only for a PLT, l_s..L-1 for a CLT).

* free mode: forward hooks on the real model; everything downstream (attention, MLPs, norms) is
  recomputed. "Old" activations are read live: at the source layer the transcoder encodes the live
  MLP input, so `set` makes the activation exactly `value` whatever upstream edits did, and `scale`
  multiplies the live activation (the clean one unless an upstream edit moved it).
* constrained mode: the frozen local replacement model of the prompt (`LocalReplacement`):
  attention patterns and norm denominators frozen, every MLP output a constant (clean output plus
  the decoder deltas), so no feature is recomputed. Changes are then exactly linear in the edits and
  Δ(target) = -A[t, s] when source s is removed: the graph's edges are what this mode measures.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
import torch
import torch.nn.functional as F

from ..atomic import atomic_write_bytes, atomic_write_text
from ..replacement.model import ReplacementModel, decode_layer
from .edits import (
    Edit,
    EditError,
    EditLike,
    ErrorAblation,
    Supernode,
    check_edits,
    flatten_edits,
)

Mode = Literal["free", "constrained"]

__all__ = ["InterventionResult", "TokenProb", "activations_from", "format_result", "intervene"]


@dataclass
class TokenProb:
    token: str
    token_id: int
    prob: float
    logit: float


@dataclass
class InterventionResult:
    """Next-token prediction at the last position before and after the edits."""

    prompt: str
    mode: str
    input_ids: list[int]  # [P]
    tokens: list[str]  # [P]
    logits_before: torch.Tensor  # [vocab] last position, clean
    logits_after: torch.Tensor  # [vocab] last position, edited
    top_before: list[TokenProb]
    top_after: list[TokenProb]
    features: pd.DataFrame  # one row per edited (feature, position): layer, index, pos, op, value, before, after
    kl: float  # KL(clean || edited) of the next-token distributions, nats
    settings: dict = field(default_factory=dict)

    @property
    def probs_before(self) -> torch.Tensor:
        return torch.softmax(self.logits_before.double(), -1)

    @property
    def probs_after(self) -> torch.Tensor:
        return torch.softmax(self.logits_after.double(), -1)

    @property
    def top_changed(self) -> bool:
        return self.top_before[0].token_id != self.top_after[0].token_id

    def save(self, path: str | os.PathLike) -> None:
        """`path`.json (metadata, tables) + `path`.safetensors (logits), each written atomically;
        no pickle."""
        from safetensors.torch import save

        p = Path(path)
        meta = {
            "format": "circuit_trace.intervention", "version": "1", "prompt": self.prompt, "mode": self.mode,
            "input_ids": self.input_ids, "tokens": self.tokens, "kl": self.kl, "settings": self.settings,
            "top_before": [vars(t) for t in self.top_before], "top_after": [vars(t) for t in self.top_after],
            "features": self.features.to_dict(orient="records"),
        }
        atomic_write_text(p.with_suffix(".json"), json.dumps(meta, indent=1, default=float))
        atomic_write_bytes(p.with_suffix(".safetensors"), save({
            "logits_before": self.logits_before.contiguous().float().cpu(),
            "logits_after": self.logits_after.contiguous().float().cpu()}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> InterventionResult:
        from safetensors.torch import load_file

        p = Path(path)
        meta = json.loads(p.with_suffix(".json").read_text())
        t = load_file(str(p.with_suffix(".safetensors")))
        return cls(
            prompt=meta["prompt"], mode=meta["mode"], input_ids=meta["input_ids"], tokens=meta["tokens"],
            logits_before=t["logits_before"], logits_after=t["logits_after"],
            top_before=[TokenProb(**d) for d in meta["top_before"]], top_after=[TokenProb(**d) for d in meta["top_after"]],
            features=pd.DataFrame(meta["features"], columns=_FEATURE_COLUMNS), kl=meta["kl"], settings=meta["settings"],
        )

    def __str__(self) -> str:
        return format_result(self)


_FEATURE_COLUMNS = ["layer", "index", "pos", "op", "value", "before", "after"]


# ----------------------------------------------------------------------------------- helpers
def _layer_set(layers, n_layers: int) -> frozenset[int]:
    if layers is None:
        return frozenset(range(n_layers))
    out = frozenset(int(l) for l in ([layers] if isinstance(layers, int) else layers))
    bad = sorted(l for l in out if not 0 <= l < n_layers)
    if bad:
        raise EditError(f"layers {bad} out of range for a {n_layers}-layer model")
    return out


def _resolve_positions(positions: tuple[int, ...] | None, seq_len: int, limit: int | None = None) -> list[int]:
    """None -> every position after BOS (up to `limit` when edits stay on the prompt)."""
    if positions is None:
        return list(range(1, seq_len if limit is None else min(seq_len, limit)))
    return [p for p in positions if p < seq_len]


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _replace_first(out, new):
    return (new, *out[1:]) if isinstance(out, tuple) else new


def _input_of(args, kwargs):
    return args[0] if args else next(iter(kwargs.values()))


def _top(logits: torch.Tensor, rm: ReplacementModel, k: int) -> list[TokenProb]:
    probs = torch.softmax(logits.double(), -1)
    p, idx = probs.topk(min(k, probs.numel()))
    return [TokenProb(rm.tokenizer.decode([int(i)]), int(i), float(pp), float(logits[i])) for pp, i in zip(p, idx)]


def _kl(before: torch.Tensor, after: torch.Tensor) -> float:
    lp, lq = F.log_softmax(before.double(), -1), F.log_softmax(after.double(), -1)
    return float((lp.exp() * (lp - lq)).sum().clamp_min(0.0))


def _prepared(rm: ReplacementModel, prompt, edits, layers) -> tuple[torch.Tensor, list[EditLike], frozenset[int]]:
    """(prompt ids [P], the edits flattened and checked against them, the layer set): every
    argument of `intervene` / `generate` is checked before anything runs."""
    ids = rm.tokenize(prompt)
    return ids, _validated(rm, edits, int(ids.numel())), _layer_set(layers, rm.n_layers)


def _validated(rm: ReplacementModel, edits, n_pos: int | None) -> list[EditLike]:
    flat = flatten_edits(edits)
    tc = rm.transcoders
    check_edits(flat, n_layers=tc.n_layers, d_features=tc.d_features, n_pos=n_pos)
    return flat


# ----------------------------------------------------------------------------------- free mode
class _FreeEdits:
    """Forward hooks that apply edits to the real model; one instance per call, removed on exit.

    Per forward pass, the pre-hook of layer l's transcoder input encodes the live input (only for
    layers that some edit or error ablation needs), applies the edits of layer-l features in order
    (so two edits of one feature compose) and accumulates their decoder deltas for every target
    layer; the output hook of layer l adds those deltas (after replacing the output by the live
    reconstruction where errors are ablated)."""

    def __init__(self, rm: ReplacementModel, edits: Sequence[EditLike], layers: frozenset[int], limit: int | None):
        self.rm, self.tc, self.layers, self.limit = rm, rm.transcoders, layers, limit
        self.feature_edits = [e for e in edits if isinstance(e, Edit)]
        self.error_edits = [e for e in edits if isinstance(e, ErrorAblation)]
        L = self.tc.n_layers
        need = {e.layer for e in self.feature_edits}
        if self.error_edits:
            top = max(max(e.layers) if e.layers is not None else L - 1 for e in self.error_edits)
            need |= set(range(top + 1))  # a CLT's reconstruction of layer l needs every layer <= l
        self.need = need
        self._reset()

    def _reset(self) -> None:
        self.acts: dict[int, torch.Tensor] = {}
        self.xs: dict[int, torch.Tensor] = {}
        self.deltas: dict[int, torch.Tensor] = {}

    def _pre(self, layer: int):
        def hook(_module, args, kwargs):
            if layer == 0:
                self._reset()  # a new forward pass starts
            if layer not in self.need:
                return
            x = _input_of(args, kwargs)
            tdt = self.tc.dtype
            self.xs[layer] = x
            acts = self.tc.encode(x.to(tdt), layer)  # [B, P, F]
            self.acts[layer] = acts
            mine = [(k, e) for k, e in enumerate(self.feature_edits) if e.layer == layer]
            if not mine:
                return
            eff = acts.clone()  # edits of one feature compose in order
            seq = x.shape[1]
            new_vals = self.applied_now
            for k, e in mine:
                pos = _resolve_positions(e.positions, seq, self.limit)
                if not pos:
                    continue
                old = eff[:, pos, e.index]  # [B, k]
                new = e.new_value(old)
                eff[:, pos, e.index] = new
                new_vals[k] = new[0].tolist()
                delta = (new - old)[..., None]  # [B, k, 1]
                dec = self.tc.decoder_vectors(layer, [e.index])[0]  # [n_out, d]
                for j, target in enumerate(self.tc.output_layers(layer)):
                    if target not in self.layers:
                        continue
                    buf = self.deltas.get(target)
                    if buf is None:
                        buf = self.deltas[target] = torch.zeros(x.shape[0], seq, dec.shape[-1], dtype=tdt, device=x.device)
                    buf[:, pos] += delta * dec[j]
            return

        return hook

    def _post(self, layer: int):
        def hook(_module, _args, output):
            out = _first(output)
            changed = False
            for e in self.error_edits:
                if e.layers is not None and layer not in e.layers:
                    continue
                pos = _resolve_positions(e.positions, out.shape[1], self.limit)
                if not pos:
                    continue
                tc = self.tc
                srcs = {s: a for s, a in self.acts.items() if s <= layer}
                recon = decode_layer(tc, srcs, layer) + tc.skip(self.xs[layer].to(tc.dtype), layer)
                if not changed:
                    out, changed = out.clone(), True
                out[:, pos] = recon[:, pos].to(out.dtype)
            d = self.deltas.get(layer)
            if d is not None:
                out, changed = out + d.to(out.dtype), True
            return _replace_first(output, out) if changed else None

        return hook

    @contextmanager
    def installed(self) -> Iterator[_FreeEdits]:
        ad, tc = self.rm.adapter, self.tc
        handles = []
        self.applied_now: dict[int, list[float]] = {}
        try:
            for layer in range(ad.n_layers):
                in_mod, _, _ = ad.hook_module(tc.feature_input_hook, layer)
                out_mod, _, _ = ad.hook_module(tc.feature_output_hook, layer)
                handles.append(in_mod.register_forward_pre_hook(self._pre(layer), with_kwargs=True))
                handles.append(out_mod.register_forward_hook(self._post(layer)))
            yield self
        finally:
            for h in handles:
                h.remove()
            self._reset()


@torch.no_grad()
def _clean_inputs(rm: ReplacementModel, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Clean last-position logits [V] and the transcoder inputs per layer [P, d] of one prompt."""
    ad, tc = rm.adapter, rm.transcoders
    xs: list[torch.Tensor | None] = [None] * ad.n_layers
    handles = []

    def store(layer):
        def pre(_m, args, kwargs):
            xs[layer] = _input_of(args, kwargs)[0]
        return pre

    try:
        for layer in range(ad.n_layers):
            in_mod, _, _ = ad.hook_module(tc.feature_input_hook, layer)
            handles.append(in_mod.register_forward_pre_hook(store(layer), with_kwargs=True))
        logits = rm.model(input_ids=ids[None]).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    return logits, xs  # type: ignore[return-value]


def _clean_activation(rm, xs, e: Edit, pos: list[int]) -> list[float]:
    a = rm.transcoders.encode(xs[e.layer].to(rm.transcoders.dtype), e.layer)  # [P, F]
    return a[pos, e.index].tolist()


def _feature_table(rm, edits, xs, n_pos: int, applied: dict[int, list[float]], limit=None) -> pd.DataFrame:
    rows = []
    for k, e in enumerate(x for x in edits if isinstance(x, Edit)):
        pos = _resolve_positions(e.positions, n_pos, limit)
        before = _clean_activation(rm, xs, e, pos)
        after = applied.get(k, before)
        for p, b, a in zip(pos, before, after):
            rows.append((e.layer, e.index, p, e.op, e.value, float(b), float(a)))
    return pd.DataFrame(rows, columns=_FEATURE_COLUMNS)


# ----------------------------------------------------------------------------------- public
def intervene(
    model: ReplacementModel,
    prompt: str | list[int] | torch.Tensor,
    edits: EditLike | Sequence,
    *,
    mode: Mode = "free",
    layers: Sequence[int] | range | int | None = None,
    top_k: int = 5,
) -> InterventionResult:
    """Apply `edits` to `prompt` and return the next-token prediction before and after.

    mode "free": real model, everything downstream recomputed. mode "constrained": frozen local
    replacement (attention, norms and all MLP outputs fixed except for the edits' decoder deltas).
    `layers`: the layers whose MLP outputs receive decoder deltas (default all; e.g. range(2, 5)
    confines a CLT feature's writes to that band). Every edit is checked before anything runs."""
    if mode not in ("free", "constrained"):
        raise ValueError(f"mode must be 'free' or 'constrained', got {mode!r}")
    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    ids, flat, layer_set = _prepared(model, prompt, edits, layers)
    P = int(ids.numel())
    prompt_text = prompt if isinstance(prompt, str) else " ".join(model.decode_tokens(ids))
    if mode == "free":
        before, xs = _clean_inputs(model, ids)
        runner = _FreeEdits(model, flat, layer_set, None)
        with torch.no_grad(), runner.installed():
            after = model.model(input_ids=ids[None]).logits[0, -1]
            applied = dict(runner.applied_now)
        table = _feature_table(model, flat, xs, P, applied)
    else:
        before, after, xs, applied = _constrained(model, ids, flat, layer_set)
        table = _feature_table(model, flat, xs, P, applied)
    before, after = before.detach().float().cpu(), after.detach().float().cpu()
    return InterventionResult(
        prompt=prompt_text, mode=mode, input_ids=ids.tolist(), tokens=model.decode_tokens(ids),
        logits_before=before, logits_after=after, top_before=_top(before, model, top_k),
        top_after=_top(after, model, top_k), features=table, kl=_kl(before, after),
        settings={"layers": sorted(layer_set), "top_k": int(top_k), "n_edits": len(flat)},
    )


@torch.no_grad()
def constrained_mlp_outputs(lr, edits: Sequence[EditLike], layers: frozenset[int]):
    """The edited MLP-output constants [L, P, d] of a `LocalReplacement`, and each edit's new values.

    Activations are the recorded clean ones (no recomputation); edits of one feature compose."""
    tc = lr.rm.transcoders
    P = lr.n_pos
    mlp = lr.y.clone()
    acts: dict[int, torch.Tensor] = {}
    applied: dict[int, list[float]] = {}
    for k, e in enumerate(x for x in edits if isinstance(x, Edit)):
        pos = _resolve_positions(e.positions, P)
        if e.layer not in acts:
            acts[e.layer] = tc.encode(lr.x[e.layer], e.layer).clone()  # [P, F]
        old = acts[e.layer][pos, e.index]
        new = e.new_value(old)
        acts[e.layer][pos, e.index] = new
        applied[k] = new.tolist()
        dec = tc.decoder_vectors(e.layer, [e.index])[0]  # [n_out, d]
        for j, target in enumerate(tc.output_layers(e.layer)):
            if target in layers:
                mlp[target, pos] += (new - old)[:, None].to(mlp.dtype) * dec[j].to(mlp.dtype)
    for e in edits:
        if isinstance(e, ErrorAblation):
            pos = _resolve_positions(e.positions, P)
            for l in e.layers if e.layers is not None else range(tc.n_layers):
                if l in layers:
                    mlp[l, pos] -= lr.errors[l, pos]
    return mlp, applied


def _constrained(rm: ReplacementModel, ids: torch.Tensor, edits, layers: frozenset[int]):
    from ..replacement.local import LocalReplacement

    lr = LocalReplacement.record(rm, ids)
    mlp, applied = constrained_mlp_outputs(lr, edits, layers)
    with torch.no_grad():
        before = lr.frozen_forward(1, requires_grad=False).logits[0, -1]
        after = lr.frozen_forward(1, mlp_out=mlp, requires_grad=False).logits[0, -1]
    return before, after, list(lr.x), applied


@torch.no_grad()
def activations_from(
    model: ReplacementModel, prompt: str | list[int], nodes: Supernode | Sequence[tuple[int, int, int]], *, graph=None
) -> dict[tuple[int, int], float]:
    """Clean activations {(layer, index): a} of features in another prompt, read at each node's
    position there (e.g. the California features of an Oakland prompt, for `swap`)."""
    feats = nodes.features(graph) if isinstance(nodes, Supernode) else [tuple(map(int, n)) for n in nodes]
    ids = model.tokenize(prompt)
    check_edits([Edit((l, i), "set", 0.0, (p,)) for l, i, p in feats], n_layers=model.transcoders.n_layers,
                d_features=model.transcoders.d_features, n_pos=int(ids.numel()))
    _, xs = _clean_inputs(model, ids)
    out: dict[tuple[int, int], float] = {}
    for l, i, p in feats:
        a = float(model.transcoders.encode(xs[l][p].to(model.transcoders.dtype), l)[i])
        out[(l, i)] = max(out.get((l, i), -math.inf), a)  # a feature at several positions: its strongest
    return out


def format_result(result: InterventionResult) -> str:
    """Plain-text report for the CLI."""
    lines = [f"prompt: {result.prompt!r}   mode: {result.mode}   KL(clean || edited) = {result.kl:.4g} nats"]
    if len(result.features):
        lines.append("edited features (layer_index@pos: op value -> before => after):")
        for r in result.features.itertuples():
            lines.append(f"  {r.layer}_{r.index}@{r.pos}: {r.op} {r.value:g}  {r.before:.4g} => {r.after:.4g}")
    lines.append(f"{'rank':>4}  {'before':<28}{'after':<28}")
    for k in range(max(len(result.top_before), len(result.top_after))):
        cells = []
        for tops in (result.top_before, result.top_after):
            cells.append(f"{tops[k].token!r} {tops[k].prob:.3f}" if k < len(tops) else "")
        lines.append(f"{k + 1:>4}  {cells[0]:<28}{cells[1]:<28}")
    return "\n".join(lines)
