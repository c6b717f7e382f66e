"""Fixtures for the training tests (factories in training_fixtures.py)."""

import pytest
import torch
from training_fixtures import make_corpus, make_model, make_tokenizer


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny():
    tok = make_tokenizer()
    return make_model(len(tok)), tok, make_corpus()
