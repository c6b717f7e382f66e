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

from collections import Counter
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
    fired_on: Counter = field(default_factory=Counter)  # word -> summed activation
    state_mass: Counter = field(default_factory=Counter)  # state a sentence is about -> summed max activation
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


def _batches(rm, sentences: list[str], batch_size: int):
    """(offset, ids [B, P], mask [B, P], x [L, B, P, d]) for right-padded batches of sentences."""
    from ..models import mlp_io

    tc = rm.transcoders
    for lo in range(0, len(sentences), batch_size):
        enc = rm.tokenizer(sentences[lo : lo + batch_size], padding=True, return_tensors="pt")
        ids = enc["input_ids"].to(rm.device)
        x, _ = mlp_io(rm.adapter, ids, tc.feature_input_hook, tc.feature_output_hook)
        yield lo, ids, enc["attention_mask"].bool().to(rm.device), x


@torch.no_grad()
def profile_features(rm, sentences: list[str], *, n_contexts: int = 8, batch_size: int = 64) -> dict[tuple[int, int], FeatureProfile]:
    """Two passes over `sentences`: (1) each feature's top sentences (by max activation) and its
    activation summed per token id; (2) the per-token activations of just those sentences."""
    tc, tok, L, F = rm.transcoders, rm.tokenizer, rm.transcoders.n_layers, rm.transcoders.d_features
    V = rm.adapter.vocab_size
    top_v = torch.full((L, F, n_contexts), -1.0)
    top_s = torch.full((L, F, n_contexts), -1, dtype=torch.long)
    per_token = torch.zeros(L, F, V)
    states = sorted(STATE_BY_NAME)
    about = torch.tensor([states.index(s) if (s := _sentence_state(t)) else -1 for t in sentences])
    per_state = torch.zeros(L, F, len(states) + 1)  # last column: sentences about no state
    for lo, ids, mask, x in _batches(rm, sentences, batch_size):
        for layer in range(L):
            acts = tc.encode(x[layer].to(tc.dtype), layer).float()  # [B, P, F]
            acts[:, 0] = 0  # BOS
            acts[~mask] = 0
            m = acts.amax(1).T.cpu()  # [F, B]
            sent = torch.arange(lo, lo + m.shape[1]).expand(F, -1)
            v, i = torch.cat([top_v[layer], m], 1).topk(n_contexts, dim=1)
            top_s[layer] = torch.cat([top_s[layer], sent], 1).gather(1, i)
            top_v[layer] = v
            per_token[layer].index_add_(1, ids.reshape(-1).cpu(), acts.reshape(-1, F).T.cpu())
            per_state[layer].index_add_(1, about[lo : lo + m.shape[1]] % (len(states) + 1), m)
    wanted = sorted({int(s) for s in top_s[top_v > 0].tolist()})
    where = {s: k for k, s in enumerate(wanted)}
    profiles: dict[tuple[int, int], FeatureProfile] = {}
    chosen = [sentences[s] for s in wanted]
    acts_of: dict[int, list] = {}  # layer -> per chosen sentence (tokens, acts [P, F])
    for lo, ids, mask, x in _batches(rm, chosen, batch_size):
        for layer in range(L):
            acts = tc.encode(x[layer].to(tc.dtype), layer).float().clamp_min(0).cpu()
            acts[:, 0] = 0
            for b in range(ids.shape[0]):
                n = int(mask[b].sum())
                words = [tok.decode([i]) for i in ids[b, :n].tolist()]
                acts_of.setdefault(layer, []).append((words, acts[b, :n]))
    for layer in range(L):
        fired = (top_v[layer] > 0).any(1).nonzero().squeeze(1).tolist()
        for f in fired:
            prof = profiles[(layer, f)] = FeatureProfile(layer, f)
            weights = per_token[layer, f]
            for t in weights.nonzero().squeeze(1).tolist():
                prof.fired_on[tok.decode([t]).strip()] += float(weights[t])
            for k, mass in enumerate(per_state[layer, f, :-1].tolist()):
                if mass > 0:
                    prof.state_mass[states[k]] = mass
            prof.state_mass[None] = float(per_state[layer, f, -1])
            for v, s in zip(top_v[layer, f].tolist(), top_s[layer, f].tolist()):
                if v > 0:
                    words, a = acts_of[layer][where[s]]
                    prof.contexts.append((v, words, a[:, f].tolist()))
    return profiles


def _sentence_state(text: str) -> str | None:
    """The state a sentence is about: its first word or two-word name that belongs to a state."""
    words = text.replace(",", " ").replace(".", " ").replace("?", " ").replace("'s", " ").split()
    for i, w in enumerate(words):
        for name in (" ".join(words[i : i + 3]), " ".join(words[i : i + 2]), w):
            if (s := _state_of(name)) is not None:
                return s
    return None


def label_from(profile: FeatureProfile) -> str:
    outputs = [t.strip() for t in profile.top_outputs]
    if len({t for t in outputs[:5] if t in CAPITALS}) >= 3:
        return "say a capital"
    total = sum(profile.state_mass.values())
    named = Counter({k: v for k, v in profile.state_mass.items() if k is not None})
    if named and total > 0 and named.most_common(1)[0][1] >= 0.5 * total:
        state = named.most_common(1)[0][0]
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
