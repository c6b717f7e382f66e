"""Automatic feature labels for the organism, from what we know of its world.

Each feature gets (1) its top-activating corpus contexts, (2) its top output tokens (the logit lens
of its decoder: summed decoder vectors through the final norm's weight and the demeaned
unembedding), and a short label from both:
    - "say a capital"  when several different state capitals lead its output tokens;
    - "say <X>"        when one known name (state, city, capital, abbreviation) dominates its output;
    - "<State>"        when its top contexts fire on that state or on its cities / capital;
    - otherwise the token it fires on most, quoted.
The contexts also become Neuronpedia feature-detail files for the offline viewer."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import torch

from .world import CITY_TO_STATE, STATE_BY_NAME, STATES

CAPITALS = {s.capital: s.name for s in STATES}
ABBREVIATIONS = {s.abbreviation: s.name for s in STATES}


def _state_of(word: str) -> str | None:
    """The state a single word (a token without its space) stands for, if any."""
    if word in STATE_BY_NAME:
        return word
    return CITY_TO_STATE.get(word) or CAPITALS.get(word) or ABBREVIATIONS.get(word)


@dataclass
class FeatureProfile:
    layer: int
    index: int
    contexts: list[tuple[float, list[str], list[float]]] = field(default_factory=list)  # (max act, tokens, acts)
    fired_on: Counter = field(default_factory=Counter)  # token -> summed activation
    top_outputs: list[str] = field(default_factory=list)
    label: str = ""


def _output_tokens(rm, n: int = 5) -> dict[tuple[int, int], list[str]]:
    """Top output tokens of every feature: the decoder summed over target layers, through the final
    norm's weight and the demeaned unembedding (a linear read-out; no denominators)."""
    ad, tc = rm.adapter, rm.transcoders
    w_u = ad.unembed_weight().float()
    w_u = w_u - w_u.mean(0, keepdim=True)  # [V, d]
    gain = ad.final_norm.weight.float()
    if ad.norm_kind.offset_one:
        gain = 1.0 + gain
    out = {}
    with torch.no_grad():
        for layer in range(tc.n_layers):
            dec = tc.decoder(layer).float().sum(1) * gain  # [F, d]
            top = (dec @ w_u.T).topk(n, dim=-1).indices  # [F, n]
            for f, ids in enumerate(top.tolist()):
                out[(layer, f)] = [rm.tokenizer.decode([i]) for i in ids]
    return out


@torch.no_grad()
def profile_features(rm, sentences: list[str], *, n_contexts: int = 8, batch_size: int = 64) -> dict[tuple[int, int], FeatureProfile]:
    """Run `sentences` through the model and collect, for every feature that fires, its top contexts."""
    from ..models import mlp_io

    tc, tok = rm.transcoders, rm.tokenizer
    profiles: dict[tuple[int, int], FeatureProfile] = {}
    best: dict[tuple[int, int], list] = defaultdict(list)
    for lo in range(0, len(sentences), batch_size):
        enc = tok(sentences[lo : lo + batch_size], padding=True, return_tensors="pt")
        ids, mask = enc["input_ids"].to(rm.device), enc["attention_mask"].bool()
        x, _ = mlp_io(rm.adapter, ids, tc.feature_input_hook, tc.feature_output_hook)  # [L, B, P, d]
        for layer in range(tc.n_layers):
            acts = tc.encode(x[layer].to(tc.dtype), layer).cpu()  # [B, P, F]
            acts[:, 0] = 0  # BOS
            acts[~mask] = 0
            b_idx, p_idx, f_idx = acts.nonzero(as_tuple=True)
            vals = acts[b_idx, p_idx, f_idx]
            for b, p, f, v in zip(b_idx.tolist(), p_idx.tolist(), f_idx.tolist(), vals.tolist()):
                key = (layer, f)
                prof = profiles.get(key) or profiles.setdefault(key, FeatureProfile(layer, f))
                word = tok.decode([int(ids[b, p])]).strip()
                prof.fired_on[word] += v
                best[key].append((v, lo + b, p))
    for key, items in best.items():
        items.sort(reverse=True)
        seen, chosen = set(), []
        for v, sent, p in items:
            if sent not in seen:
                seen.add(sent)
                chosen.append((v, sent, p))
            if len(chosen) == n_contexts:
                break
        prof = profiles[key]
        layer, f = key
        for v, sent, _ in chosen:
            enc = tok(sentences[sent], return_tensors="pt")
            ids = enc["input_ids"].to(rm.device)
            x, _ = mlp_io(rm.adapter, ids, tc.feature_input_hook, tc.feature_output_hook, layers=[layer])
            a = tc.encode(x[0, 0].to(tc.dtype), layer)[:, f].clamp_min(0).cpu()
            a[0] = 0
            prof.contexts.append((v, [tok.decode([i]) for i in ids[0].tolist()], a.tolist()))
    return profiles


def label_from(profile: FeatureProfile) -> str:
    outputs = [t.strip() for t in profile.top_outputs]
    if len({t for t in outputs[:5] if t in CAPITALS}) >= 3:
        return "say a capital"
    states: Counter = Counter()
    for word, weight in profile.fired_on.items():
        if (s := _state_of(word)) is not None:
            states[s] += weight
    total = sum(profile.fired_on.values()) or 1.0
    if states and states.most_common(1)[0][1] >= 0.6 * total:
        state = states.most_common(1)[0][0]
        capital = STATE_BY_NAME[state].capital
        return f"say {capital}" if outputs and outputs[0] == capital else state
    if outputs and _state_of(outputs[0]) is not None:
        return f"say {outputs[0]}"
    if profile.fired_on:
        return f"\u201c{profile.fired_on.most_common(1)[0][0]}\u201d"
    return ""


def label_features(rm, sentences: list[str], **kwargs) -> dict[tuple[int, int], FeatureProfile]:
    """Profiles with `top_outputs` and `label` filled in, for every feature that fires on `sentences`."""
    profiles = profile_features(rm, sentences, **kwargs)
    outputs = _output_tokens(rm)
    for key, prof in profiles.items():
        prof.top_outputs = outputs[key]
        prof.label = label_from(prof)
    return profiles


def feature_details(profiles: dict[tuple[int, int], FeatureProfile]) -> list[dict]:
    """Neuronpedia feature-detail dicts (index = Cantor pairing of layer and feature index)."""
    from ..graphs.ids import cantor_pair

    return [
        {
            "index": cantor_pair(layer, f),
            "examples_quantiles": [{
                "quantile_name": "Top activations",
                "examples": [{"tokens": toks, "tokens_acts_list": acts} for _, toks, acts in prof.contexts],
            }],
            "top_logits": prof.top_outputs,
            "bottom_logits": [],
        }
        for (layer, f), prof in sorted(profiles.items())
    ]
