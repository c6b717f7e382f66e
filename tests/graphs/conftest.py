"""Fixtures for graphs/ tests. The toy graph itself lives in graphs_toy.py (importable by name,
unlike conftest, which other test folders may also define)."""

from __future__ import annotations

import pytest
from graphs_toy import make_toy_graph

from circuit_trace.graphs import Graph


@pytest.fixture(params=[False, True], ids=["dense", "sparse"])
def toy_graph(request) -> Graph:
    return make_toy_graph(sparse=request.param)
