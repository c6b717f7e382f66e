"""Layer subsets merged equal a one-shot run; 2-process gloo training equals 1 process."""

import json
import socket

import pytest
import torch
import torch.multiprocessing as mp

from circuit_trace.transcoders import CheckpointError, load_transcoders
from circuit_trace.transcoders.training import (
    CacheError,
    HarvestConfig,
    MergeError,
    TrainConfig,
    TrainingReport,
    evaluate_cached,
    harvest,
    load_partial,
    merge_transcoders,
    parse_layers,
    train,
)


@pytest.fixture(scope="module")
def cache_dir(tiny, tmp_path_factory):
    model, tok, corpus = tiny
    out = tmp_path_factory.mktemp("cache") / "c"
    harvest(model, tok, corpus, HarvestConfig(out_dir=str(out), context_size=16), progress=False)
    return out


def cfg(tmp_path, name, cache, **kw):
    base = dict(
        kind="plt",
        n_features=24,
        steps=8,
        batch_size=32,
        buffer_tokens=100,
        checkpoint_every=4,
        eval_tokens=40,
        lr=3e-3,
        lambda_s=0.5,
        log_every=2,
        cache=str(cache),
        out_dir=str(tmp_path / name),
    )
    return TrainConfig(**{**base, **kw})


def assert_same_weights(a, b, rtol=1e-5, atol=1e-6):
    assert (a.n_layers, a.d_features, a.is_cross_layer) == (b.n_layers, b.d_features, b.is_cross_layer)
    for name in ("W_enc", "b_enc", "b_dec"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=rtol, atol=atol, msg=name)
    torch.testing.assert_close(a.thresholds(), b.thresholds(), rtol=rtol, atol=atol)
    for l in range(a.n_layers):
        torch.testing.assert_close(a.decoder(l), b.decoder(l), rtol=rtol, atol=atol)


def test_parse_layers():
    assert parse_layers("0-2,5", 8) == [0, 1, 2, 5] and parse_layers(None, 3) == [0, 1, 2]
    assert parse_layers("all", 2) == [0, 1] and parse_layers([3, 1], 4) == [1, 3]
    for bad in ("0-9", "x", "3-1"):
        with pytest.raises(ValueError):
            parse_layers(bad, 8)


def test_layer_subsets_merged_equal_one_shot(tiny, tmp_path, cache_dir):
    model, _, _ = tiny
    one = train(model, None, None, cfg(tmp_path, "all", cache_dir), progress=False)
    r0 = train(None, None, None, cfg(tmp_path, "l0", cache_dir, layers="0"), progress=False)
    r1 = train(None, None, None, cfg(tmp_path, "l1", cache_dir, layers="1"), progress=False)
    assert r0.layers == [0] and r1.layers == [1] and r0.replacement_kl is None
    assert r0.fvu + r1.fvu == pytest.approx(one.fvu, rel=1e-5)
    with pytest.raises(CheckpointError, match="partial transcoder set.*merge-transcoders"):
        load_transcoders(str(tmp_path / "l1" / "transcoder"))
    merged = merge_transcoders([tmp_path / "l1", tmp_path / "l0"], tmp_path / "merged")
    assert_same_weights(merged, load_transcoders(str(tmp_path / "all" / "transcoder")))
    assert load_transcoders(str(tmp_path / "merged")).n_layers == 2
    with pytest.raises(MergeError, match="layer.*1"):
        merge_transcoders([tmp_path / "l0"])
    with pytest.raises(MergeError, match="layer 0 is in runs 1 and 2"):
        merge_transcoders([tmp_path / "l0", tmp_path / "l0"])
    assert_same_weights(merge_transcoders([tmp_path / "all"]), merged)  # a whole set alone: itself


def test_replace_splices_retrained_layers_into_a_whole_set(tmp_path, cache_dir):
    train(None, None, None, cfg(tmp_path, "all", cache_dir), progress=False)
    train(None, None, None, cfg(tmp_path, "l0", cache_dir, layers="0"), progress=False)
    train(None, None, None, cfg(tmp_path, "l1b", cache_dir, layers="1", seed=7, steps=6), progress=False)
    with pytest.raises(MergeError, match="layer 1 is in runs 1 and 2.*replace"):
        merge_transcoders([tmp_path / "all", tmp_path / "l1b"])
    spliced = merge_transcoders([tmp_path / "all", tmp_path / "l1b"], replace=True)
    assert_same_weights(spliced, merge_transcoders([tmp_path / "l0", tmp_path / "l1b"]))
    whole = load_transcoders(str(tmp_path / "all" / "transcoder"), lazy=False)
    assert not torch.allclose(spliced.W_enc[1], whole.W_enc[1])  # layer 1 really was replaced
    assert_same_weights(merge_transcoders([tmp_path / "l1b", tmp_path / "all"], replace=True), whole)


