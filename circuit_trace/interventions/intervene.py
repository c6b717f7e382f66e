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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
import torch

from ..arguments import check_type
from ..atomic import atomic_write_bytes, atomic_write_text
from ..models.mlp_hooks import mlp_hooks
from ..replacement.full import kl_divergence, reconstruct_layer
from ..replacement.model import ReplacementModel
from .edits import (
    Edit,
    EditError,
    EditLike,
    ErrorAblation,
    Supernode,
    check_edits,
    ends_aligned_edits,
    flatten_edits,
    up_replaces_down,
)
from .report import format_prob, format_result

Mode = Literal["free", "constrained"]

__all__ = [
    "FreeEdits",
    "InterventionResult",
    "TokenProb",
    "activations_from",
    "check_choice",
    "constrained_mlp_outputs",
    "edit_activations",
    "format_result",
    "forward_inputs",
    "intervene",
    "node_activations",
    "prepare_edits",
    "resolve_positions",
    "swap_from",
]


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
    # every (layer, pos, index) active before or after the edits: layer, pos, index, before, after
    # (after: the edited value for edited features; recomputed downstream in free mode, unchanged
    # elsewhere in constrained mode). Feeds supernode_fractions and figure.
    activations: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ACTIVATION_COLUMNS))

    @property
    def probs_before(self) -> torch.Tensor:
        return torch.softmax(self.logits_before.double(), -1)

    @property
    def probs_after(self) -> torch.Tensor:
        return torch.softmax(self.logits_after.double(), -1)

    @property
    def top_changed(self) -> bool:
        return self.top_before[0].token_id != self.top_after[0].token_id

    def supernode_fractions(self, supernodes=None, graph=None) -> pd.DataFrame:
        """One row per supernode: label, n_features (its feature nodes; other kinds are skipped),
        before, after (summed activations), fraction = after / before (NaN when before is 0).
        `supernodes`: Supernodes, [label, id, ...] lists, or any source `read_supernodes` takes;
        default: `graph`'s qParams supernodes."""
        from .report import supernode_fractions

        return supernode_fractions(self, supernodes, graph)

    def figure(self, graph=None, supernodes=None):
        """Plotly figure: the next-token probabilities before and after the edits and, given
        supernodes (explicit, or `graph`'s qParams), each supernode's activation after the edits as
        a fraction of before, one bar per supernode."""
        from .report import intervention_figure

        return intervention_figure(self, graph, supernodes)

    def save(self, path: str | os.PathLike) -> None:
        """`path`.json (metadata, tables) + `path`.safetensors (logits), each written atomically;
        no pickle."""
        from safetensors.torch import save

        p = Path(path)
        meta = {
            "format": "circuit_trace.intervention",
            "version": "1",
            "prompt": self.prompt,
            "mode": self.mode,
            "input_ids": self.input_ids,
            "tokens": self.tokens,
            "kl": self.kl,
            "settings": self.settings,
            "top_before": [vars(t) for t in self.top_before],
            "top_after": [vars(t) for t in self.top_after],
            "features": self.features.to_dict(orient="records"),
        }
        acts = self.activations
        atomic_write_text(p.with_suffix(".json"), json.dumps(meta, indent=1, default=float))
        atomic_write_bytes(
            p.with_suffix(".safetensors"),
            save(
                {
                    "logits_before": self.logits_before.contiguous().float().cpu(),
                    "logits_after": self.logits_after.contiguous().float().cpu(),
                    "act_index": torch.tensor(acts[["layer", "pos", "index"]].to_numpy(dtype="int64"))
                    .reshape(-1, 3)
                    .contiguous(),
                    "act_before": torch.tensor(acts["before"].to_numpy(dtype="float32")),
                    "act_after": torch.tensor(acts["after"].to_numpy(dtype="float32")),
                }
            ),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> InterventionResult:
        from safetensors.torch import load_file

        p = Path(path)
        meta = json.loads(p.with_suffix(".json").read_text())
        t = load_file(str(p.with_suffix(".safetensors")))
        return cls(
            prompt=meta["prompt"],
            mode=meta["mode"],
            input_ids=meta["input_ids"],
            tokens=meta["tokens"],
            logits_before=t["logits_before"],
            logits_after=t["logits_after"],
            top_before=[TokenProb(**d) for d in meta["top_before"]],
            top_after=[TokenProb(**d) for d in meta["top_after"]],
            features=pd.DataFrame(meta["features"], columns=_FEATURE_COLUMNS),
            kl=meta["kl"],
            settings=meta["settings"],
            activations=_activations_frame(t),
        )

    def __str__(self) -> str:
        return format_result(self)

    def __repr__(self) -> str:
        b, a = self.top_before[0], self.top_after[0]
        return (
            f"InterventionResult(prompt={self.prompt!r}, mode={self.mode!r}, top {b.token!r} {format_prob(b.prob)} "
            f"-> {a.token!r} {format_prob(a.prob)}, KL={self.kl:.3g}, edited positions={len(self.features)})"
        )


_FEATURE_COLUMNS = ["layer", "index", "pos", "op", "value", "before", "after"]
ACTIVATION_COLUMNS = ["layer", "pos", "index", "before", "after"]


def _activations_frame(t: dict[str, torch.Tensor]) -> pd.DataFrame:
    if "act_index" not in t:  # saved before activations were kept
        return pd.DataFrame(columns=ACTIVATION_COLUMNS)
    idx = t["act_index"].reshape(-1, 3).tolist()
    rows = [(*i, b, a) for i, b, a in zip(idx, t["act_before"].tolist(), t["act_after"].tolist())]
    return pd.DataFrame(rows, columns=ACTIVATION_COLUMNS)


# ----------------------------------------------------------------------------------- helpers
def _layer_set(layers, n_layers: int) -> frozenset[int]:
    if layers is None:
        return frozenset(range(n_layers))
    out = frozenset(int(l) for l in ([layers] if isinstance(layers, int) else layers))
    bad = sorted(l for l in out if not 0 <= l < n_layers)
    if bad:
        raise EditError(f"layers {bad} out of range for a {n_layers}-layer model")
    return out


def resolve_positions(
    positions: tuple[int, ...] | None, seq_len: int, limit: int | None = None, start: int = 1
) -> list[int]:
    """An edit's positions in a sequence of `seq_len` tokens: None -> every position from `start`
    (default: after BOS) up to `limit` (when edits stay on the prompt); explicit positions beyond the
    sequence are dropped."""
    if positions is None:
        return list(range(start, seq_len if limit is None else min(seq_len, limit)))
    return [p for p in positions if p < seq_len]


def _top(logits: torch.Tensor, rm: ReplacementModel, k: int) -> list[TokenProb]:
    probs = torch.softmax(logits.double(), -1)
    p, idx = probs.topk(min(k, probs.numel()))
    return [TokenProb(rm.tokenizer.decode([int(i)]), int(i), float(pp), float(logits[i])) for pp, i in zip(p, idx)]


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """ValueError naming `name` unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"{name} must be {' or '.join(repr(a) for a in allowed)}, got {value!r}")


def prepare_edits(rm: ReplacementModel, prompt, edits, layers) -> tuple[torch.Tensor, list[EditLike], frozenset[int]]:
    """(prompt ids [P], the edits flattened and checked against them, the layer set): every
    argument of `intervene` / `generate` is checked before anything runs."""
    check_type(rm, ReplacementModel, "intervene()/generate()", "model", "a ReplacementModel (from ct.load())")
    ids = rm.tokenize(prompt)
    flat = flatten_edits(edits)
    tc = rm.transcoders
    check_edits(flat, n_layers=tc.n_layers, d_features=tc.d_features, n_pos=int(ids.numel()))
    return ids, flat, _layer_set(layers, rm.n_layers)


# ----------------------------------------------------------------------------------- the kernel
AddDelta = Callable[[int, list[int], torch.Tensor], None]  # (target layer, positions, delta [B, k, d])


def edit_activations(
    tc,
    layer: int,
    acts: torch.Tensor,
    edits: Iterable[tuple[int, Edit]],
    positions: Callable[[Edit], list[int]],
    layers: frozenset[int],
    add: AddDelta,
    applied: dict[int, list[float]],
) -> None:
    """The feature-edit kernel of both modes. Applies `edits` ((k, edit) of layer-`layer` features)
    in order to acts [B, P, F] in place (check_conflicts allows one edit per feature and position); records edit k's new
    values (batch row 0) in applied[k]; hands the decoder delta (a' - a) W_dec^{layer -> t}
    [B, k, d] of every target layer t in `layers` to add(t, positions, delta)."""
    for k, e in edits:
        pos = positions(e)
        if not pos:
            continue
        old = acts[:, pos, e.index]  # [B, k]
        new = e.new_value(old)
        acts[:, pos, e.index] = new
        applied[k] = new[0].tolist()
        delta = (new - old)[..., None]  # [B, k, 1]
        dec = tc.decoder_vectors(layer, [e.index])[0]  # [n_out, d]
        for j, target in enumerate(tc.output_layers(layer)):
            if target in layers:
                add(target, pos, delta * dec[j])


# ----------------------------------------------------------------------------------- free mode
class FreeEdits:
    """Hooks that apply edits to the real model (free mode); one instance per call, removed on exit.

    Per forward pass, layer l's transcoder input is encoded live (only for layers that some edit or
    error ablation needs), the edits of layer-l features are applied by `edit_activations` and their
    decoder deltas accumulated per target layer; layer l's output gets those deltas added (after
    being replaced by the live reconstruction where errors are ablated). `applied_now[k]`: edit k's
    new values in the last pass. Edits and error ablations without explicit positions act on
    positions [start, limit) (limit None: to the end of the sequence)."""

    def __init__(
        self,
        rm: ReplacementModel,
        edits: Sequence[EditLike],
        layers: frozenset[int],
        limit: int | None,
        *,
        start: int = 1,
    ):
        self.rm, self.tc, self.layers, self.limit, self.start = rm, rm.transcoders, layers, limit, start
        self.feature_edits = [e for e in edits if isinstance(e, Edit)]
        self.error_edits = [e for e in edits if isinstance(e, ErrorAblation)]
        L = self.tc.n_layers
        need = {e.layer for e in self.feature_edits}
        if self.error_edits:
            top = max(max(e.layers) if e.layers is not None else L - 1 for e in self.error_edits)
            need |= set(range(top + 1))  # a CLT's reconstruction of layer l needs every layer <= l
        self.need = need
        self.applied_now: dict[int, list[float]] = {}
        self._reset()

    def _reset(self) -> None:
        self.acts: dict[int, torch.Tensor] = {}  # layer -> clean live activations [B, P, F]
        self.xs: dict[int, torch.Tensor] = {}  # layer -> transcoder input [B, P, d]
        self.deltas: dict[int, torch.Tensor] = {}  # target layer -> summed decoder deltas [B, P, d]

    def _read(self, layer: int, x: torch.Tensor) -> None:
        if layer == 0:
            self._reset()  # a new forward pass starts
        if layer not in self.need:
            return
        x = x.to(self.tc.device)  # a no-op unless the model is placed over several devices
        self.xs[layer] = x
        acts = self.acts[layer] = self.tc.encode(x.to(self.tc.dtype), layer)  # [B, P, F]
        mine = [(k, e) for k, e in enumerate(self.feature_edits) if e.layer == layer]
        if mine:
            seq = x.shape[1]
            edit_activations(
                self.tc,
                layer,
                acts.clone(),
                mine,
                lambda e: resolve_positions(e.positions, seq, self.limit, self.start),
                self.layers,
                self._add_delta(x),
                self.applied_now,
            )

    def _add_delta(self, x: torch.Tensor) -> AddDelta:
        def add(target: int, pos: list[int], delta: torch.Tensor) -> None:
            buf = self.deltas.get(target)
            if buf is None:
                buf = self.deltas[target] = torch.zeros(
                    x.shape[0], x.shape[1], delta.shape[-1], dtype=self.tc.dtype, device=x.device
                )
            buf[:, pos] += delta

        return add

    def _write(self, layer: int, out: torch.Tensor) -> torch.Tensor | None:
        changed = False
        for e in self.error_edits:
            if e.layers is not None and layer not in e.layers:
                continue
            pos = resolve_positions(e.positions, out.shape[1], self.limit, self.start)
            if not pos:
                continue
            srcs = {s: a for s, a in self.acts.items() if s <= layer}
            recon = reconstruct_layer(self.tc, srcs, self.xs[layer], layer)
            if not changed:
                out, changed = out.clone(), True
            out[:, pos] = recon[:, pos].to(out.device, out.dtype)
        d = self.deltas.get(layer)
        if d is not None:
            out, changed = out + d.to(out.device, out.dtype), True
        return out if changed else None

    @contextmanager
    def installed(self) -> Iterator[FreeEdits]:
        tc = self.tc
        self.applied_now = {}
        try:
            with mlp_hooks(
                self.rm.adapter,
                tc.feature_input_hook,
                tc.feature_output_hook,
                on_input=self._read,
                on_output=self._write,
            ):
                yield self
        finally:
            self._reset()


@torch.no_grad()
def forward_inputs(
    rm: ReplacementModel, ids: torch.Tensor, edits: FreeEdits | None = None
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """One forward pass of the prompt ids [P] in the real model, under `edits` when given:
    (last-position logits [V], the transcoder input of every layer [P, d], the last position's
    lm_head input [d])."""
    ad, tc = rm.adapter, rm.transcoders
    xs: list = [None] * ad.n_layers
    zs: list[torch.Tensor] = []
    capture = mlp_hooks(
        ad, tc.feature_input_hook, tc.feature_output_hook, on_input=lambda l, x: xs.__setitem__(l, x[0])
    )
    hook = ad.lm_head.register_forward_pre_hook(lambda _m, args: zs.append(args[0]))
    try:
        with capture, edits.installed() if edits is not None else nullcontext():
            logits = rm.model(input_ids=ids[None]).logits[0, -1]
    finally:
        hook.remove()
    return logits, xs, zs[-1][0, -1]


def _clean_activation(rm, xs, e: Edit, pos: list[int]) -> list[float]:
    a = rm.transcoders.encode(xs[e.layer].to(rm.transcoders.dtype), e.layer)  # [P, F]
    return a[pos, e.index].tolist()


def _feature_table(rm, edits, xs, n_pos: int, applied: dict[int, list[float]], limit=None) -> pd.DataFrame:
    rows = []
    for k, e in enumerate(x for x in edits if isinstance(x, Edit)):
        pos = resolve_positions(e.positions, n_pos, limit)
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
    check_choice("mode", mode, ("free", "constrained"))
    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    ids, flat, layer_set = prepare_edits(model, prompt, edits, layers)
    P = int(ids.numel())
    prompt_text = prompt if isinstance(prompt, str) else " ".join(model.decode_tokens(ids))
    if mode == "free":
        before, xs, _ = forward_inputs(model, ids)
        runner = FreeEdits(model, flat, layer_set, None)
        after, xs_after, _ = forward_inputs(model, ids, runner)
        applied = dict(runner.applied_now)
    else:
        before, after, xs, applied = _constrained(model, ids, flat, layer_set)
        xs_after = xs  # no feature is recomputed in the frozen local replacement
    table = _feature_table(model, flat, xs, P, applied)
    acts = _activation_table(model, xs, xs_after, flat, applied)
    before, after = before.detach().float().cpu(), after.detach().float().cpu()
    return InterventionResult(
        prompt=prompt_text,
        mode=mode,
        input_ids=ids.tolist(),
        tokens=model.decode_tokens(ids),
        logits_before=before,
        logits_after=after,
        top_before=_top(before, model, top_k),
        top_after=_top(after, model, top_k),
        features=table,
        kl=float(kl_divergence(before, after).clamp_min(0.0)),
        settings={"layers": sorted(layer_set), "top_k": int(top_k), "n_edits": len(flat)},
        activations=acts,
    )


@torch.no_grad()
def _activation_table(rm, xs_before, xs_after, edits, applied: dict[int, list[float]]) -> pd.DataFrame:
    """Every feature active in the clean or the edited run: (layer, pos, index, before, after). The
    edited run's activations are re-encoded from its transcoder inputs, then the edited features get
    the values the edits gave them (the live encoding there is the value before the edit)."""
    tc = rm.transcoders
    feature_edits = [e for e in edits if isinstance(e, Edit)]
    frames = []
    for layer in range(tc.n_layers):
        a_b = tc.encode(xs_before[layer].to(tc.dtype), layer).float()  # [P, F]
        a_a = a_b.clone() if xs_after is xs_before else tc.encode(xs_after[layer].to(tc.dtype), layer).float()
        for k, e in enumerate(feature_edits):
            if e.layer == layer and k in applied:
                pos = resolve_positions(e.positions, a_a.shape[0])
                a_a[pos, e.index] = torch.tensor(applied[k], dtype=a_a.dtype, device=a_a.device)
        pos, idx = torch.nonzero((a_b != 0) | (a_a != 0), as_tuple=True)
        frames.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "pos": pos.cpu().numpy(),
                    "index": idx.cpu().numpy(),
                    "before": a_b[pos, idx].cpu().numpy(),
                    "after": a_a[pos, idx].cpu().numpy(),
                }
            )
        )
    table = pd.concat(frames, ignore_index=True) if frames else None
    return pd.DataFrame(table, columns=ACTIVATION_COLUMNS)


@torch.no_grad()
def constrained_mlp_outputs(lr, edits: Sequence[EditLike], layers: frozenset[int]):
    """The edited MLP-output constants [L, P, d] of a `LocalReplacement`, and each edit's new values.

    Activations are the recorded clean ones (no recomputation)."""
    tc = lr.rm.transcoders
    P = lr.n_pos
    mlp = lr.y.clone()
    acts: dict[int, torch.Tensor] = {}
    applied: dict[int, list[float]] = {}

    def add(target: int, pos: list[int], delta: torch.Tensor) -> None:
        mlp[target, pos] += delta[0].to(mlp.dtype)  # delta [1, k, d]

    for k, e in enumerate(x for x in edits if isinstance(x, Edit)):
        if e.layer not in acts:
            acts[e.layer] = tc.encode(lr.x[e.layer], e.layer)[None].clone()  # [1, P, F]
        edit_activations(
            tc, e.layer, acts[e.layer], [(k, e)], lambda e: resolve_positions(e.positions, P), layers, add, applied
        )
    for e in edits:
        if isinstance(e, ErrorAblation):
            pos = resolve_positions(e.positions, P)
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
    feats = nodes.features(graph) if isinstance(nodes, Supernode) else [(int(l), int(i), int(p)) for l, i, p in nodes]
    out: dict[tuple[int, int], float] = {}
    for (l, i, _), a in zip(feats, node_activations(model, model.tokenize(prompt), feats)):
        out[(l, i)] = max(out.get((l, i), -math.inf), a)  # a feature at several positions: its strongest
    return out


@torch.no_grad()
def node_activations(model: ReplacementModel, ids: torch.Tensor, feats: Sequence[tuple[int, int, int]]) -> list[float]:
    """The clean activation of each (layer, index, pos) in `feats` on the prompt `ids` [P]."""
    check_edits(
        [Edit((l, i), "set", 0.0, (p,)) for l, i, p in dict.fromkeys(feats)],
        n_layers=model.transcoders.n_layers,
        d_features=model.transcoders.d_features,
        n_pos=int(ids.numel()),
    )
    _, xs, _ = forward_inputs(model, ids)
    tc = model.transcoders
    return [float(tc.encode(xs[l][p].to(tc.dtype), l)[i]) for l, i, p in feats]


def swap_from(
    model: ReplacementModel,
    prompt: str | list[int],
    down: Supernode,
    up: Supernode,
    up_prompt: str | list[int],
    *,
    up_scale: float = 1.0,
) -> list[Edit]:
    """`swap` for two prompts without their graphs: `down` (ids with positions in `prompt`) set to 0,
    and each of `up`'s features (ids with positions in `up_prompt`) set to `up_scale` × its clean
    activation in `up_prompt`, where it was there, the prompts aligned at their ends (as
    `swap(..., up_graph=)`). What `circuit-trace intervene --swap DOWN=UP --swap-from` runs."""
    here, there = model.tokenize(prompt), model.tokenize(up_prompt)
    feats = up.features()
    placed = ends_aligned_edits(up, feats, node_activations(model, there, feats), there.numel(), here.numel(), up_scale)
    return up_replaces_down(down.edits("set", 0.0), placed)
