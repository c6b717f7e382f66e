"""Turn one layer's running statistics into per-feature dashboard dicts (Neuronpedia feature-detail
fields plus circuit-tracer's `act_min`/`act_max`/`histogram`/`activation_frequency`, our
`label`/`label_score`/`label_evidence`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..graphs.ids import cantor_pair
from .collect import LayerStats
from .corpus import TokenDecoder
from .labels import ConceptMap, FeatureLabel, LabelOptions, label_feature
from .logits import LogitEffects, logit_effects

__all__ = ["render_layer"]

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _example(toks: list[str], acts: np.ndarray, decimals: int, has_bos: bool, ctx: int, repeated: bool = False) -> dict:
    lo = 1 if has_bos else 0  # BOS is never scored: leave it out of the shown text
    a = acts[lo : lo + len(toks)].tolist()  # rounded already (render_layer)
    best = max(range(len(a)), key=a.__getitem__) if a else 0
    return {
        "tokens": toks,
        "tokens_acts_list": a,
        "train_token_ind": best,
        "is_repeated_datapoint": repeated,
        "context_id": ctx,
    }


def _histogram(counts: torch.Tensor, edges: list[float], decimals: int) -> tuple[list[int], list[float]]:
    nz = counts.nonzero().squeeze(1)
    if not len(nz):
        return [], []
    lo, hi = int(nz[0]), int(nz[-1]) + 1
    return counts[lo:hi].tolist(), [float(f"{e:.{decimals + 1}g}") for e in edges[lo : hi + 1]]


def _quantile_groups(a: dict, f: int, texts, o, has_bos: bool, top_set: set) -> tuple[list, list]:
    keep = np.nonzero(a["smp_key"][f] >= 0)[0]
    if not len(keep):
        return [], []
    vals = a["smp_val"][f, keep]
    order = keep[np.argsort(-vals, kind="stable")]
    qv = np.quantile(vals.astype(np.float64), QUANTILES).tolist()
    groups = []
    for chunk in np.array_split(order, min(o.n_quantiles, len(order))):
        if not len(chunk):
            continue
        hi, lo = float(a["smp_val"][f, chunk[0]]), float(a["smp_val"][f, chunk[-1]])
        ctxs = [int(c) for c in a["smp_ctx"][f, chunk]]
        exs = [
            _example(texts[c], a["smp_acts"][f, k], o.decimals, has_bos, c, c in top_set)
            for k, c in zip(chunk.tolist(), ctxs)
        ]
        groups.append({"quantile_name": f"Sampled contexts, activation {lo:.3g}\u2013{hi:.3g}", "examples": exs})
    return groups, [round(q, o.decimals) for q in qv]


@dataclass
class _LayerView:
    """One layer's statistics as numpy arrays, and what every feature's dict needs besides."""

    layer: int
    s: LayerStats
    o: Any  # DashboardOptions
    a: dict[str, np.ndarray]  # top_* / smp_* statistics, activations rounded
    texts: dict[int, list[str]]  # context id -> its shown tokens (BOS left out)
    tokens: TokenDecoder
    eff: LogitEffects
    edges: list[float]  # histogram bin edges
    has_bos: bool
    concepts: list | None
    ids: tuple[str, str]  # transcoder id, fingerprint


def _layer_view(
    rm, layer: int, s: LayerStats, token_ids: dict[int, list[int]], o, cmap, ids: tuple[str, str]
) -> _LayerView:
    tokens = TokenDecoder(rm.tokenizer)
    has_bos = rm.tokenizer.bos_token_id is not None
    a = {k: getattr(s, k).cpu().numpy() for k in ("top_val", "top_ctx", "smp_key", "smp_val", "smp_ctx")}
    for k in ("top_acts", "smp_acts"):  # round once, as float64 so tolist() gives short decimals
        a[k] = np.round(getattr(s, k).double().cpu().numpy(), o.decimals)
    lo = 1 if has_bos else 0
    texts = {c: [tokens(i) for i in ids_[lo:]] for c, ids_ in token_ids.items()}
    concepts = list(cmap.concepts) if cmap is not None and cmap.concepts else None
    eff = logit_effects(rm, layer, o.n_logits)
    return _LayerView(layer, s, o, a, texts, tokens, eff, s.bin_edges(), has_bos, concepts, ids)


def _concept_mass(v: _LayerView, f: int) -> dict | None:
    """{concept: activation mass} of feature f (None key: no concept), when concepts are counted."""
    if v.concepts is None or v.s.concept_mass is None:
        return None
    m = v.s.concept_mass[f].tolist()
    return {c: m[i] for i, c in enumerate(v.concepts) if m[i] > 0} | {None: m[-1]}


def _feature_dict(
    v: _LayerView, f: int, examples: tuple[list, list, list], logits: tuple[list, list], lab: FeatureLabel
) -> dict[str, Any]:
    """The feature's dashboard dict; `examples` = (top, quantile groups, quantile values)."""
    (top, groups, qv), (top_logits, bot_logits), s, o = examples, logits, v.s, v.o
    hist, hedges = _histogram(s.hist[f], v.edges, o.decimals)
    n_active = int(s.n_active[f])
    return {
        "index": cantor_pair(v.layer, f),
        "layer": v.layer,
        "feature": f,
        "transcoder_id": v.ids[0],
        "transcoder_fingerprint": v.ids[1],
        "examples_quantiles": ([{"quantile_name": "Top activations", "examples": top}] if top else []) + groups,
        "top_logits": [t for t, _ in top_logits],
        "bottom_logits": [t for t, _ in bot_logits],
        "top_logit_effects": [round(x, 4) for _, x in top_logits],
        "bottom_logit_effects": [round(x, 4) for _, x in bot_logits],
        "act_min": 0.0,
        "act_max": round(float(s.act_max[f]), o.decimals),
        "activation_frequency": n_active / max(1, int(s.n_tokens)),
        "n_active_tokens": n_active,
        "mean_active_activation": round(float(s.act_sum[f]) / n_active, o.decimals) if n_active else 0.0,
        "quantile_values": qv,
        "histogram": hist,
        "histogram_edges": hedges,
        "label": lab.label,
        "label_score": lab.score,
        "label_kind": lab.kind,
        "label_concept": lab.concept,
        "label_evidence": lab.evidence,
        "label_is_heuristic": True,
    }


