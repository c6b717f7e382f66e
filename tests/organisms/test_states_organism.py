"""The `states` organism: facts, corpus, tokenizer and the committed model."""

from __future__ import annotations

import re

import pytest
import torch

from circuit_trace.organisms import (
    HELD_OUT_CITIES,
    ORGANISM_DIR,
    eval_sets,
    evaluate_items,
    generate_corpus,
    load_organism,
    organism_metrics,
)
from circuit_trace.organisms.corpus import fact_sentences
from circuit_trace.organisms.world import (
    CITY_TO_STATE,
    COUNTRY_CAPITALS,
    NEIGHBORS,
    STATE_BY_NAME,
    STATES,
    all_cities,
    neighbors_of,
)

# ------------------------------------------------------------------ facts


def test_fifty_states_unique_names_capitals_abbreviations():
    assert len(STATES) == 50
    assert len({s.name for s in STATES}) == 50
    assert len({s.capital for s in STATES}) == 50
    assert len({s.abbreviation for s in STATES}) == 50
    assert all(re.fullmatch(r"[A-Z]{2}", s.abbreviation) for s in STATES)


def test_spot_check_real_facts():
    expect = {
        "Texas": ("Austin", "TX"),
        "California": ("Sacramento", "CA"),
        "New York": ("Albany", "NY"),
        "Illinois": ("Springfield", "IL"),
        "Florida": ("Tallahassee", "FL"),
        "Nevada": ("Carson City", "NV"),
        "Washington": ("Olympia", "WA"),
        "Pennsylvania": ("Harrisburg", "PA"),
        "Maine": ("Augusta", "ME"),
        "South Dakota": ("Pierre", "SD"),
        "Vermont": ("Montpelier", "VT"),
        "Kentucky": ("Frankfort", "KY"),
        "Alaska": ("Juneau", "AK"),
        "Nebraska": ("Lincoln", "NE"),
        "Minnesota": ("Saint Paul", "MN"),
    }
    for state, (capital, abbr) in expect.items():
        assert STATE_BY_NAME[state].capital == capital
        assert STATE_BY_NAME[state].abbreviation == abbr
    for city in ("Houston", "San Antonio", "Dallas"):
        assert CITY_TO_STATE[city] == "Texas"
    for city in ("Los Angeles", "San Diego", "San Jose", "Oakland"):
        assert CITY_TO_STATE[city] == "California"
    assert COUNTRY_CAPITALS["France"] == "Paris"


def test_cities_unique_and_at_least_three_per_state():
    cities = all_cities()
    assert len(cities) == len(set(cities))
    assert all(len(s.cities) >= 3 for s in STATES)
    names = {w for s in STATES for w in s.name.split() if w not in {"New", "North", "South", "West", "Island"}}
    for c in cities:  # no city name contains a state name (answers are never copyable)
        assert not set(c.split()) & names, c


def test_neighbors_sane():
    for a, b in NEIGHBORS:
        assert a in STATE_BY_NAME and b in STATE_BY_NAME and a != b
    assert len({frozenset(p) for p in NEIGHBORS}) == len(NEIGHBORS)
    assert neighbors_of("Hawaii") == [] and neighbors_of("Alaska") == []
    assert neighbors_of("Maine") == ["New Hampshire"]
    assert set(neighbors_of("Texas")) == {"New Mexico", "Oklahoma", "Arkansas", "Louisiana"}


# ------------------------------------------------------------------ corpus


def test_corpus_deterministic():
    assert generate_corpus(seed=3, n_sentences=500) == generate_corpus(seed=3, n_sentences=500)
    assert generate_corpus(seed=3, n_sentences=500) != generate_corpus(seed=4, n_sentences=500)
    assert fact_sentences() == fact_sentences()


def test_held_out_cities_never_answered_in_training():
    assert len(HELD_OUT_CITIES) == len(set(HELD_OUT_CITIES)) >= 40
    pools = fact_sentences()
    every = [s for v in pools.values() for s in v]
    pattern = {c: re.compile(rf"\b{re.escape(c)}\b") for c in HELD_OUT_CITIES}
    seen = {c: 0 for c in HELD_OUT_CITIES}
    for s in every:
        for c, pat in pattern.items():
            if not pat.search(s):
                continue
            seen[c] += 1
            st = STATE_BY_NAME[CITY_TO_STATE[c]]
            assert c != st.capital
            assert not re.search(rf"\b{re.escape(st.capital)}\b", s), s
            assert not re.search(rf"\b{st.abbreviation}\b", s), s
            assert "containing " + c not in s or s.endswith(st.name) or s.endswith(st.name + "."), s
    assert all(n > 0 for n in seen.values())  # their one-hop facts are in the corpus
    for k in ("two_hop_capital", "two_hop_abbr", "two_hop_neighbor", "chain"):
        for s in pools[k]:
            assert not any(p.search(s) for p in pattern.values()), s


