"""Evidence-based feature labels. Heuristic: a label summarises two kinds of evidence and says how
well they agree; it is a reading aid, not a ground truth.

Evidence for one feature:
- contexts: where it fires. Each activation is mapped to a concept by a `ConceptMap` (for any model,
  the token it fires on; for the organism, the US state the text up to that token is about). The
  shares come from the activation mass over the whole corpus when the map has a closed list of
  concepts, else from the top-activating examples.
- logits: what it writes. Its top logit effects (tokens), each mapped to a concept, weighted by effect.

Each source gives a verdict over the named concepts (shares renormalised among them): "neutral"
when less than `contradict_share` of its weight is on named concepts at all, "speaks" for concept c
when c has at least `min_share` of the named weight and `dominance` times the runner-up's, else
"spread". The label names c when one source speaks for c and the other speaks for c too ("agree") or is
neutral ("contexts" / "logits"), and when the contexts speak for c and the logits are spread with no
concept holding `dominance` times c's share ("contexts": a feature that carries a concept mid-model
writes little to the logits directly, so weak logits count against c only when they clearly favour
another concept, not on a near tie); when one source names c and the other names another concept,
or the logits are spread with another concept dominating c, or the contexts are spread (it fires for
several), the label is "mixed" and names none. Otherwise: "say a <category>" when the top logits
are several concepts of one category, "<category> names" when it fires on names of several
concepts, or the token it fires on most. `score` is the agreement: the mean share of the named concept over the
non-neutral sources; for "mixed", the overlap Σ_c min(r_contexts(c), r_logits(c)) of the two
renormalised distributions; for the other kinds, the share of the evidence they rest on."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["ConceptMap", "FeatureLabel", "LabelOptions", "TokenConcepts", "label_feature", "shares"]


class ConceptMap(Protocol):
    """How tokens and contexts map to concepts (e.g. US states). `concepts`: the closed list of
    named concepts (enables corpus-wide activation mass), or None. `comparable`: True when a context
    concept and a logit concept can contradict each other (same kind of thing)."""

    concepts: Sequence[str] | None
    comparable: bool

    def context_concept(self, tokens: Sequence[str], pos: int) -> str | None: ...

    def token_concept(self, token: str) -> str | None: ...

    def token_category(self, token: str) -> str | None: ...

    def describe(self, kind: str, concept: str | None, top_token: str, other: str | None) -> str: ...


class TokenConcepts:
    """The default map for any model: a context's concept is the token the feature fires on, a logit
    token is its own concept, and the two are not comparable (firing on "Dallas" and promoting
    "Austin" is no contradiction)."""

    concepts: Sequence[str] | None = None
    comparable: bool = False

    def context_concept(self, tokens: Sequence[str], pos: int) -> str | None:
        return tokens[pos].strip() or None

    def token_concept(self, token: str) -> str | None:
        return token.strip() or None

    def token_category(self, token: str) -> str | None:
        return None

    def describe(self, kind: str, concept: str | None, top_token: str, other: str | None) -> str:
        if kind == "token":
            return f"\u201c{concept}\u201d" + (f" \u2192 {top_token.strip()}" if top_token.strip() else "")
        return concept or ""


@dataclass
class LabelOptions:
    min_share: float = 0.6  # share of a source's named weight a concept needs to be named
    contradict_share: float = 0.3  # share of another concept in the other source that contradicts
    n_logits: int = 10  # top logit tokens used as evidence
    category_top: int = 5  # "say a <category>": >= category_min distinct concepts of one category
    category_min: int = 3  # among the top `category_top` logit tokens
    dominance: float = 2.0  # a named concept must have this many times the runner-up's share


@dataclass
class FeatureLabel:
    label: str
    score: float  # agreement in [0, 1] (module docstring)
    kind: str  # "agree" | "contexts" | "logits" | "mixed" | "category" | "names" | "token" | "" (dead)
    concept: str | None  # the concept the label names (None for mixed / category / token / dead)
    evidence: dict = field(default_factory=dict)


def shares(weights: dict) -> dict:
    """Normalise non-negative weights to shares (empty when they sum to zero)."""
    total = sum(max(w, 0.0) for w in weights.values())
    return {k: max(w, 0.0) / total for k, w in weights.items()} if total > 0 else {}


def _top_named(p: dict) -> tuple[str | None, float]:
    named = [(c, s) for c, s in p.items() if c is not None]
    return max(named, key=lambda cs: cs[1]) if named else (None, 0.0)


def _category(cmap: ConceptMap, logits: Sequence[tuple[str, float]], o: LabelOptions) -> str | None:
    seen: dict[str, set] = {}
    for tok, _ in logits[: o.category_top]:
        cat, con = cmap.token_category(tok), cmap.token_concept(tok)
        if cat is not None:
            seen.setdefault(cat, set()).add(con)
    best = max(seen.items(), key=lambda kv: len(kv[1]), default=None)
    return best[0] if best and len(best[1]) >= o.category_min else None


def _evidence(examples, p_ctx, p_log, logits, source) -> dict:
    tok_w: Counter = Counter()
    for v, toks, acts in examples:
        if toks:
            tok_w[toks[max(range(len(acts)), key=acts.__getitem__)]] += v

    def top(p: dict, n: int) -> list:
        return [[c, round(s, 3)] for c, s in sorted(p.items(), key=lambda cs: -cs[1])[:n]]

    return {
        "activating_tokens": top(shares(dict(tok_w)), 5),
        "context_concepts": top(p_ctx, 4),
        "context_source": source,
        "top_logits": [[t, round(float(v), 4)] for t, v in logits[:5]],
        "logit_concepts": top(p_log, 4),
        "top_contexts": ["".join(toks).strip()[-80:] for _, toks, _ in examples[:3]],
    }


def label_feature(
    examples: Sequence[tuple[float, Sequence[str], Sequence[float]]],
    logits: Sequence[tuple[str, float]],
    cmap: ConceptMap | None = None,
    *,
    concept_mass: dict | None = None,
    options: LabelOptions | None = None,
) -> FeatureLabel:
    """Label one feature from its top examples [(max activation, tokens, per-token activations)],
    its top logit effects [(token, value)] and, optionally, its corpus-wide activation mass per
    concept ({concept or None: mass})."""
    cmap, o = cmap or TokenConcepts(), options or LabelOptions()
    examples = [e for e in examples if e[0] > 0]
    if not examples:
        return FeatureLabel("", 0.0, "", None, {})
    logits = list(logits[: o.n_logits])
    if concept_mass and sum(concept_mass.values()) > 0:
        p_ctx, source = shares(concept_mass), "corpus"
    else:
        w: defaultdict[str | None, float] = defaultdict(float)
        for v, toks, acts in examples:
            w[cmap.context_concept(toks, max(range(len(acts)), key=acts.__getitem__))] += v
        p_ctx, source = shares(dict(w)), "top examples"
    lw: defaultdict[str | None, float] = defaultdict(float)
    for tok, v in logits:
        lw[cmap.token_concept(tok)] += max(float(v), 0.0)
    p_log = shares(dict(lw))
    ev = _evidence(examples, p_ctx, p_log, logits, source)
    top_tok = logits[0][0] if logits else ""
    if not cmap.comparable:
        c, s = _top_named(shares({k: v for k, v in dict(p_ctx).items()}))
        return FeatureLabel(cmap.describe("token", c, top_tok, None), round(s, 4), "token", None, ev)
    return _comparable_label(cmap, o, p_ctx, p_log, logits, ev)


def _verdict(p: dict, o: LabelOptions) -> tuple[str, str | None, dict]:
    """("neutral" | "speaks" | "spread", the concept it names, shares among named concepts)."""
    named = {c: v for c, v in p.items() if c is not None}
    total = sum(named.values())
    if total < o.contradict_share:
        return "neutral", None, {}
    rel = {c: v / total for c, v in named.items()}
    ranked = sorted(rel.values(), reverse=True) + [0.0]
    top = max(rel, key=rel.__getitem__)
    if ranked[0] >= o.min_share and ranked[0] >= o.dominance * ranked[1]:
        return "speaks", top, rel
    return "spread", None, rel


def _dominated(rel: dict, c: str | None, dominance: float) -> bool:
    """Whether another concept has at least `dominance` times c's share in `rel`."""
    return any(d != c and v >= dominance * rel.get(c, 0.0) for d, v in rel.items())


