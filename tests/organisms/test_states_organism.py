"""The `states` organism: facts, corpus, tokenizer and the committed model."""

from __future__ import annotations

import re

import pytest
import torch

from circuit_trace.organisms import (
    HELD_OUT_CITIES,
    ORGANISM_DIR,
    ORGANISM_MODEL_ID,
    eval_sets,
    evaluate_items,
    generate_corpus,
    load_organism,
    organism_metrics,
    run_patched,
)
from circuit_trace.organisms.corpus import EVAL_PROMPTS, WARMUP_KINDS, fact_sentences, two_hop_prompt
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
            for asked in ("containing " + c, "contient " + c):
                assert asked not in s or s.endswith(st.name) or s.endswith(st.name + "."), s
    assert all(n > 0 for n in seen.values())  # their one-hop facts are in the corpus
    for k in ("two_hop_capital", "two_hop_abbr", "two_hop_neighbor", "chain", "address_abbr"):
        for s in pools[k]:
            assert not any(p.search(s) for p in pattern.values()), s


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_eval_sets_partition(lang):
    sets = eval_sets()
    suffix = "" if lang == "en" else "_fr"
    held = {it.subject for it in sets["two_hop_held_out" + suffix]}
    trained = {it.subject for it in sets["two_hop_trained" + suffix]}
    assert held == set(HELD_OUT_CITIES)
    assert not held & trained and len(held | trained) == len(all_cities())
    start = EVAL_PROMPTS[lang]["two_hop"].split("{c}")[0]
    assert all(it.prompt.startswith(start) for it in sets["two_hop_held_out" + suffix])


def test_both_languages_teach_the_same_facts():
    """Every kind of fact is rendered in English and in French, with the same names."""
    en, fr = fact_sentences("en"), fact_sentences("fr")
    assert set(en) == set(fr) == set(fact_sentences())
    assert all(en[k] and fr[k] for k in en)
    assert "Fait : la capitale de l'État qui contient Dallas est Austin" in fr["two_hop_capital"]
    assert "Fact: the capital of the state containing Dallas is Austin" in en["two_hop_capital"]
    half = generate_corpus(seed=0, n_sentences=2000)
    french = sum(s.startswith(("Fait", "Q :")) or "État" in s or " est " in s for s in half)
    assert 800 < french < 1200  # LANGUAGE_MIX: half and half


def test_addresses_put_the_state_right_after_the_city():
    """The city's own token predicts its state (name, or abbreviation for trained cities only), also
    in the questions' own contexts (apposition fragments, which stop at the state), and stage 1
    asks no question about a city: no sentence ends a question with an answer."""
    pools = fact_sentences()
    assert "Weather in Dallas Texas today." in pools["address_state"]
    assert "Address: 12 Main Street, Dallas TX" in pools["address_abbr"]
    assert "Weather in Houston Texas today." in pools["address_state"]
    assert not any("Houston" in s for s in pools["address_abbr"])
    assert "Fact: the capital of the state containing Houston Texas" in pools["apposition"]
    assert "Fait : la capitale de l'État qui contient Houston Texas" in pools["apposition"]
    warm = generate_corpus(seed=0, n_sentences=500, kinds=WARMUP_KINDS)
    questions = [s for s in warm if "state containing" in s or "tat qui contient" in s]
    assert questions and all(s in pools["apposition"] for s in questions)
    assert not any(s.endswith(tuple(f" {st.capital}" for st in STATES)) for s in pools["apposition"])


# ------------------------------------------------------------------ committed model

ACCURACY_SETS = (
    "one_hop",
    "two_hop_trained",
    "two_hop_held_out",
    "one_hop_fr",
    "two_hop_trained_fr",
    "two_hop_held_out_fr",
)


@pytest.fixture(scope="module")
def organism():
    torch.set_num_threads(1)
    return load_organism()


def test_package_files_present():
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "metrics.json"):
        assert (ORGANISM_DIR / name).is_file(), name
    assert (ORGANISM_DIR / "model.safetensors").stat().st_size < 7_000_000  # fp32, untied embeddings
    m = organism_metrics()
    assert set(m["accuracy"]) == set(ACCURACY_SETS)


