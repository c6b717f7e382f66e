"""The fact world of the `states` model organism: real facts about the 50 US states.

Everything here is plain, deterministic data (no randomness); the states' table is read from
`states.tsv` beside this file.

Conventions (so that every fact has exactly one answer):

* Every city name belongs to exactly one state in this world.  Where several states have a
  city of the same name, the name is given to the state where that city is the capital or
  clearly the larger one (``Portland`` -> Oregon, ``Springfield`` -> Illinois, ``Columbus`` ->
  Ohio, ``Charleston`` -> West Virginia, ``Aurora`` -> Colorado, ...) and the other state
  lists its next-largest cities instead.
* Cities whose name contains a state name (``New York`` City, ``Kansas City``,
  ``Colorado Springs``, ``Virginia Beach``, ``Jersey City``, ``Iowa City``, ``Idaho Falls``,
  ``Oklahoma City`` as a city) are left out of the city lists, so that "the state containing
  X" is never answerable by copying.  ``Oklahoma City`` remains the capital of Oklahoma.
* City lists hold real, large cities of the state (mostly the largest by 2020 census
  population, in rough order), at least three per state; capitals that are also large cities
  are listed too.  They make no "largest city" claim.
* Neighbours are states sharing a land border (Four Corners point contacts and water-only
  contacts are not counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "State",
    "STATES",
    "STATE_BY_NAME",
    "CITY_TO_STATE",
    "NEIGHBORS",
    "COUNTRY_CAPITALS",
    "all_cities",
    "neighbors_of",
]


@dataclass(frozen=True)
class State:
    name: str
    abbreviation: str
    capital: str
    cities: tuple[str, ...]


def _read_states(path: Path) -> tuple[State, ...]:
    """`states.tsv`: one state a line (name, abbreviation, capital, its cities separated by ", "),
    a table that is easier to check against its sources than code."""
    rows = (line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#"))
    return tuple(State(name, abbr, capital, tuple(cities.split(", "))) for name, abbr, capital, cities in rows)


STATES: tuple[State, ...] = _read_states(Path(__file__).with_name("states.tsv"))

STATE_BY_NAME: dict[str, State] = {s.name: s for s in STATES}
_BY_ABBR: dict[str, State] = {s.abbreviation: s for s in STATES}

CITY_TO_STATE: dict[str, str] = {c: s.name for s in STATES for c in s.cities}

# Land borders between states, by postal abbreviation (each pair once).
_BORDERS = {
    "AL": "FL GA MS TN",
    "AZ": "CA NV NM UT",
    "AR": "LA MO MS OK TN TX",
    "CA": "NV OR",
    "CO": "KS NE NM OK UT WY",
    "CT": "MA NY RI",
    "DE": "MD NJ PA",
    "FL": "GA",
    "GA": "NC SC TN",
    "ID": "MT NV OR UT WA WY",
    "IL": "IN IA KY MO WI",
    "IN": "KY MI OH",
    "IA": "MN MO NE SD WI",
    "KS": "MO NE OK",
    "KY": "MO OH TN VA WV",
    "LA": "MS TX",
    "ME": "NH",
    "MD": "PA VA WV",
    "MA": "NH NY RI VT",
    "MI": "OH WI",
    "MN": "ND SD WI",
    "MS": "TN",
    "MO": "NE OK TN",
    "MT": "ND SD WY",
    "NE": "SD WY",
    "NV": "OR UT",
    "NH": "VT",
    "NJ": "NY PA",
    "NM": "OK TX",
    "NY": "PA VT",
    "NC": "SC TN VA",
    "ND": "SD",
    "OH": "PA WV",
    "OK": "TX",
    "OR": "WA",
    "PA": "WV",
    "SD": "WY",
    "TN": "VA",
    "UT": "WY",
    "VA": "WV",
}

NEIGHBORS: tuple[tuple[str, str], ...] = tuple(
    (_BY_ABBR[a].name, _BY_ABBR[b].name) for a, bs in _BORDERS.items() for b in bs.split()
)

# Country capitals.  Countries whose names clash with this world are left out: the United
# States (capital Washington, a state here), Georgia (a state here), Mexico (New Mexico).
COUNTRY_CAPITALS: dict[str, str] = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Portugal": "Lisbon",
    "Japan": "Tokyo",
    "China": "Beijing",
    "Canada": "Ottawa",
    "Russia": "Moscow",
    "Egypt": "Cairo",
    "India": "New Delhi",
    "Brazil": "Brasilia",
    "Australia": "Canberra",
    "Greece": "Athens",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Poland": "Warsaw",
    "Turkey": "Ankara",
    "Argentina": "Buenos Aires",
    "Ireland": "Dublin",
    "Austria": "Vienna",
    "Netherlands": "Amsterdam",
    "Thailand": "Bangkok",
    "Vietnam": "Hanoi",
    "Nigeria": "Abuja",
    "Cuba": "Havana",
    "England": "London",
    "South Korea": "Seoul",
}


def all_cities() -> list[str]:
    """Every city of the world, in state order then list order."""
    return [c for s in STATES for c in s.cities]


def neighbors_of(state: str) -> list[str]:
    """Names of the states bordering ``state`` (sorted)."""
    out = {b for a, b in NEIGHBORS if a == state} | {a for a, b in NEIGHBORS if b == state}
    return sorted(out)
