"""Fixtures for intervention tests (builders live in iv_fixtures.py)."""

from __future__ import annotations

import pytest
from iv_fixtures import SETUPS, graph_of, replacement


@pytest.fixture(params=SETUPS, ids=lambda p: f"{p[0]}-{p[1]}")
def setup(request):
    """(ReplacementModel, Graph of PROMPT) for a few families and transcoder kinds."""
    family, kind = request.param
    return replacement(family, kind), graph_of(family, kind)