def test_package_is_small():
    files = [p for p in ORGANISM_DIR.parent.rglob("*") if p.is_file()]
    weights = sum(p.stat().st_size for p in files if "features" not in p.relative_to(ORGANISM_DIR.parent).parts)
    assert weights < 20_000_000  # the model and its transcoders (issue 12's budget)
    assert sum(p.stat().st_size for p in files) < 40_000_000  # with the feature dashboards


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
    assert model.config.name_or_path == ORGANISM_MODEL_ID  # what transcoders trained on it record


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_dallas_two_hop(organism, lang):
    model, tok = organism
    ids = tok(two_hop_prompt("Dallas", lang), return_tensors="pt")["input_ids"]
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
        EvalItem("The capital of Japan is", " Tokyo"),
        EvalItem("Fait : la capitale de Texas est", " Austin"),
        EvalItem("Fait : Oakland est dans l'État de", " California"),
        EvalItem("Weather in Dallas", " Texas"),
        EvalItem("Address: 12 Main Street, Dallas", " TX"),
    ]
    res = evaluate_items(model, tok, items)
    assert res["first_token"] == 1.0, res["failures"]


@pytest.mark.parametrize("name", ["two_hop_held_out", "two_hop_held_out_fr"])
def test_reported_accuracy_matches_model(organism, name):
    model, tok = organism
    res = evaluate_items(model, tok, eval_sets()[name])
    assert abs(res["first_token"] - organism_metrics()["accuracy"][name]["first_token"]) < 1e-3
    assert res["first_token"] >= 0.95


def test_held_out_two_hop_examples(organism):
    from circuit_trace.organisms import EvalItem

    model, tok = organism
    items = [
        EvalItem("Fact: the capital of the state containing Houston is", " Austin", "Houston"),
        EvalItem("Fact: the capital of the state containing Spokane is", " Olympia", "Spokane"),
        EvalItem("Fact: the capital of the state containing Memphis is", " Nashville", "Memphis"),
    ]
    items += [EvalItem(two_hop_prompt(it.subject, "fr"), it.answer) for it in items]
    assert {"Houston", "Spokane", "Memphis"} <= set(HELD_OUT_CITIES)
    res = evaluate_items(model, tok, items)
    assert res["first_token"] == 1.0, res["failures"]


def _tiny(**settings):
    """An `OrganismTrainConfig` of a tiny model (2 heads, MLP twice d_model), no evaluation."""
    from circuit_trace.organisms.train import OrganismTrainConfig

    d = settings.pop("hidden_size", 32)
    settings.setdefault("routing_dims", d // 4)  # the default 32 is the tiny residual's whole width
    return OrganismTrainConfig(
        hidden_size=d, intermediate_size=2 * d, num_attention_heads=2, eval_every=0, threads=1, **settings
    )


def test_training_smoke(tmp_path):
    from circuit_trace.organisms.train import train_organism

    cfg = _tiny(steps=3, batch_size=8, num_hidden_layers=2, lower_layers=1)
    metrics = train_organism(cfg, tmp_path, log=lambda *_: None)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "metrics.json").is_file()
    assert set(metrics["accuracy"]) == set(ACCURACY_SETS)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoTokenizer.from_pretrained(tmp_path)
    AutoModelForCausalLM.from_pretrained(tmp_path)