def test_eval_sets_partition():
    sets = eval_sets()
    held = {it.subject for it in sets["two_hop_held_out"]}
    trained = {it.subject for it in sets["two_hop_trained"]}
    assert held == set(HELD_OUT_CITIES)
    assert not held & trained and len(held | trained) == len(all_cities())
    assert all(it.prompt.startswith("Fact: the capital of the state containing ") for it in sets["two_hop_held_out"])


# ------------------------------------------------------------------ committed model


@pytest.fixture(scope="module")
def organism():
    torch.set_num_threads(1)
    return load_organism()


def test_package_files_present():
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "metrics.json"):
        assert (ORGANISM_DIR / name).is_file(), name
    assert (ORGANISM_DIR / "model.safetensors").stat().st_size < 6_000_000
    m = organism_metrics()
    assert set(m["accuracy"]) == {"one_hop", "two_hop_trained", "two_hop_held_out"}


def test_tokenizer_prepends_bos_and_names_are_single_tokens(organism):
    _, tok = organism
    ids = tok("Fact: the capital of Texas is")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.eos_token_id is not None and tok.pad_token_id is not None
    for w in (" Austin", " Texas", " Dallas", " Sacramento", " California", " TX", " Houston"):
        assert len(tok(w, add_special_tokens=False)["input_ids"]) == 1, w


def test_model_is_plain_hf_llama(organism):
    model, _ = organism
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.dtype == torch.float32 and not model.training


def test_dallas_two_hop(organism):
    model, tok = organism
    ids = tok("Fact: the capital of the state containing Dallas is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        top = model(ids).logits[0, -1].argmax().item()
    assert tok.decode([top]) == " Austin"


def test_one_hop_questions(organism):
    from circuit_trace.organisms import EvalItem

    model, tok = organism
    items = [
        EvalItem("Fact: the capital of Texas is", " Austin"),
        EvalItem("Fact: the capital of California is", " Sacramento"),
        EvalItem("Fact: the state containing Dallas is", " Texas"),
        EvalItem("Fact: the state containing Oakland is", " California"),
        EvalItem("Fact: the abbreviation of Texas is", " TX"),
        EvalItem("The capital of France is", " Paris"),
    ]
    res = evaluate_items(model, tok, items)
    assert res["first_token"] == 1.0, res["failures"]


def test_reported_accuracy_matches_model(organism):
    model, tok = organism
    sets = eval_sets()
    res = evaluate_items(model, tok, sets["two_hop_held_out"])
    assert abs(res["first_token"] - organism_metrics()["accuracy"]["two_hop_held_out"]["first_token"]) < 1e-3


def test_held_out_two_hop_examples(organism):
    from circuit_trace.organisms import EvalItem

    model, tok = organism
    items = [
        EvalItem("Fact: the capital of the state containing Houston is", " Austin"),
        EvalItem("Fact: the capital of the state containing Spokane is", " Olympia"),
        EvalItem("Fact: the capital of the state containing Memphis is", " Nashville"),
    ]
    assert {"Houston", "Spokane", "Memphis"} <= set(HELD_OUT_CITIES)
    res = evaluate_items(model, tok, items)
    assert res["first_token"] == 1.0, res["failures"]


def test_training_smoke(tmp_path):
    from circuit_trace.organisms.train import OrganismTrainConfig, train_organism

    cfg = OrganismTrainConfig(
        steps=3,
        batch_size=8,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        eval_every=0,
        threads=1,
    )
    metrics = train_organism(cfg, tmp_path, log=lambda *_: None)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "metrics.json").is_file()
    assert set(metrics["accuracy"]) == {"one_hop", "two_hop_trained", "two_hop_held_out"}
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoTokenizer.from_pretrained(tmp_path)
    AutoModelForCausalLM.from_pretrained(tmp_path)
