"""Activation cache: harvest, resume after an interruption, and training from it equals streaming."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from training_fixtures import make_model

from circuit_trace.models import get_adapter
from circuit_trace.models.activations import mlp_io
from circuit_trace.transcoders import load_transcoders
from circuit_trace.transcoders.training import (
    ActivationCache,
    CacheError,
    HarvestConfig,
    TrainConfig,
    harvest,
    train,
)
from circuit_trace.transcoders.training.cache import check_model, weights_hash
from circuit_trace.transcoders.training.packing import boundary_token_ids
from circuit_trace.transcoders.training.reader import read_mlp_io


def run_cfg(tmp_path, name, **kw):
    base = dict(
        kind="plt",
        n_features=24,
        steps=8,
        batch_size=32,
        context_size=16,
        buffer_tokens=100,
        checkpoint_every=4,
        eval_tokens=40,
        lr=3e-3,
        lambda_s=0.5,
        out_dir=str(tmp_path / name),
    )
    return TrainConfig(**{**base, **kw})


def test_reader_equals_nnsight_mlp_io(tiny):
    model, _, _ = tiny
    adapter = get_adapter(model)
    ids = torch.randint(3, 40, (3, 9))
    for hooks in (("hook_resid_mid", "hook_mlp_out"), ("mlp.hook_in", "hook_mlp_out")):
        x0, y0 = mlp_io(adapter, ids, *hooks)
        x1, y1 = read_mlp_io(adapter, ids, *hooks)
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    x, y = read_mlp_io(adapter, ids, "mlp.hook_in", "hook_mlp_out", [1])
    assert torch.equal(x[0], x0[1]) and torch.equal(y[0], y0[1])


def test_cache_layout_and_contents(tiny, tmp_path):
    model, tok, corpus = tiny
    info = harvest(model, tok, corpus, HarvestConfig(out_dir=str(tmp_path / "c"), context_size=16), progress=False)
    cache = ActivationCache(tmp_path / "c")
    assert info.complete and info.layers == [0, 1] and info.dtype == "bfloat16" and cache.info.n_tokens == info.n_tokens
    assert info.n_tokens == int((cache.lengths - 1).sum()) and len(info.corpus_fingerprint) == 64
    w = torch.tensor([2, 0])
    skip = boundary_token_ids(tok)
    assert info.skip_token_ids == skip and skip  # recorded at harvest
    content = cache.content_rows(w)  # the rows training reads: no boundary token
    rows = cache.rows_of(w)
    tokens = torch.cat([cache.windows[j, 1 : int(cache.lengths[j])] for j in w.tolist()])
    assert torch.equal(content, rows[~torch.isin(tokens, torch.tensor(skip))])
    x, y = cache.gather(rows)
    ref_x, ref_y = read_mlp_io(get_adapter(model), cache.windows[w], "mlp.hook_in", "hook_mlp_out")
    ref_x = torch.cat([ref_x[:, i, 1 : int(cache.lengths[j])] for i, j in enumerate(w.tolist())], 1).transpose(0, 1)
    ref_y = torch.cat([ref_y[:, i, 1 : int(cache.lengths[j])] for i, j in enumerate(w.tolist())], 1).transpose(0, 1)
    assert x.dtype == torch.bfloat16 and torch.equal(x, ref_x.to(torch.bfloat16)) and torch.equal(y, ref_y.bfloat16())
    xn, yn = cache.norms(rows)
    torch.testing.assert_close(xn, ref_x.norm(dim=-1))
    torch.testing.assert_close(yn, ref_y.norm(dim=-1))
    assert not list((tmp_path / "c").glob("*.tmp.npy"))  # no pickle, no leftovers: plain .npy + JSON
    assert np.load(tmp_path / "c" / "shard_00000.x.npy", mmap_mode="r").dtype == np.int16


def test_rows_read_across_shards_in_any_order(tiny, tmp_path):
    """`gather` and `norms` read rows with explicit reads, one per run of consecutive rows in a
    shard: any order, duplicates, runs crossing shard ends and layer subsets give exactly what the
    .npy files hold (read here through numpy's own loader)."""
    model, tok, corpus = tiny
    hc = HarvestConfig(out_dir=str(tmp_path / "c"), context_size=16, shard_tokens=200, dtype="float16")
    info = harvest(model, tok, corpus, hc, progress=False)
    assert len(info.shards) >= 3
    cache = ActivationCache(tmp_path / "c")
    load = lambda part: torch.from_numpy(
        np.concatenate([np.load(tmp_path / "c" / f"{s['name']}.{part}.npy") for s in info.shards])
    )
    x_all, y_all, norms_all = load("x"), load("y"), load("norms")
    g = torch.Generator().manual_seed(0)
    n = info.n_tokens
    cross = int(cache.shard_rows[1])  # a run over the first shard's end
    for rows in (
        torch.arange(n),
        torch.randperm(n, generator=g)[:50],
        torch.randint(0, n, (40,), generator=g),  # duplicates
        torch.arange(cross - 5, cross + 5).flip(0),
        torch.tensor([n - 1, 0]),
        torch.tensor([], dtype=torch.long),
    ):
        x, y = cache.gather(rows)
        assert torch.equal(x, x_all[rows]) and torch.equal(y, y_all[rows])
        xn, yn = cache.norms(rows)
        assert torch.equal(xn, norms_all[rows, 0]) and torch.equal(yn, norms_all[rows, 1])
        x1, _ = cache.gather(rows, torch.tensor([1]))
        assert torch.equal(x1, x_all[rows][:, [1]])
    last = tmp_path / "c" / f"{info.shards[-1]['name']}.y.npy"
    last.write_bytes(last.read_bytes()[:-10])  # cut after the cache was opened
    with pytest.raises(CacheError, match="ends before"):
        cache.gather(torch.tensor([n - 1]))


def test_harvest_resumes_after_interruption(tiny, tmp_path):
    model, tok, corpus = tiny
    hc = lambda name: HarvestConfig(out_dir=str(tmp_path / name), context_size=16, shard_tokens=200, dtype="float16")
    full = harvest(model, tok, corpus, hc("one"), progress=False)
    assert len(full.shards) >= 3
    part = harvest(model, tok, corpus, hc("two"), progress=False, stop_after=1)
    assert not part.complete
    with pytest.raises(CacheError, match="incomplete"):
        ActivationCache(tmp_path / "two")
    calls = []
    handle = model.register_forward_pre_hook(lambda mod, args, kwargs: calls.append(1), with_kwargs=True)
    try:
        done = harvest(model, tok, corpus, hc("two"), progress=False)
    finally:
        handle.remove()
    first = full.shards[0]
    n_first = -(-(first["windows"][1] - first["windows"][0]) // (2048 // 16))
    total = sum(-(-(s["windows"][1] - s["windows"][0]) // (2048 // 16)) for s in full.shards)
    assert done.complete and len(calls) == total - n_first  # the finished shard was not redone
    for f in sorted(p.name for p in (tmp_path / "one").iterdir()):
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
    with pytest.raises(CacheError, match="other settings"):
        harvest(model, tok, corpus, HarvestConfig(out_dir=str(tmp_path / "two"), context_size=16), progress=False)


def test_cache_trained_equals_stream_trained(tiny, tmp_path):
    model, tok, corpus = tiny
    harvest(
        model, tok, corpus, HarvestConfig(out_dir=str(tmp_path / "c"), context_size=16, dtype="float32"), progress=False
    )
    stream = train(model, tok, corpus, run_cfg(tmp_path, "stream"), progress=False)
    cached = train(None, None, None, run_cfg(tmp_path, "cached"), progress=False, cache=tmp_path / "c")
    assert [h["tokens"] for h in cached.history] == [h["tokens"] for h in stream.history]
    for a, b in zip(stream.history, cached.history):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)
    ta, tb = (load_transcoders(str(tmp_path / n / "transcoder")) for n in ("stream", "cached"))
    for p, q in zip(ta.state_dict().values(), tb.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    assert cached.fvu == pytest.approx(stream.fvu, rel=1e-4) and cached.replacement_kl is None
    # with the model given, the cached run also measures the replacement model
    full = train(model, None, None, run_cfg(tmp_path, "cm", cache=str(tmp_path / "c")), progress=False)
    assert full.replacement_kl == pytest.approx(stream.replacement_kl, rel=1e-3)
    assert full.top1_agreement == pytest.approx(stream.top1_agreement, abs=0.01)
    # a bf16 cache trains too (the stream casts to fp32 once per batch)
    harvest(model, tok, corpus, HarvestConfig(out_dir=str(tmp_path / "bf"), context_size=16), progress=False)
    bf = train(None, None, None, run_cfg(tmp_path, "bf", cache=str(tmp_path / "bf")), progress=False)
    assert bf.completed and bf.fvu == pytest.approx(stream.fvu, rel=0.05)


def test_cache_refuses_other_model_or_hooks(tiny, tmp_path):
    model, tok, corpus = tiny
    harvest(model, tok, corpus, HarvestConfig(out_dir=str(tmp_path / "c"), context_size=16), progress=False)
    with pytest.raises(CacheError, match="hook_resid_mid"):
        train(None, None, None, run_cfg(tmp_path, "a", input_hook="hook_resid_mid", cache=str(tmp_path / "c")))
    other = make_model(len(tok), n_layers=3)
    with pytest.raises(CacheError, match="another model"):
        train(other, tok, None, run_cfg(tmp_path, "b", cache=str(tmp_path / "c")), progress=False)
    with pytest.raises(CacheError, match="not an activation cache"):
        train(None, None, None, run_cfg(tmp_path, "d", cache=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match="needs a model"):
        train(None, None, corpus, run_cfg(tmp_path, "e"), progress=False)


def test_weights_hash_tells_weights_apart_not_dtypes(tiny):
    model, _, _ = tiny
    h = weights_hash(model)
    assert len(h) == 64 and weights_hash(copy.deepcopy(model).to(torch.bfloat16)) == h
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.model.layers[1].mlp.down_proj.weight[3, 5] += 0.25
    assert weights_hash(other) != h
    assert weights_hash(make_model(model.config.vocab_size, seed=1)) != h


def test_harvest_records_the_model_and_refuses_to_resume_with_other_weights(tiny, tmp_path):
    model, tok, corpus = tiny
    hc = HarvestConfig(out_dir=str(tmp_path / "c"), context_size=16, shard_tokens=200)
    part = harvest(model, tok, corpus, hc, progress=False, stop_after=1)
    assert part.model_hash == weights_hash(model) and part.model_revision is None
    other = make_model(len(tok), seed=1)  # same name ("") and shape, other weights
    with pytest.raises(CacheError, match="other settings \\(model weights\\)"):
        harvest(other, tok, corpus, hc, progress=False)
    assert harvest(model, tok, corpus, hc, progress=False).complete


def test_training_from_a_cache_checks_the_model_it_is_given(tiny, tmp_path):
    model, tok, corpus = tiny
    harvest(model, tok, corpus, HarvestConfig(out_dir=str(tmp_path / "c"), context_size=16), progress=False)
    other = make_model(len(tok), seed=1)
    with pytest.raises(CacheError, match="has other weights"):
        train(other, None, None, run_cfg(tmp_path, "a", cache=str(tmp_path / "c")), progress=False)
    assert not (tmp_path / "a" / "checkpoints").exists()  # refused before the first step
    # a cache from before the weights' hash: the name and shape decide
    info = ActivationCache(tmp_path / "c").info
    old = dataclasses.replace(info, model="some-llama", model_hash=None)
    with pytest.raises(CacheError, match="another model \\(some-llama\\)"):
        check_model(old, model, "c")
    check_model(dataclasses.replace(old, model=""), other, "c")  # unnamed: only the shape can be checked
    old.save(tmp_path / "c")
    report = train(None, None, None, run_cfg(tmp_path, "b", cache=str(tmp_path / "c")), progress=False)
    assert (report.model, report.model_hash) == ("some-llama", None)
    assert load_transcoders(str(tmp_path / "b" / "transcoder")).model_name == "some-llama"


@pytest.mark.parametrize("family", ["gpt2", "gemma2", "qwen3"])
def test_reader_equals_nnsight_on_other_families(family):
    from helpers import default_hooks, make_hf_model

    model = make_hf_model(family, n_layers=2)
    adapter = get_adapter(model)
    ids = torch.randint(3, 90, (2, 7))
    x0, y0 = mlp_io(adapter, ids, *default_hooks(family))
    x1, y1 = read_mlp_io(adapter, ids, *default_hooks(family))
    torch.testing.assert_close(x1, x0, rtol=1e-5, atol=1e-5)  # GPT-2: ~2e-6 apart (another attention path)
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
