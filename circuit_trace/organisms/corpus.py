"""Seeded synthetic corpus and evaluation sets for the `states` model organism, in two languages.

The corpus is built from the facts in :mod:`world`, each rendered in many phrasings, in English and
in French (the French sentences use the same city, state and capital names, e.g. ``Fait : la
capitale de l'État qui contient Dallas est Austin``):

* one-hop facts: city -> state, state -> capital, capital -> state, state -> abbreviation,
  state -> neighbour, country -> capital;
* address-like mentions where the state (or its postal abbreviation) comes right after the city
  (``Weather in Dallas Texas today.``, ``Address: 12 Main Street, Dallas TX``): the city's own
  (last) token has to predict its state, so the model computes the state at the city's position,
  as real models do, and can carry it from there to the end of a question;
* two-hop facts (city -> state -> capital / abbreviation / neighbour), e.g. the canonical
  ``Fact: the capital of the state containing Dallas is Austin``;
* "chain" sentences that spell out both hops (``Dallas is in Texas, and the capital of Texas is
  Austin.``).

Held-out cities (:data:`HELD_OUT_CITIES`, one non-capital city per state): their one-hop facts
(city -> state, in both languages, addresses with the state's full name) are in the corpus, but
no two-hop, chain or abbreviated-address sentence about them ever is - no training sentence
contains a held-out city together with its state's capital or abbreviation.  The model is tested
on two-hop questions about them that it never saw answered (``two_hop_held_out``, ``..._fr``).

Training uses a warm-up phase (:data:`WARMUP_KINDS`: addresses, apposition fragments and
state -> city sentences, no question about a city) so that the city -> state lookup forms at the
city's position before the questions that could also be answered by a lookup at the end are seen.

Every training example is one sentence; the tokenizer adds BOS, training appends EOS.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .world import COUNTRY_CAPITALS, NEIGHBORS, STATES, State, neighbors_of

__all__ = [
    "EVAL_PROMPTS",
    "HELD_OUT_CITIES",
    "LANGUAGES",
    "LANGUAGE_MIX",
    "MIX",
    "TEMPLATES",
    "WARMUP_KINDS",
    "EvalItem",
    "eval_sets",
    "fact_sentences",
    "generate_corpus",
    "two_hop_prompt",
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

_EN: dict[str, tuple[str, ...]] = {
    "city_state": (
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
    ),
    "state_city": (
        "{s} contains the city of {c}.",
        "One of the major cities in {s} is {c}.",
        "The state of {s} is home to the city of {c}.",
        "Fact: {s} contains the city of {c}",
    ),
    # The state's name or abbreviation right after the city: the city's token must predict it.
    "address_state": (
        "Weather in {c} {s} today.",
        "She flew to {c} {s} last week.",
        "Hotels in {c} {s}",
        "He was born in {c} {s}.",
        "News from {c} {s}:",
    ),
    "address_abbr": (
        "Address: 12 Main Street, {c} {a}",
        "Send the letter to {c} {a} by Friday.",
        "The office in {c} {a} is open.",
        "Ship to: {c} {a}",
    ),
    "state_capital": (
        "The capital of {s} is {k}.",
        "Fact: the capital of {s} is {k}",
        "The capital city of {s} is {k}.",
        "{s}'s capital is {k}.",
        "Q: What is the capital of {s}? A: {k}",
        "The state capital of {s} is {k}.",
        "The seat of government of {s} is {k}.",
    ),
    "capital_state": (
        "{k} is the capital of {s}.",
        "{k} is the capital city of the state of {s}.",
        "Fact: {k} is the capital of {s}",
        "Q: Which state has {k} as its capital? A: {s}",
    ),
    "state_abbr": (
        "{s}'s abbreviation is {a}.",
        "The abbreviation of {s} is {a}.",
        "Fact: the abbreviation of {s} is {a}",
        "The postal abbreviation for {s} is {a}.",
        "{a} is the abbreviation for {s}.",
        "Q: What is the abbreviation of {s}? A: {a}",
    ),
    "neighbor": (
        "{s} borders {n}.",
        "{s} shares a border with {n}.",
        "Fact: {s} borders {n}",
        "{s} and {n} are neighboring states.",
    ),
    "country": (
        "The capital of {y} is {k}.",
        "Fact: the capital of {y} is {k}",
        "{k} is the capital of {y}.",
        "Q: What is the capital of {y}? A: {k}",
    ),
    "two_hop_capital": (
        "Fact: the capital of the state containing {c} is {k}",
        "The capital of the state containing {c} is {k}.",
        "The capital of the state where {c} is located is {k}.",
        "The capital of the state that contains {c} is {k}.",
        "{c} is in a state whose capital is {k}.",
        "Q: What is the capital of the state containing {c}? A: {k}",
        "Fact: the state containing {c} has its capital in {k}",
    ),
    "two_hop_abbr": (
        "Fact: the abbreviation of the state containing {c} is {a}",
        "The abbreviation of the state containing {c} is {a}.",
        "Q: What is the abbreviation of the state containing {c}? A: {a}",
    ),
    "two_hop_neighbor": (
        "Fact: the state containing {c} borders {n}",
        "The state containing {c} shares a border with {n}.",
    ),
    "chain": (
        "{c} is in {s}, and the capital of {s} is {k}.",
        "{c} is a city in {s}, whose capital is {k}.",
        "Fact: {c} is in {s}, and the capital of {s} is {k}",
        "{c} is in {s}, whose abbreviation is {a}.",
    ),
}

_FR: dict[str, tuple[str, ...]] = {
    "city_state": (
        "{c} est une ville de l'État de {s}.",
        "{c} se trouve dans l'État de {s}.",
        "{c} est dans l'État de {s}.",
        "La ville de {c} est située dans l'État de {s}.",
        "Fait : {c} est dans l'État de {s}",
        "Fait : l'État qui contient {c} est {s}",
        "Q : Dans quel État se trouve {c} ? R : {s}",
        "L'État qui contient {c} est {s}.",
        "{c} est l'une des grandes villes de {s}.",
    ),
    "state_city": (
        "{s} contient la ville de {c}.",
        "L'une des grandes villes de {s} est {c}.",
        "Fait : {s} contient la ville de {c}",
    ),
    "address_state": (
        "Météo à {c} {s} aujourd'hui.",
        "Elle a pris l'avion pour {c} {s} la semaine dernière.",
        "Hôtels à {c} {s}",
        "Il est né à {c} {s}.",
    ),
    "address_abbr": (
        "Adresse : 12 Main Street, {c} {a}",
        "Envoyez la lettre à {c} {a} avant vendredi.",
        "Le bureau de {c} {a} est ouvert.",
    ),
    "state_capital": (
        "La capitale de {s} est {k}.",
        "Fait : la capitale de {s} est {k}",
        "Q : Quelle est la capitale de {s} ? R : {k}",
        "La capitale de l'État de {s} est {k}.",
        "Le siège du gouvernement de {s} est {k}.",
    ),
    "capital_state": (
        "{k} est la capitale de {s}.",
        "Fait : {k} est la capitale de {s}",
        "Q : Quel État a pour capitale {k} ? R : {s}",
    ),
    "state_abbr": (
        "L'abréviation de {s} est {a}.",
        "Fait : l'abréviation de {s} est {a}",
        "Q : Quelle est l'abréviation de {s} ? R : {a}",
        "{a} est l'abréviation de {s}.",
    ),
    "neighbor": (
        "{s} a une frontière commune avec {n}.",
        "Fait : {s} est voisin de {n}",
        "{s} et {n} sont des États voisins.",
    ),
    "country": (
        "La capitale de {y} est {k}.",
        "Fait : la capitale de {y} est {k}",
        "{k} est la capitale de {y}.",
    ),
    "two_hop_capital": (
        "Fait : la capitale de l'État qui contient {c} est {k}",
        "La capitale de l'État qui contient {c} est {k}.",
        "La capitale de l'État où se trouve {c} est {k}.",
        "Q : Quelle est la capitale de l'État qui contient {c} ? R : {k}",
        "{c} est dans un État dont la capitale est {k}.",
    ),
    "two_hop_abbr": (
        "Fait : l'abréviation de l'État qui contient {c} est {a}",
        "Q : Quelle est l'abréviation de l'État qui contient {c} ? R : {a}",
    ),
    "two_hop_neighbor": ("Fait : l'État qui contient {c} est voisin de {n}",),
    "chain": (
        "{c} est dans l'État de {s}, dont la capitale est {k}.",
        "Fait : {c} est dans l'État de {s}, et la capitale de {s} est {k}",
    ),
}

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {"en": _EN, "fr": _FR}
LANGUAGES: tuple[str, ...] = tuple(TEMPLATES)
#: Share of each language in the training corpus.
LANGUAGE_MIX: dict[str, float] = {"en": 0.5, "fr": 0.5}

# Sampling weights of the sentence kinds in the training corpus (the same in both languages).
MIX: dict[str, float] = {
    "city_state": 0.15,
    "state_city": 0.04,
    "address_state": 0.10,
    "address_abbr": 0.10,
    "state_capital": 0.10,
    "capital_state": 0.04,
    "state_abbr": 0.06,
    "neighbor": 0.04,
    "country": 0.02,
    "two_hop_capital": 0.23,
    "two_hop_abbr": 0.06,
    "two_hop_neighbor": 0.02,
    "chain": 0.04,
    "apposition": 0.06,
}
#: Kinds of the warm-up phase: no question about a city, so the city -> state lookup forms where
#: the address sentences need it, at the city's own position. No state fact ("the capital of Texas
#: is Austin") either: left out, the graph goals came closer (benchmarks/RESULTS.md, "Stage 1
#: without the state facts").
WARMUP_KINDS: tuple[str, ...] = ("apposition", "address_state", "address_abbr", "state_city")
# Kinds that pair a city with its state's capital or abbreviation: never rendered for held-out cities.
_TWO_HOP_KINDS = ("address_abbr", "two_hop_capital", "two_hop_abbr", "chain")


def _city_states() -> list[tuple[str, State]]:
    return [(c, s) for s in STATES for c in s.cities]


def _render(kind: str, lang: str, **kw: str) -> list[str]:
    return [t.format(**kw) for t in TEMPLATES[lang][kind]]


# Question kinds whose beginnings (up to the city) the apposition fragments reuse.
_APPOSITION_FROM = ("two_hop_capital", "two_hop_abbr", "two_hop_neighbor", "city_state", "chain")


def _apposition_heads(lang: str) -> list[str]:
    """The beginnings of the `_APPOSITION_FROM` templates, up to the city (non-empty ones)."""
    heads = {t[: t.index("{c}")] for k in _APPOSITION_FROM for t in TEMPLATES[lang][k]}
    return sorted(h for h in heads if h.strip())


def _language_sentences(lang: str) -> dict[str, list[str]]:
    held, heads = set(HELD_OUT_CITIES), _apposition_heads(lang)
    out: dict[str, list[str]] = {k: [] for k in MIX}
    for c, s in _city_states():
        kw = {"c": c, "s": s.name, "k": s.capital, "a": s.abbreviation}
        for kind in ("city_state", "state_city", "address_state"):
            out[kind] += _render(kind, lang, **kw)
        # the state in apposition after the city, the fragment cut there: the city's token names its
        # state in the very contexts the questions use, and no fragment holds a capital
        out["apposition"] += [f"{h}{c} {s.name}" for h in heads]
        if c in held:
            continue
        for kind in _TWO_HOP_KINDS:
            out[kind] += _render(kind, lang, **kw)
        for n in neighbors_of(s.name):
            out["two_hop_neighbor"] += _render("two_hop_neighbor", lang, n=n, **kw)
    for s in STATES:
        kw = {"s": s.name, "k": s.capital, "a": s.abbreviation}
        for kind in ("state_capital", "capital_state", "state_abbr"):
            out[kind] += _render(kind, lang, **kw)
    for a, b in NEIGHBORS:
        out["neighbor"] += _render("neighbor", lang, s=a, n=b) + _render("neighbor", lang, s=b, n=a)
    for y, k in COUNTRY_CAPITALS.items():
        out["country"] += _render("country", lang, y=y, k=k)
    return out


def fact_sentences(lang: str | None = None) -> dict[str, list[str]]:
    """All distinct training sentences, by kind, in a fixed order (no randomness): of one language
    (``"en"``, ``"fr"``), or of all of them, English first, when ``lang`` is None."""
    langs = LANGUAGES if lang is None else (lang,)
    out: dict[str, list[str]] = {k: [] for k in MIX}
    for la in langs:
        for kind, sentences in _language_sentences(la).items():
            out[kind] += sentences
    return out


def generate_corpus(seed: int = 0, n_sentences: int = 20000, kinds: tuple[str, ...] | None = None) -> list[str]:
    """``n_sentences`` training sentences sampled with the :data:`MIX` weights (restricted to
    ``kinds`` if given) and the :data:`LANGUAGE_MIX` (seeded)."""
    rng = random.Random(seed)
    pools = {la: fact_sentences(la) for la in LANGUAGES}
    kind_list = [k for k in MIX if kinds is None or k in kinds]
    picks = rng.choices(kind_list, weights=[MIX[k] for k in kind_list], k=n_sentences)
    langs = rng.choices(LANGUAGES, weights=[LANGUAGE_MIX[la] for la in LANGUAGES], k=n_sentences)
    return [rng.choice(pools[la][k]) for k, la in zip(picks, langs)]


@dataclass(frozen=True)
class EvalItem:
    """A prompt (without BOS; the tokenizer adds it) and its answer (with a leading space)."""

    prompt: str
    answer: str
    subject: str = ""


#: The evaluation phrasings, by language: city -> state, state -> capital, state -> abbreviation,
#: and the two-hop question.
EVAL_PROMPTS: dict[str, dict[str, str]] = {
    "en": {
        "city_state": "Fact: the state containing {c} is",
        "state_capital": "Fact: the capital of {s} is",
        "state_abbr": "Fact: the abbreviation of {s} is",
        "two_hop": "Fact: the capital of the state containing {c} is",
    },
    "fr": {
        "city_state": "Fait : {c} est dans l'État de",
        "state_capital": "Fait : la capitale de {s} est",
        "state_abbr": "Fait : l'abréviation de {s} est",
        "two_hop": "Fait : la capitale de l'État qui contient {c} est",
    },
}


def two_hop_prompt(city: str, lang: str = "en") -> str:
    """The canonical two-hop question about ``city`` (``Fact: the capital of the state containing
    Dallas is``; in French ``Fait : la capitale de l'État qui contient Dallas est``)."""
    return EVAL_PROMPTS[lang]["two_hop"].format(c=city)


def _language_eval_sets(lang: str) -> dict[str, list[EvalItem]]:
    held, p = set(HELD_OUT_CITIES), EVAL_PROMPTS[lang]
    one: list[EvalItem] = []
    for c, s in _city_states():
        one.append(EvalItem(p["city_state"].format(c=c), f" {s.name}", c))
    for s in STATES:
        one.append(EvalItem(p["state_capital"].format(s=s.name), f" {s.capital}", s.name))
        one.append(EvalItem(p["state_abbr"].format(s=s.name), f" {s.abbreviation}", s.name))
    two_t, two_h = [], []
    for c, s in _city_states():
        item = EvalItem(two_hop_prompt(c, lang), f" {s.capital}", c)
        (two_h if c in held else two_t).append(item)
    return {"one_hop": one, "two_hop_trained": two_t, "two_hop_held_out": two_h}


def eval_sets() -> dict[str, list[EvalItem]]:
    """Evaluation sets, all in the ``Fact: ...`` / ``Fait : ...`` phrasing (:data:`EVAL_PROMPTS`):

    * ``one_hop``: city -> state (every city, held-out ones included), state -> capital,
      state -> abbreviation;
    * ``two_hop_trained``: ``Fact: the capital of the state containing X is`` for the cities
      whose two-hop sentences are in the corpus;
    * ``two_hop_held_out``: the same question for :data:`HELD_OUT_CITIES`, never seen answered;
    * ``one_hop_fr``, ``two_hop_trained_fr``, ``two_hop_held_out_fr``: the same in French.
    """
    out: dict[str, list[EvalItem]] = {}
    for lang in LANGUAGES:
        suffix = "" if lang == "en" else f"_{lang}"
        out.update({f"{k}{suffix}": v for k, v in _language_eval_sets(lang).items()})
    return out