def render_layer(
    rm,
    layer: int,
    s: LayerStats,
    token_ids: dict[int, list[int]],
    o,
    cmap: ConceptMap | None,
    label_options: LabelOptions | None,
    *,
    transcoder_id: str,
    fingerprint: str,
) -> tuple[list[dict], list[FeatureLabel]]:
    """One dict per feature of `layer`, in index order, and its label."""
    v = _layer_view(rm, layer, s, token_ids, o, cmap, (transcoder_id, fingerprint))
    a, eff, tokens = v.a, v.eff, v.tokens
    feats, labels = [], []
    for f in range(s.top_val.shape[0]):
        top_logits = [(tokens(int(i)), float(x)) for i, x in zip(eff.top_ids[f], eff.top_values[f])]
        bot_logits = [(tokens(int(i)), float(x)) for i, x in zip(eff.bottom_ids[f], eff.bottom_values[f])]
        top = [
            _example(
                v.texts[int(a["top_ctx"][f, k])], a["top_acts"][f, k], o.decimals, v.has_bos, int(a["top_ctx"][f, k])
            )
            for k in np.argsort(-a["top_val"][f], kind="stable").tolist()
            if a["top_val"][f, k] > 0
        ]
        groups, qv = _quantile_groups(a, f, v.texts, o, v.has_bos, {e["context_id"] for e in top})
        lab = label_feature(
            [(max(e["tokens_acts_list"], default=0.0), e["tokens"], e["tokens_acts_list"]) for e in top],
            top_logits,
            cmap,
            concept_mass=_concept_mass(v, f),
            options=label_options,
        )
        feats.append(_feature_dict(v, f, (top, groups, qv), (top_logits, bot_logits), lab))
        labels.append(lab)
    return feats, labels
