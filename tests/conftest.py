"""Test-wide setup: one CPU thread, tests/ on sys.path (for `helpers`), and fixtures over the shared factories in tests/helpers.py."""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)

import helpers  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` (real models, long training) run only with RUN_SLOW=1."""
    if os.environ.get("RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set RUN_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tok():
    return helpers.tokenizer()


@pytest.fixture(params=helpers.FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture
def make_replacement():
    """Factory: make_replacement(family, kind="clt"|"plt", activation=..., skip=..., input_hook=...,
    output_hook=..., seed=...) -> a fresh ReplacementModel."""
    return helpers.make_replacement


@pytest.fixture
def make_hf_model():
    return helpers.make_hf_model
