"""The residual stream at one layer's input and position as a sum of components (recorded in the
frozen local replacement model, so the sum is the model's own residual stream):

    r_m[p] = embedding[p] + Σ_{l<m} attention_l[p] + Σ_{l<m} MLP_l[p]
    MLP_l[p] = Σ_features a_f W_dec^{l_f -> l}[f] + b_dec_l + skip_l[p] + error_l[p]   (p >= 1)

Embedding: the residual stream entering layer 0 (token embedding, plus GPT-2's position embedding
and Gemma's scaling). At BOS, MLP outputs are constants of the replacement (no nodes): one "mlp"
component per layer. The error is the remainder, so the sum is exact; it is the graph's error node.
A feature appears once, with everything it writes below layer m (a CLT writes to several layers)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..graphs.ids import embedding_node_id, error_node_id, feature_node_id
from ..models.freeze import freeze_mode
from ..replacement.local import LocalReplacement

COMPONENT_COLUMNS = ["id", "kind", "layer", "pos", "feature", "label"]


@dataclass
class Residuals:
    """Residual stream of the recorded prompt, float64: layer inputs and after-attention points."""

    inputs: torch.Tensor  # [L, P, d]: r_l entering layer l
    mids: torch.Tensor  # [L, P, d]: after layer l's attention (hook_resid_mid)


@dataclass
class Components:
    table: pd.DataFrame  # one row per component, COMPONENT_COLUMNS
    vectors: torch.Tensor  # [n, d] float64, rows in table order; Σ rows = the residual stream


@torch.no_grad()
def record_residuals(lr: LocalReplacement) -> Residuals:
    """One frozen forward (equal to the real one) with the layer inputs and mids read off."""
    ad = lr.rm.adapter
    L = ad.n_layers
    inputs: list = [None] * L
    mids: list = [None] * L

    def reader(store: list, layer: int):
        def pre(_module, args, kwargs):
            store[layer] = (args[0] if args else kwargs["hidden_states"])[0].double()

        return pre

    handles = [ad.layers[l].register_forward_pre_hook(reader(inputs, l), with_kwargs=True) for l in range(L)]
    handles += [
        ad.hook_module("hook_resid_mid", l)[0].register_forward_pre_hook(reader(mids, l), with_kwargs=True)
        for l in range(L)
    ]
    try:
        fo = lr.frozen_forward(requires_grad=False)
    finally:
        for h in handles:
            h.remove()
    del fo
    return Residuals(torch.stack(inputs), torch.stack(mids))


def _to_residual(lr: LocalReplacement, layer: int, pos: int, v: torch.Tensor) -> torch.Tensor:
    """Vectors v [n, d] written at the transcoder's output hook of `layer` at `pos` -> what reaches
    the residual stream. The identity, except for a transcoder writing before Gemma's post-MLP norm
    (mlp.hook_out): that norm, frozen, is a per-position scale, applied here by the module itself."""
    ad, tc = lr.rm.adapter, lr.rm.transcoders
    res_mod = ad.hook_module("hook_mlp_out", layer)[0]
    if ad.hook_module(tc.feature_output_hook, layer)[0] is res_mod:
        return v
    buf = v.new_zeros(v.shape[0], pos + 1, v.shape[-1])
    buf[:, pos] = v
    with freeze_mode(ad, "frozen", lr.state):
        return res_mod(buf.to(lr.rm.dtype))[:, pos].double()


@torch.no_grad()
def residual_components(lr: LocalReplacement, res: Residuals, layer: int, pos: int) -> Components:
    """Components of r_layer[pos] (the input of `layer`, before its attention norm)."""
    rows: list[tuple] = []
    vecs: list[torch.Tensor] = []
    tok = int(lr.input_ids[pos])
    labels = getattr(lr.rm.transcoders, "feature_labels", None) or {}

    def add(row: tuple, v: torch.Tensor) -> None:
        rows.append(row)
        vecs.append(v)

    add((embedding_node_id(tok, pos), "embedding", -1, pos, -1, "embedding"), res.inputs[0, pos])
    for l in range(layer):
        add(
            (f"attn_{l}_{pos}", "attention", l, pos, -1, f"attention L{l} output"),
            res.mids[l, pos] - res.inputs[l, pos],
        )
    if pos == 0:
        for l in range(layer):
            add(
                (f"mlp_{l}_{pos}", "mlp", l, pos, -1, f"MLP L{l} output at BOS"),
                res.inputs[l + 1, pos] - res.mids[l, pos],
            )
    else:
        _mlp_components(lr, res, layer, pos, labels, add)
    table = pd.DataFrame(rows, columns=COMPONENT_COLUMNS)
    return Components(table, torch.stack(vecs))


def _mlp_components(lr: LocalReplacement, res: Residuals, layer: int, pos: int, labels: dict, add) -> None:
    tc, f = lr.rm.transcoders, lr.features
    sel = ((f.pos == pos) & (f.layer < layer)).nonzero().squeeze(1)
    d = res.inputs.shape[-1]
    per_layer_writes = [torch.zeros(d, dtype=torch.float64, device=res.inputs.device) for _ in range(layer)]
    feats = []
    for i in sel.tolist():
        lf, idx = int(f.layer[i]), int(f.index[i])
        dec = tc.decoder_vectors(lf, f.index[i : i + 1])[0].double()  # [n_out, d]
        act = float(f.activation[i])
        total = torch.zeros(d, dtype=torch.float64, device=res.inputs.device)
        for j in range(min(dec.shape[0], layer - lf)):
            w = _to_residual(lr, lf + j, pos, (act * dec[j])[None])[0]
            per_layer_writes[lf + j] += w
            total += w
        feats.append(((feature_node_id(lf, idx, pos), "feature", lf, pos, idx, labels.get(f"{lf}_{idx}", "")), total))
    for row, v in feats:
        add(row, v)
    bias = torch.zeros(d, dtype=torch.float64, device=res.inputs.device)
    skip = torch.zeros_like(bias)
    errors = []
    for l in range(layer):
        b = _to_residual(lr, l, pos, tc.b_dec[l].double()[None])[0]
        s = _to_residual(lr, l, pos, lr.skip_clean[l, pos].double()[None])[0]
        mlp = res.inputs[l + 1, pos] - res.mids[l, pos]
        errors.append(
            (
                (error_node_id(l, pos), "error", l, pos, -1, f"MLP L{l} reconstruction error"),
                mlp - per_layer_writes[l] - b - s,
            )
        )
        bias += b
        skip += s
    if layer:
        add(
            (f"mlpbias_{layer}_{pos}", "mlp bias", layer - 1, pos, -1, f"transcoder decoder biases L0-L{layer - 1}"),
            bias,
        )
        if tc.has_skip:
            add((f"skip_{layer}_{pos}", "skip", layer - 1, pos, -1, f"transcoder skip terms L0-L{layer - 1}"), skip)
    for row, v in errors:
        add(row, v)
