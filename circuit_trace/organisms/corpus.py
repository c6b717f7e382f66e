"""Seeded synthetic corpus and evaluation sets for the `states` model organism.

The corpus is built from the facts in :mod:`world`, each rendered in many phrasings:

* one-hop facts: city -> state, state -> capital, capital -> state, state -> abbreviation,
  state -> neighbour, country -> capital;
* two-hop facts (city -> state -> capital / abbreviation / neighbour), e.g. the canonical
  ``Fact: the capital of the state containing Dallas is Austin``;
* "chain" sentences that spell out both hops (``Dallas is in Texas, and the capital of Texas is
  Austin.``).

Held-out cities (:data:`HELD_OUT_CITIES`, one non-capital city per state): their one-hop facts
are in the corpus, but no two-hop or chain sentence about them ever is - no training sentence
contains a held-out city together with its state's capital or abbreviation.  The model is
tested on two-hop questions about them that it never saw answered (``two_hop_held_out``).

Every training example is one sentence; the tokenizer adds BOS, training appends EOS.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .world import COUNTRY_CAPITALS, NEIGHBORS, STATES, State, neighbors_of

__all__ = [
    "HELD_OUT_CITIES",
    "EvalItem",
    "fact_sentences",
    "generate_corpus",
    "eval_sets",
    "MIX",
]

# One non-capital city per state; never in a two-hop or chain training sentence.
HELD_OUT_CITIES: tuple[str, ...] = (
    "Mobile",
    "Fairbanks",
    "Tucson",
    "Springdale",
    "Oakland",
    "Boulder",
    "Stamford",
    "Middletown",
    "Tampa",
    "Savannah",
    "Hilo",
    "Nampa",
    "Naperville",
    "Evansville",
    "Davenport",
    "Wichita",
    "Lexington",
    "Shreveport",
    "Bangor",
    "Frederick",
    "Worcester",
    "Ann Arbor",
    "Duluth",
    "Gulfport",
    "Joplin",
    "Missoula",
    "Kearney",
    "Reno",
    "Nashua",
    "Paterson",
    "Las Cruces",
    "Syracuse",
    "Durham",
    "Fargo",
    "Toledo",
    "Tulsa",
    "Eugene",
    "Pittsburgh",
    "Warwick",
    "Rock Hill",
    "Rapid City",
    "Memphis",
    "Houston",
    "Provo",
    "Rutland",
    "Norfolk",
    "Spokane",
    "Morgantown",
    "Green Bay",
    "Casper",
)

# ---------------------------------------------------------------- templates
# {c} city, {s} state, {k} capital, {a} abbreviation, {n} neighbour, {y} country

CITY_STATE = (
    "{c} is a city in the state of {s}.",
    "{c} is a city in {s}.",
    "{c} is located in {s}.",
    "{c} is in {s}.",
    "The city of {c} is in {s}.",
    "The city of {c} is located in the state of {s}.",
    "Fact: {c} is in the state of {s}",
    "Fact: the state containing {c} is {s}",
    "Fact: {c} is a city in {s}",
    "Q: Which state is {c} in? A: {s}",
    "Q: In which state is the city of {c}? A: {s}",
    "{c}, {s} is a large city.",
    "The state that contains {c} is {s}.",
    "The state containing {c} is {s}.",
    "{c} is one of the major cities of {s}.",
)
STATE_CITY = (
    "{s} contains the city of {c}.",
    "One of the major cities in {s} is {c}.",
    "The state of {s} is home to the city of {c}.",
    "Fact: {s} contains the city of {c}",
)
STATE_CAPITAL = (
    "The capital of {s} is {k}.",
    "Fact: the capital of {s} is {k}",
    "The capital city of {s} is {k}.",
    "{s}'s capital is {k}.",
    "Q: What is the capital of {s}? A: {k}",
    "The state capital of {s} is {k}.",
    "The seat of government of {s} is {k}.",
)
CAPITAL_STATE = (
    "{k} is the capital of {s}.",
    "{k} is the capital city of the state of {s}.",
    "Fact: {k} is the capital of {s}",
    "Q: Which state has {k} as its capital? A: {s}",
)
STATE_ABBR = (
    "{s}'s abbreviation is {a}.",
    "The abbreviation of {s} is {a}.",
    "Fact: the abbreviation of {s} is {a}",
    "The postal abbreviation for {s} is {a}.",
    "{a} is the abbreviation for {s}.",
    "Q: What is the abbreviation of {s}? A: {a}",
)
NEIGHBOR = (
    "{s} borders {n}.",
    "{s} shares a border with {n}.",
    "Fact: {s} borders {n}",
    "{s} and {n} are neighboring states.",
)
COUNTRY = (
    "The capital of {y} is {k}.",
    "Fact: the capital of {y} is {k}",
    "{k} is the capital of {y}.",
    "Q: What is the capital of {y}? A: {k}",
)
TWO_HOP_CAPITAL = (
    "Fact: the capital of the state containing {c} is {k}",
    "The capital of the state containing {c} is {k}.",
    "The capital of the state where {c} is located is {k}.",
    "The capital of the state that contains {c} is {k}.",
    "{c} is in a state whose capital is {k}.",
    "Q: What is the capital of the state containing {c}? A: {k}",
    "Fact: the state containing {c} has its capital in {k}",
)
TWO_HOP_ABBR = (
    "Fact: the abbreviation of the state containing {c} is {a}",
    "The abbreviation of the state containing {c} is {a}.",
    "Q: What is the abbreviation of the state containing {c}? A: {a}",
)
TWO_HOP_NEIGHBOR = (
    "Fact: the state containing {c} borders {n}",
    "The state containing {c} shares a border with {n}.",
)
CHAIN = (
    "{c} is in {s}, and the capital of {s} is {k}.",
    "{c} is a city in {s}, whose capital is {k}.",
    "Fact: {c} is in {s}, and the capital of {s} is {k}",
    "{c} is in {s}, whose abbreviation is {a}.",
)

# Sampling weights of the sentence kinds in the training corpus.
MIX: dict[str, float] = {
    "city_state": 0.26,
    "state_city": 0.06,
    "state_capital": 0.10,
    "capital_state": 0.04,
    "state_abbr": 0.07,
    "neighbor": 0.05,
    "country": 0.03,
    "two_hop_capital": 0.25,
    "two_hop_abbr": 0.07,
    "two_hop_neighbor": 0.03,
    "chain": 0.04,
}


def _city_states() -> list[tuple[str, State]]:
    return [(c, s) for s in STATES for c in s.cities]


def fact_sentences() -> dict[str, list[str]]:
    """All distinct training sentences, by kind, in a fixed order (no randomness)."""
    held = set(HELD_OUT_CITIES)
    out: dict[str, list[str]] = {k: [] for k in MIX}
    for c, s in _city_states():
        kw = dict(c=c, s=s.name, k=s.capital, a=s.abbreviation)
        out["city_state"] += [t.format(**kw) for t in CITY_STATE]
        out["state_city"] += [t.format(**kw) for t in STATE_CITY]
        if c in held:
            continue
        out["two_hop_capital"] += [t.format(**kw) for t in TWO_HOP_CAPITAL]
        out["two_hop_abbr"] += [t.format(**kw) for t in TWO_HOP_ABBR]
        out["chain"] += [t.format(**kw) for t in CHAIN]
        for n in neighbors_of(s.name):
            out["two_hop_neighbor"] += [t.format(n=n, **kw) for t in TWO_HOP_NEIGHBOR]
    for s in STATES:
        kw = dict(s=s.name, k=s.capital, a=s.abbreviation)
        out["state_capital"] += [t.format(**kw) for t in STATE_CAPITAL]
        out["capital_state"] += [t.format(**kw) for t in CAPITAL_STATE]
        out["state_abbr"] += [t.format(**kw) for t in STATE_ABBR]
    for a, b in NEIGHBORS:
        out["neighbor"] += [t.format(s=a, n=b) for t in NEIGHBOR]
        out["neighbor"] += [t.format(s=b, n=a) for t in NEIGHBOR]
    for y, k in COUNTRY_CAPITALS.items():
        out["country"] += [t.format(y=y, k=k) for t in COUNTRY]
    return out


def generate_corpus(seed: int = 0, n_sentences: int = 20000) -> list[str]:
    """``n_sentences`` training sentences sampled with the :data:`MIX` weights (seeded)."""
    rng = random.Random(seed)
    pools = fact_sentences()
    kinds = list(MIX)
    weights = [MIX[k] for k in kinds]
    picks = rng.choices(kinds, weights=weights, k=n_sentences)
    return [rng.choice(pools[k]) for k in picks]


@dataclass(frozen=True)
class EvalItem:
    """A prompt (without BOS; the tokenizer adds it) and its answer (with a leading space)."""

    prompt: str
    answer: str
    subject: str = ""


def eval_sets() -> dict[str, list[EvalItem]]:
    """Evaluation sets, all in the ``Fact: ...`` phrasing:

    * ``one_hop``: city -> state (every city, held-out ones included), state -> capital,
      state -> abbreviation;
    * ``two_hop_trained``: ``Fact: the capital of the state containing X is`` for the cities
      whose two-hop sentences are in the corpus;
    * ``two_hop_held_out``: the same question for :data:`HELD_OUT_CITIES`, never seen answered.
    """
    held = set(HELD_OUT_CITIES)
    one: list[EvalItem] = []
    for c, s in _city_states():
        one.append(EvalItem(f"Fact: the state containing {c} is", f" {s.name}", c))
    for s in STATES:
        one.append(EvalItem(f"Fact: the capital of {s.name} is", f" {s.capital}", s.name))
        one.append(EvalItem(f"Fact: the abbreviation of {s.name} is", f" {s.abbreviation}", s.name))
    two_t, two_h = [], []
    for c, s in _city_states():
        item = EvalItem(f"Fact: the capital of the state containing {c} is", f" {s.capital}", c)
        (two_h if c in held else two_t).append(item)
    return {"one_hop": one, "two_hop_trained": two_t, "two_hop_held_out": two_h}
