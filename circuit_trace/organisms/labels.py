"""What the organism's world knows about words, for feature labels: which US state a name (state,
city, capital, postal abbreviation) stands for, and which state a piece of text is about.

`StateConcepts` is the `dashboards.labels.ConceptMap` of the organism: a context's concept is the
state named last in the text up to the token the feature fires on ("…containing Dallas is" → Texas),
a logit token's concept is the state it names (" Austin", " TX", " Texas" → Texas), and the two are
comparable, so a feature whose contexts are about one state while its logits promote another is
labelled "mixed" instead of being given either state's name. The labels are made by
`circuit_trace.dashboards` (`python -m circuit_trace.organisms.build_dashboards`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .world import CITY_TO_STATE, STATE_BY_NAME, STATES

__all__ = [
    "ABBREVIATIONS",
    "CAPITALS",
    "STATE_NAMES",
    "StateConcepts",
    "names_state",
    "state_of",
    "states_in",
    "text_state",
]

CAPITALS = {s.capital: s.name for s in STATES}
ABBREVIATIONS = {s.abbreviation: s.name for s in STATES}
STATE_NAMES: tuple[str, ...] = tuple(sorted(STATE_BY_NAME))


def _all_names() -> dict[str, str]:
    names = {c: s for c, s in CITY_TO_STATE.items()}
    names.update(CAPITALS)
    names.update(ABBREVIATIONS)
    names.update({s: s for s in STATE_BY_NAME})
    return names


_NAMES = _all_names()
# First word of a multi-word name that only one state's names start with (" Salt" -> Utah): what a
# single logit token of such a name can stand for.
_first: dict[str, set] = {}
for _name, _state in _NAMES.items():
    if " " in _name:
        _first.setdefault(_name.split()[0], set()).add(_state)
_FIRST_WORD = {w: next(iter(s)) for w, s in _first.items() if len(s) == 1 and w not in _NAMES}
_CAPITAL_FIRST = {w for w in _FIRST_WORD if any(c.startswith(w + " ") for c in CAPITALS)}
_PATTERN = re.compile(r"\b(" + "|".join(re.escape(n) for n in sorted(_NAMES, key=len, reverse=True)) + r")\b")


def state_of(word: str) -> str | None:
    """The state a single word or full name (no surrounding spaces) stands for, if any."""
    return _NAMES.get(word)


def states_in(text: str) -> list[str]:
    """The states named in `text` (by state, city, capital or abbreviation), in order of mention."""
    return [_NAMES[m.group(1)] for m in _PATTERN.finditer(text)]


def text_state(text: str) -> str | None:
    """The state `text` is about: the one named last (None if none is named)."""
    found = states_in(text)
    return found[-1] if found else None


def names_state(label: object, state: str) -> bool:
    """Whether a feature label names `state` itself, by its name or postal abbreviation ("Texas",
    "say TX"; not "say Austin", which names a capital, nor a "mixed" label)."""
    if not isinstance(label, str) or label.startswith("mixed"):
        return False
    if re.search(rf"\b{re.escape(state)}\b", label):
        return True
    return any(ABBREVIATIONS.get(w) == state for w in re.findall(r"\b[A-Z]{2}\b", label))


class StateConcepts:
    """The organism's `ConceptMap`: concepts are the 50 states (see the module docstring)."""

    concepts = STATE_NAMES
    comparable = True

    def context_concept(self, tokens: Sequence[str], pos: int) -> str | None:
        return text_state("".join(t for t in tokens[: pos + 1] if not t.startswith("<|")))

    def context_concepts(self, tokens: Sequence[str]) -> list[str | None]:
        """The concept at every position of one context (one regex pass over its text)."""
        text, ends = "", []
        for t in tokens:
            text += "" if t.startswith("<|") else t
            ends.append(len(text))
        matches = [(m.end(), _NAMES[m.group(1)]) for m in _PATTERN.finditer(text)]
        out, k, cur = [], 0, None
        for end in ends:
            while k < len(matches) and matches[k][0] <= end:
                cur = matches[k][1]
                k += 1
            out.append(cur)
        return out

    def token_concept(self, token: str) -> str | None:
        w = token.strip()
        return _NAMES.get(w) or _FIRST_WORD.get(w)

    def token_category(self, token: str) -> str | None:
        w = token.strip()
        if w in CAPITALS or w in _CAPITAL_FIRST:
            return "capital"
        if w in STATE_BY_NAME:
            return "state"
        if w in ABBREVIATIONS:
            return "abbreviation"
        return "city" if w in CITY_TO_STATE else None

    def describe(self, kind: str, concept: str | None, top_token: str, other: str | None) -> str:
        tok = top_token.strip()
        # "<State>" when only where it fires names the state, "say <name>" when what it writes names
        # it (the name's state is the label's: `state_of(name)`); the evidence says which agreed.
        if kind == "contexts":
            return concept or ""
        if kind in ("agree", "logits"):
            return f"say {tok}" if state_of(tok) == concept else f"say {concept}"
        if kind == "mixed":
            return "mixed: contexts and logits disagree"
        if kind == "category":
            return f"say {'an' if str(concept)[:1] in 'aeiou' else 'a'} {concept}"
        if kind == "names":
            return f"{concept} names"
        return f"\u201c{concept}\u201d" if concept else ""