def _comparable_label(cmap, o: LabelOptions, p_ctx: dict, p_log: dict, logits, ev: dict) -> FeatureLabel:
    v_a, c_a, r_a = _verdict(p_ctx, o)
    v_l, c_l, r_l = _verdict(p_log, o)
    t_a = max(r_a, key=r_a.__getitem__) if r_a else None  # top named concept of each source
    t_l = max(r_l, key=r_l.__getitem__) if r_l else None
    if "speaks" in (v_a, v_l):
        c = c_a if v_a == "speaks" else c_l
        other_v, other_top = (v_l, t_l) if v_a == "speaks" else (v_a, t_a)
        # Spread logits in which no concept dominates c are weak support (a feature that carries a
        # concept mid-model writes little to the logits directly, and a near tie between c and
        # another concept is no contradiction); spread contexts are not: it fires for several.
        weak_support = other_v == "spread" and v_a == "speaks" and not _dominated(r_l, c, o.dominance)
        if other_v == "spread" and not weak_support:
            return _mixed(cmap, r_a, r_l, ev, "one source names it, the other is spread over several concepts")
        if other_v == "speaks" and other_top != c:
            return _mixed(cmap, r_a, r_l, ev, "contexts and logits name different concepts")
        kind = "agree" if other_v == "speaks" else ("contexts" if v_a == "speaks" else "logits")
    else:  # both spread or neutral: a concept leading two spread sources is too weak to name
        c = None
    if c is not None:
        used = [r for r, v in ((r_a, v_a), (r_l, v_l)) if v != "neutral"]
        score = sum(r.get(c, 0.0) for r in used) / len(used)
        top_tok = next((t for t, _ in logits if cmap.token_concept(t) == c), logits[0][0] if logits else "")
        ev["rule"] = {
            "agree": "contexts and logits name it",
            "contexts": f"contexts name it; logits {'spread, none dominating it' if v_l == 'spread' else 'neutral'}",
            "logits": "logits name it; contexts neutral",
        }[kind]
        return FeatureLabel(cmap.describe(kind, c, top_tok, None), round(score, 4), kind, c, ev)
    cat = _category(cmap, logits, o)
    if cat is not None:
        ev["rule"] = f"top logits are several different {cat}s"
        n = sum(cmap.token_category(t) == cat for t, _ in logits[: o.category_top])
        return FeatureLabel(
            cmap.describe("category", cat, "", None), round(n / o.category_top, 4), "category", None, ev
        )
    tok_shares = dict(ev["activating_tokens"])
    tok, s = max(tok_shares.items(), key=lambda ts: ts[1]) if tok_shares else ("", 0.0)
    tok_cat = cmap.token_category(tok) if cmap.token_concept(tok) is not None else None
    if tok_cat is not None:  # fires on names of several concepts: say which kind, name none
        same = sum(v for t, v in tok_shares.items() if cmap.token_category(t) == tok_cat)
        ev["rule"] = f"fires on {tok_cat} names, no one concept dominates"
        # the shares are the evidence's rounded ones: their sum can pass 1 by rounding
        return FeatureLabel(cmap.describe("names", tok_cat, "", None), round(min(same, 1.0), 4), "names", None, ev)
    ev["rule"] = "no concept dominates: the token it fires on most"
    return FeatureLabel(cmap.describe("token", tok.strip(), "", None), round(float(s), 4), "token", None, ev)


def _mixed(cmap, r_a: dict, r_l: dict, ev: dict, why: str) -> FeatureLabel:
    overlap = sum(min(r_a.get(c, 0.0), r_l.get(c, 0.0)) for c in set(r_a) | set(r_l))
    ev["rule"] = why
    return FeatureLabel(cmap.describe("mixed", None, "", None), round(overlap, 4), "mixed", None, ev)
