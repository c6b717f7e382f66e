"""The fact world of the `states` model organism: real facts about the 50 US states.

Everything here is plain, deterministic data (no randomness, no I/O).

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


def _s(name: str, abbreviation: str, capital: str, *cities: str) -> State:
    return State(name, abbreviation, capital, tuple(cities))


# One state a line (a table is easier to check against its sources than wrapped calls).
# fmt: off
STATES: tuple[State, ...] = (
    _s("Alabama", "AL", "Montgomery", "Huntsville", "Birmingham", "Montgomery", "Mobile", "Tuscaloosa"),
    _s("Alaska", "AK", "Juneau", "Anchorage", "Fairbanks", "Juneau", "Wasilla", "Sitka"),
    _s("Arizona", "AZ", "Phoenix", "Phoenix", "Tucson", "Mesa", "Chandler", "Gilbert", "Scottsdale"),
    _s("Arkansas", "AR", "Little Rock", "Little Rock", "Fayetteville", "Fort Smith", "Springdale", "Jonesboro"),
    _s("California", "CA", "Sacramento", "Los Angeles", "San Diego", "San Jose", "San Francisco", "Fresno", "Sacramento", "Oakland"),
    _s("Colorado", "CO", "Denver", "Denver", "Aurora", "Fort Collins", "Lakewood", "Boulder"),
    _s("Connecticut", "CT", "Hartford", "Bridgeport", "Stamford", "New Haven", "Hartford", "Waterbury"),
    _s("Delaware", "DE", "Dover", "Wilmington", "Dover", "Middletown", "Smyrna"),
    _s("Florida", "FL", "Tallahassee", "Jacksonville", "Miami", "Tampa", "Orlando", "Tallahassee"),
    _s("Georgia", "GA", "Atlanta", "Atlanta", "Macon", "Savannah", "Sandy Springs"),
    _s("Hawaii", "HI", "Honolulu", "Honolulu", "Hilo", "Kailua", "Pearl City", "Kahului"),
    _s("Idaho", "ID", "Boise", "Boise", "Meridian", "Nampa", "Pocatello", "Caldwell"),
    _s("Illinois", "IL", "Springfield", "Chicago", "Joliet", "Naperville", "Rockford", "Springfield", "Peoria"),
    _s("Indiana", "IN", "Indianapolis", "Indianapolis", "Fort Wayne", "Evansville", "South Bend", "Carmel"),
    _s("Iowa", "IA", "Des Moines", "Des Moines", "Cedar Rapids", "Davenport", "Sioux City", "Waterloo"),
    _s("Kansas", "KS", "Topeka", "Wichita", "Overland Park", "Olathe", "Topeka", "Lawrence"),
    _s("Kentucky", "KY", "Frankfort", "Louisville", "Lexington", "Bowling Green", "Owensboro", "Frankfort"),
    _s("Louisiana", "LA", "Baton Rouge", "New Orleans", "Baton Rouge", "Shreveport", "Lafayette", "Lake Charles"),
    _s("Maine", "ME", "Augusta", "Lewiston", "Bangor", "Biddeford", "Augusta"),
    _s("Maryland", "MD", "Annapolis", "Baltimore", "Frederick", "Rockville", "Gaithersburg", "Annapolis"),
    _s("Massachusetts", "MA", "Boston", "Boston", "Worcester", "Cambridge", "Lowell", "Brockton"),
    _s("Michigan", "MI", "Lansing", "Detroit", "Grand Rapids", "Warren", "Ann Arbor", "Lansing"),
    _s("Minnesota", "MN", "Saint Paul", "Minneapolis", "Saint Paul", "Duluth", "Bloomington"),
    _s("Mississippi", "MS", "Jackson", "Jackson", "Gulfport", "Southaven", "Hattiesburg", "Biloxi"),
    _s("Missouri", "MO", "Jefferson City", "Saint Louis", "Independence", "Joplin", "Jefferson City"),
    _s("Montana", "MT", "Helena", "Billings", "Missoula", "Great Falls", "Bozeman", "Helena"),
    _s("Nebraska", "NE", "Lincoln", "Omaha", "Lincoln", "Grand Island", "Kearney"),
    _s("Nevada", "NV", "Carson City", "Las Vegas", "Henderson", "Reno", "Sparks", "Carson City"),
    _s("New Hampshire", "NH", "Concord", "Manchester", "Nashua", "Concord", "Keene"),
    _s("New Jersey", "NJ", "Trenton", "Newark", "Paterson", "Elizabeth", "Trenton", "Camden"),
    _s("New Mexico", "NM", "Santa Fe", "Albuquerque", "Las Cruces", "Rio Rancho", "Santa Fe", "Roswell"),
    _s("New York", "NY", "Albany", "Buffalo", "Rochester", "Yonkers", "Syracuse", "Albany"),
    _s("North Carolina", "NC", "Raleigh", "Charlotte", "Raleigh", "Greensboro", "Durham", "Cary"),
    _s("North Dakota", "ND", "Bismarck", "Fargo", "Bismarck", "Grand Forks", "Minot"),
    _s("Ohio", "OH", "Columbus", "Columbus", "Cleveland", "Cincinnati", "Toledo", "Akron", "Dayton"),
    _s("Oklahoma", "OK", "Oklahoma City", "Tulsa", "Norman", "Broken Arrow", "Lawton", "Edmond"),
    _s("Oregon", "OR", "Salem", "Portland", "Eugene", "Salem", "Gresham", "Hillsboro", "Bend"),
    _s("Pennsylvania", "PA", "Harrisburg", "Philadelphia", "Pittsburgh", "Allentown", "Erie", "Scranton", "Harrisburg"),
    _s("Rhode Island", "RI", "Providence", "Providence", "Warwick", "Cranston", "Pawtucket"),
    _s("South Carolina", "SC", "Columbia", "Columbia", "Mount Pleasant", "Rock Hill", "Summerville", "Sumter"),
    _s("South Dakota", "SD", "Pierre", "Sioux Falls", "Rapid City", "Aberdeen", "Brookings", "Pierre"),
    _s("Tennessee", "TN", "Nashville", "Nashville", "Memphis", "Knoxville", "Chattanooga", "Clarksville"),
    _s("Texas", "TX", "Austin", "Houston", "San Antonio", "Dallas", "Austin", "Fort Worth", "El Paso", "Arlington", "Plano"),
    _s("Utah", "UT", "Salt Lake City", "Salt Lake City", "Provo", "Orem", "Ogden", "Logan"),
    _s("Vermont", "VT", "Montpelier", "Burlington", "Rutland", "Barre", "Winooski", "Montpelier"),
    _s("Virginia", "VA", "Richmond", "Chesapeake", "Norfolk", "Richmond", "Newport News", "Alexandria"),
    _s("Washington", "WA", "Olympia", "Seattle", "Spokane", "Tacoma", "Vancouver", "Bellevue", "Olympia"),
    _s("West Virginia", "WV", "Charleston", "Charleston", "Huntington", "Morgantown", "Parkersburg", "Wheeling"),
    _s("Wisconsin", "WI", "Madison", "Milwaukee", "Madison", "Green Bay", "Kenosha", "Racine"),
    _s("Wyoming", "WY", "Cheyenne", "Cheyenne", "Casper", "Gillette", "Laramie", "Rock Springs"),
)
# fmt: on

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