def test_pad_splices_a_wider_layer_whose_extra_features_never_fire(tmp_path, cache_dir):
    train(None, None, None, cfg(tmp_path, "all", cache_dir, activation="topk", k=4), progress=False)
    train(
        None,
        None,
        None,
        cfg(tmp_path, "w1", cache_dir, layers="1", n_features=40, activation="topk", k=4),
        progress=False,
    )
    runs = [tmp_path / "all", tmp_path / "w1"]
    with pytest.raises(MergeError, match="run 2 has 40 features per layer, run 1 24.*pad"):
        merge_transcoders(runs, replace=True)
    spliced = merge_transcoders(runs, tmp_path / "spliced", replace=True, pad=True)
    whole = load_transcoders(str(tmp_path / "all" / "transcoder"), lazy=False)
    wide = load_partial(tmp_path / "w1")[0]
    assert load_transcoders(str(tmp_path / "spliced")).d_features == spliced.d_features == 40
    x = torch.randn(64, whole.d_model) * 3
    for layer, ref, i in ((0, whole, 0), (1, wide, 0)):  # each layer encodes and decodes as its run did
        acts = spliced.encode(x, layer)
        assert (acts[:, ref.d_features :] == 0).all()  # the padding never fires
        torch.testing.assert_close(acts[:, : ref.d_features], ref.encode(x, i))
        torch.testing.assert_close(spliced.decoder(layer)[: ref.d_features], ref.decoder(i))


def test_evaluate_cached_repeats_the_runs_own_evaluation(tiny, tmp_path, cache_dir):
    model, _, _ = tiny
    report = train(model, None, None, cfg(tmp_path, "all", cache_dir), progress=False)
    tc = load_transcoders(str(tmp_path / "all" / "transcoder"), lazy=False)
    ev = evaluate_cached(model, tc, cache_dir, eval_tokens=40)
    assert ev["fvu"] == pytest.approx(report.fvu, rel=1e-5) and ev["tokens"] == report.eval_tokens
    assert ev["kl"] == pytest.approx(report.replacement_kl, rel=1e-5)
    assert ev["top1_agreement"] == report.top1_agreement and ev["heldout"]
    assert evaluate_cached(None, tc, cache_dir, eval_tokens=40)["kl"] is None  # no model: reconstruction only
    train(None, None, None, cfg(tmp_path, "l0", cache_dir, layers="0"), progress=False)
    with pytest.raises(CacheError, match="give a whole set"):
        evaluate_cached(model, load_partial(tmp_path / "l0")[0], cache_dir, 40)


def test_clt_subsets_merge_block_diagonal(tmp_path, cache_dir):
    for name, layers in (("c0", "0"), ("c1", "1")):
        train(None, None, None, cfg(tmp_path, name, cache_dir, kind="clt", layers=layers, steps=2), progress=False)
    merged = merge_transcoders([tmp_path / "c0", tmp_path / "c1"])
    assert merged.is_cross_layer and merged.decoder(0).shape[1] == 2
    assert (merged.decoder(0)[:, 1] == 0).all() and (merged.decoder(0)[:, 0] != 0).any()
    train(None, None, None, cfg(tmp_path, "call", cache_dir, kind="clt", steps=2), progress=False)
    whole = load_transcoders(str(tmp_path / "call" / "transcoder"), lazy=False)
    spliced = merge_transcoders([tmp_path / "call", tmp_path / "c1"], replace=True)
    torch.testing.assert_close(spliced.W_enc, torch.stack([whole.W_enc[0], merged.W_enc[1]]))
    torch.testing.assert_close(spliced.decoder(0)[:, 0], whole.decoder(0)[:, 0])
    assert (spliced.decoder(0)[:, 1] == 0).all() and (whole.decoder(0)[:, 1] != 0).any()  # no cross-run decoder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_equals_one_process(tmp_path, cache_dir):
    from dist_worker import run_rank

    kw = dict(kind="clt", n_features=24, steps=6, batch_size=32, buffer_tokens=100, checkpoint_every=3)
    kw.update(eval_tokens=40, lr=3e-3, lambda_s=0.5, cache=str(cache_dir))
    one = train(None, None, None, TrainConfig(**kw, out_dir=str(tmp_path / "one")), progress=False)
    mp.spawn(run_rank, args=(2, _free_port(), {**kw, "out_dir": str(tmp_path / "two")}), nprocs=2, join=True)
    two = TrainingReport.load(tmp_path / "two" / "report.json")
    assert two.world_size == 2 and two.tokens == one.tokens == 6 * 32 and two.steps == 6
    a, b = (load_transcoders(str(tmp_path / n / "transcoder")) for n in ("one", "two"))
    assert_same_weights(a, b, rtol=1e-4, atol=1e-5)
    assert two.fvu == pytest.approx(one.fvu, rel=1e-4)
    state = json.loads((tmp_path / "two" / "checkpoints" / "latest").read_text().strip().join('""'))
    assert state == "step_000000006"