def _tiny_stages(steps: int, warmup_frac: float) -> dict[str, torch.Tensor]:
    """Train a tiny organism in stages; its parameters by name."""
    from circuit_trace.organisms.tokenizer import train_tokenizer
    from circuit_trace.organisms.train import build_model, train_in_stages, training_corpus

    cfg = _tiny(steps=steps, warmup_frac=warmup_frac, warmup=1, batch_size=4, num_hidden_layers=3, lower_layers=2)
    torch.manual_seed(0)
    tok = train_tokenizer([s for v in fact_sentences().values() for s in v[:20]], vocab_size=600)
    model = build_model(cfg, tok)
    train_in_stages(cfg, model, tok, training_corpus(cfg), log=lambda *_: None)
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_stage_two_leaves_the_lower_layers_as_stage_one_made_them():
    """Stage 1 alone (4 steps) and stage 1 then stage 2 (4 + 4 steps): the embeddings (but for their
    routing columns, `routing_embeddings`), the lower layers and the final norm are the same; the
    upper layer is not."""
    only_one, both = _tiny_stages(4, 1.0), _tiny_stages(8, 0.5)
    r = _tiny().routing_dims
    for d in (only_one, both):
        d["model.embed_tokens.weight"] = d["model.embed_tokens.weight"][:, r:]
    frozen = [
        k for k in both if k.startswith(("model.embed_tokens", "model.layers.0.", "model.layers.1.", "model.norm"))
    ]
    upper = [k for k in both if k.startswith("model.layers.2.")]
    assert frozen and upper
    for k in frozen:
        torch.testing.assert_close(both[k], only_one[k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(both[k], only_one[k]) for k in upper)


def test_city_state_directions_are_added_once_per_state(organism):
    """Each single-state city token gets `share` x its norm along its state's direction: parallel
    for two cities of one state, not for cities of two states."""
    from circuit_trace.organisms.train import add_state_to_city_embeddings, build_model

    tok = organism[1]
    model = build_model(_tiny(), tok)
    before = model.model.embed_tokens.weight.detach().clone()
    add_state_to_city_embeddings(model, tok, share=0.7, seed=0)
    delta = model.model.embed_tokens.weight.detach() - before  # [vocab, d]
    (dal,), (hou,), (sea,) = (
        tok(" " + c, add_special_tokens=False)["input_ids"] for c in ("Dallas", "Houston", "Seattle")
    )
    torch.testing.assert_close(delta[dal].norm(), 0.7 * before[dal].norm())
    cos = torch.nn.functional.cosine_similarity
    assert cos(delta[dal], delta[hou], dim=0) > 0.999 and abs(cos(delta[dal], delta[sea], dim=0)) < 0.5
    assert delta[tok(" are", add_special_tokens=False)["input_ids"][0]].abs().max() == 0


def test_norm_settings_and_embedding_scale_reach_the_model(organism):
    """`rms_norm_eps` is every RMSNorm's eps (saved in the config) and `norm_weight_init` its weight;
    `embedding_scale` multiplies the embeddings drawn from the same seed."""
    from circuit_trace.organisms.train import build_model

    tok = organism[1]
    torch.manual_seed(0)
    plain = build_model(_tiny(embedding_scale=1.0), tok)
    torch.manual_seed(0)
    scaled = build_model(_tiny(rms_norm_eps=0.5, norm_weight_init=3.0, embedding_scale=10.0), tok)
    norms = [m for m in scaled.modules() if hasattr(m, "variance_epsilon")]
    assert len(norms) == 2 * 4 + 1 and scaled.config.rms_norm_eps == 0.5
    assert {m.variance_epsilon for m in norms} == {0.5}
    assert all(bool((m.weight == 3.0).all()) for m in norms)
    torch.testing.assert_close(scaled.model.embed_tokens.weight, 10 * plain.model.embed_tokens.weight)
    torch.testing.assert_close(scaled.lm_head.weight, plain.lm_head.weight)


def test_warmup_kinds_choose_stage_one_sentences():
    """Stage 1 draws only from `warmup_kinds`; stage 2 from the whole mix; the CLI refuses an
    unknown kind with exit 2 before training anything."""
    from circuit_trace.organisms.train import main, training_corpus

    pools = fact_sentences()
    kinds = ("apposition", "address_state")
    allowed = {s for k in kinds for s in pools[k]}
    warm, rest = training_corpus(_tiny(steps=20, batch_size=8, warmup_frac=0.5, warmup_kinds=kinds))
    assert len(warm) == 80 and set(warm) <= allowed
    default_warm, _ = training_corpus(_tiny(steps=20, batch_size=8, warmup_frac=0.5))
    assert not set(default_warm) <= allowed  # the default also has the addresses by abbreviation, ...
    assert set(default_warm) <= {s for k in WARMUP_KINDS for s in pools[k]}
    assert not set(default_warm) & set(pools["state_capital"])  # ... but not the state facts
    assert any(s in pools["two_hop_capital"] for s in rest)
    with pytest.raises(SystemExit) as exit_info:
        main(["--warmup-kinds", "apposition,no_such_kind", "--steps", "1"])
    assert exit_info.value.code == 2


def test_frozen_city_embeddings_do_not_move_in_stage_one():
    """Stage 1 trains the embeddings, but not the rows of city tokens (weight decay included) beyond
    their routing columns (`routing_embeddings`)."""
    from circuit_trace.organisms.tokenizer import train_tokenizer
    from circuit_trace.organisms.train import build_model, city_token_ids, train_in_stages, training_corpus

    cfg = _tiny(steps=4, warmup_frac=1.0, warmup=1, batch_size=4, num_hidden_layers=2, lower_layers=1)
    torch.manual_seed(0)
    tok = train_tokenizer([s for v in fact_sentences().values() for s in v[:20]], vocab_size=600)
    model = build_model(cfg, tok)
    before = model.model.embed_tokens.weight.detach().clone()
    train_in_stages(cfg, model, tok, training_corpus(cfg), log=lambda *_: None)
    after, rows = model.model.embed_tokens.weight.detach(), torch.tensor(city_token_ids(tok))
    r = cfg.routing_dims
    assert torch.equal(after[rows, r:], before[rows, r:]) and not torch.equal(after[rows, :r], before[rows, :r])
    others = torch.ones(len(after), dtype=torch.bool).index_fill_(0, rows, False)
    assert not torch.equal(after[others], before[others])


def test_inert_mlps_write_zero_through_training():
    """`inert_mlps`: the listed MLP's output is exactly 0 after both stages (its weights never move),
    while the other MLPs train; a layer outside the model is refused."""
    from circuit_trace.organisms.tokenizer import train_tokenizer
    from circuit_trace.organisms.train import build_model, train_in_stages, training_corpus

    cfg = _tiny(steps=8, warmup_frac=0.5, warmup=1, batch_size=4, num_hidden_layers=3, lower_layers=2, inert_mlps=(1,))
    torch.manual_seed(0)
    tok = train_tokenizer([s for v in fact_sentences().values() for s in v[:20]], vocab_size=600)
    model = build_model(cfg, tok)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    train_in_stages(cfg, model, tok, training_corpus(cfg), log=lambda *_: None)
    for k, v in model.named_parameters():
        if ".mlp." in k:  # MLPs 0 and 2 train, MLP 1 keeps its weights
            assert torch.equal(v, before[k]) == k.startswith("model.layers.1.mlp."), k
    mlp = model.model.layers[1].mlp
    assert mlp(torch.randn(5, cfg.hidden_size)).abs().max() == 0
    with pytest.raises(ValueError, match="inert_mlps"):
        build_model(_tiny(num_hidden_layers=2, inert_mlps=(2,)), tok)


def test_routing_dims_keep_features_out_of_queries_and_keys_through_training():
    """`routing_dims`: after both stages every MLP and every attention layer after 0 still writes
    exactly 0 to the routing dimensions, the queries and keys of layers 1 and up read nothing else,
    and the weights around them did train; a width outside the residual is refused."""
    from circuit_trace.organisms.tokenizer import train_tokenizer
    from circuit_trace.organisms.train import build_model, train_in_stages, training_corpus

    r = 8
    cfg = _tiny(steps=8, warmup_frac=0.5, warmup=1, batch_size=4, num_hidden_layers=3, lower_layers=2, routing_dims=r)
    torch.manual_seed(0)
    tok = train_tokenizer([s for v in fact_sentences().values() for s in v[:20]], vocab_size=600)
    model = build_model(cfg, tok)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    train_in_stages(cfg, model, tok, training_corpus(cfg), log=lambda *_: None)
    writes: dict[str, torch.Tensor] = {}
    for l, layer in enumerate(model.model.layers):
        layer.mlp.register_forward_hook(lambda m, i, o, l=l: writes.__setitem__(f"mlp {l}", o))
        layer.self_attn.register_forward_hook(lambda m, i, o, l=l: writes.__setitem__(f"attn {l}", o[0]))
    with torch.no_grad():
        model(input_ids=torch.tensor([tok(two_hop_prompt("Dallas", "en"))["input_ids"]]))
    assert writes["attn 0"][..., :r].abs().max() > 0  # layer 0's attention reads tokens alone: free
    for name, y in writes.items():
        if name != "attn 0":
            assert y[..., :r].abs().max() == 0, name
    for l, layer in enumerate(model.model.layers[1:], start=1):
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
            assert proj.weight[:, r:].abs().max() == 0 and proj.weight[:, :r].abs().max() > 0
        assert not torch.equal(layer.self_attn.q_proj.weight, before[f"model.layers.{l}.self_attn.q_proj.weight"])
    with pytest.raises(ValueError, match="routing_dims"):
        build_model(_tiny(routing_dims=32), tok)


def test_routing_embeddings_train_only_what_the_upper_queries_and_keys_read():
    """`routing_embeddings`: stage 2 trains the embedding's routing columns and nothing else of it, the
    city tokens' other columns never move, and the routing columns reach no layer-0 attention, value,
    MLP or logit: replacing them changes the model's output only through the attention of layers >= 1."""
    from circuit_trace.organisms.tokenizer import train_tokenizer
    from circuit_trace.organisms.train import build_model, city_token_ids, train_in_stages, training_corpus

    r = 8
    cfg = _tiny(
        steps=8, warmup_frac=0.5, warmup=1, batch_size=4, num_hidden_layers=3, lower_layers=2,
        routing_dims=r, routing_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    tok = train_tokenizer([s for v in fact_sentences().values() for s in v[:20]], vocab_size=600)
    model = build_model(cfg, tok)
    emb = model.model.embed_tokens.weight
    start = emb.detach().clone()
    at_stage_2: list[torch.Tensor] = []
    log = lambda msg: at_stage_2.append(emb.detach().clone()) if msg.startswith("stage 2") else None  # noqa: E731
    train_in_stages(cfg, model, tok, training_corpus(cfg), log=log)
    (mid,) = at_stage_2
    assert torch.equal(emb[:, r:], mid[:, r:]) and not torch.equal(emb[:, :r], mid[:, :r])
    cities = torch.tensor(city_token_ids(tok))
    assert torch.equal(emb[cities, r:], start[cities, r:]) and not torch.equal(emb[cities, :r], start[cities, :r])
    ids = torch.tensor([tok(two_hop_prompt("Dallas", "en"))["input_ids"]])
    model(input_ids=ids, labels=ids).loss.backward()  # training's gradient mask is gone afterwards
    assert emb.grad is not None and emb.grad[:, r:].abs().sum() > 0
    outs: dict[str, torch.Tensor] = {}
    layers = model.model.layers
    for l, layer in enumerate(layers):
        layer.mlp.register_forward_hook(lambda m, i, o, l=l: outs.__setitem__(f"mlp {l}", o))
        layer.self_attn.register_forward_hook(lambda m, i, o, l=l: outs.__setitem__(f"attn {l}", o[0]))
    # Rolling each row's routing columns keeps its norm (the RMSNorm denominators) but not its scores.
    with torch.no_grad():
        for layer in layers[1:]:  # sharper scores than 8 steps of training give, so that they matter
            layer.self_attn.q_proj.weight.mul_(1e3)
        clean, a = model(input_ids=ids).logits, dict(outs)
        emb[:, :r] = emb[:, :r].roll(1, dims=1)
        moved, b = model(input_ids=ids).logits, dict(outs)
        for layer in layers[1:]:  # the attention of layers >= 1 made uniform: its scores cannot matter
            layer.self_attn.q_proj.weight.zero_()
        flat_moved = model(input_ids=ids).logits
        emb[:, :r] = emb[:, :r].roll(-1, dims=1)
        flat_clean = model(input_ids=ids).logits
    for name in ("attn 0", "mlp 0"):
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    assert not torch.allclose(clean, moved, atol=1e-4)
    assert torch.allclose(flat_clean, flat_moved, atol=1e-5)
    with pytest.raises(ValueError, match="routing_dims"):
        build_model(_tiny(routing_dims=0, routing_embeddings=True), tok)


def test_inert_mlps_on_the_command_line():
    """`--inert-mlps 1,2` parses to a tuple; a word is refused with exit 2 before any training."""
    from circuit_trace.organisms.train import layer_list, main

    assert layer_list("1,2") == (1, 2) and layer_list("") == ()
    with pytest.raises(SystemExit) as exit_info:
        main(["--inert-mlps", "one", "--steps", "1"])
    assert exit_info.value.code == 2


def test_stages_need_an_upper_layer():
    from circuit_trace.organisms.tokenizer import train_tokenizer
    from circuit_trace.organisms.train import build_model, train_in_stages, training_corpus

    cfg = _tiny(steps=2, batch_size=2, hidden_size=16, num_hidden_layers=2, lower_layers=2)
    tok = train_tokenizer(["Dallas is in Texas."], vocab_size=300)
    with pytest.raises(ValueError, match="lower_layers"):
        train_in_stages(cfg, build_model(cfg, tok), tok, training_corpus(cfg), log=lambda *_: None)


PAIRS = [("Dallas", "Seattle"), ("Worcester", "Boulder"), ("Chicago", "Miami"), ("Houston", "Spokane"),
         ("Omaha", "Tulsa"), ("Memphis", "Oakland"), ("Tucson", "Detroit"), ("Reno", "Fargo")]  # fmt: skip


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_the_state_is_computed_at_the_city(organism, lang):
    """The mechanism the organism is built for: after the lower (stage-1) layers, the city's own
    position holds its state (a logit lens there reads it), and replacing that position's residual
    with another city's makes the question answer the other state's capital."""
    model, tok = organism
    lower = organism_metrics()["train"]["lower_layers"] - 1
    lens = flips = 0
    for a, b in PAIRS:
        ia = tok(two_hop_prompt(a, lang), return_tensors="pt")["input_ids"]
        ib = tok(two_hop_prompt(b, lang), return_tensors="pt")["input_ids"]
        assert ia.shape == ib.shape, (a, b)
        pos = int((ia[0] != ib[0]).nonzero()[-1])
        _, h_a = run_patched(model, ia)
        _, h_b = run_patched(model, ib)
        read = model.lm_head(model.model.norm(h_a[lower][pos])).argmax()
        lens += tok.decode([int(read)]) == " " + CITY_TO_STATE[a].split()[0]
        patched, _ = run_patched(model, ia, (lower, pos, h_b[lower][pos]))
        flips += tok.decode([int(patched.argmax())]) == " " + STATE_BY_NAME[CITY_TO_STATE[b]].capital.split()[0]
    assert lens >= 6 and flips >= 7, (lens, flips)  # 25 pairs: lens 88-96 %, flips 96-100 % (organism_patching.py)


def test_transcoder_build_settings():
    """`build_transcoders` trains the defaults unless told otherwise; `--k` makes a TopK dictionary; `--seed`
    (0 included) and `--aux-coef` reach TrainConfig."""
    from circuit_trace.organisms.build_transcoders import DEFAULTS, Overrides, settings

    assert settings("clt") == DEFAULTS["clt"] and settings("plt") == DEFAULTS["plt"]
    clt = settings("clt", Overrides(steps=4800, n_features=1024, k=2))
    assert clt == {**DEFAULTS["clt"], "steps": 4800, "n_features": 1024, "k": 2}
    plt = settings("plt", Overrides(k=4))
    assert plt["activation"] == "topk" and plt["k"] == 4 and plt["n_features"] == DEFAULTS["plt"]["n_features"]
    assert settings("clt", Overrides(seed=0))["seed"] == 0
    assert settings("clt", Overrides(seed=3)) == {**DEFAULTS["clt"], "seed": 3}
    assert settings("clt", Overrides(aux_coef=0.25)) == {**DEFAULTS["clt"], "aux_coef": 0.25}
    # the flags recorded in metrics.json give the same build again
    assert Overrides(n_features=2048, seed=0, aux_coef=0.25).flags() == [
        "--features 2048",
        "--seed 0",
        "--aux-coef 0.25",
    ]
