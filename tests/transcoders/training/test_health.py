"""Robust training: outliers found on MLP outputs (and counted), FVU > 1 and loss spikes flagged."""

import pytest
import torch

from circuit_trace.transcoders import Transcoder
from circuit_trace.transcoders.training import (
    ActivationBuffer,
    ActivationCache,
    CacheBuffer,
    HarvestConfig,
    TrainConfig,
    harvest,
    train,
)
from circuit_trace.transcoders.training.chunks import outlier_mask
from circuit_trace.transcoders.training.health import SpikeMonitor, health_flags


def test_outlier_mask_inputs_and_outputs():
    xn = torch.ones(10, 2)
    yn = torch.ones(10, 2)
    xn[3, 1] = 50  # input outlier at layer 1
    yn[7, 0] = 500  # output outlier at layer 0 (after an RMSNorm the input norm stays flat)
    yn[3, 0] = 500  # both: counted once, as an input outlier
    keep, counts = outlier_mask(xn, yn, 10.0, 100.0)
    assert keep.tolist() == [i not in (3, 7) for i in range(10)]
    assert (counts.inputs, counts.outputs, counts.total) == (1, 1, 2)
    keep, counts = outlier_mask(xn, yn, 10.0, None)  # output filter off: only the input outlier
    assert counts.total == 1 and keep[7]


def _windows():
    return torch.arange(3, 163).view(10, 16)


def _read(ids):
    y = torch.ones(2, *ids.shape, 4)
    y[:, ids == 60] *= 1000  # a massive MLP output, ordinary input
    return torch.ones(2, *ids.shape, 4), y


def test_stream_drops_and_reports_output_outliers():
    buf = ActivationBuffer(_windows(), _read, batch_size=8, windows_per_chunk=10, output_outlier_ratio=100.0)
    ys = torch.cat([next(buf)[1] for _ in range(18)])
    assert buf.n_dropped == buf.n_dropped_output == 1 and buf.n_dropped_input == 0 and ys.max() == 1
    kept = ActivationBuffer(_windows(), _read, batch_size=8, windows_per_chunk=10, output_outlier_ratio=None)
    assert torch.cat([next(kept)[1] for _ in range(18)]).max() == 1000 and kept.n_dropped == 0


def test_cached_run_reports_output_outliers(tiny, tmp_path):
    model, tok, corpus = tiny
    harvest(model, tok, corpus, HarvestConfig(out_dir=str(tmp_path / "c"), context_size=16), progress=False)
    cache = ActivationCache(tmp_path / "c")
    yn = cache.norms(torch.arange(cache.info.n_tokens))[1]
    ratio = float((yn / yn.median(0).values).max())  # the largest output-norm ratio in the corpus
    buf = CacheBuffer(cache, torch.arange(cache.info.n_windows), batch_size=32, windows_per_chunk=1000)
    buf.output_outlier_ratio = ratio * 0.999
    next(buf)
    assert buf.n_dropped_output >= 1 and buf.n_dropped_input == 0
    kw = dict(kind="plt", n_features=16, steps=2, batch_size=32, eval_tokens=40, cache=str(tmp_path / "c"))
    report = train(
        None, None, None, TrainConfig(**kw, output_outlier_ratio=1.5, out_dir=str(tmp_path / "r")), progress=False
    )
    assert (
        report.outlier_tokens_output > 0
        and report.outlier_tokens_dropped == report.outlier_tokens_input + report.outlier_tokens_output
    )


def test_fvu_above_one_is_flagged_and_warned(tiny, tmp_path):
    model, tok, corpus = tiny
    init = Transcoder.random(2, 32, 24, cross_layer=True, seed=2, input_hook="mlp.hook_in")  # far off: FVU >> 1
    c = TrainConfig(kind="clt", n_features=24, steps=1, batch_size=32, context_size=16, lr=1e-12, eval_tokens=40)
    c.out_dir = str(tmp_path / "bad")
    with pytest.warns(UserWarning, match=r"held-out FVU > 1 .* layer\(s\) \[0, 1\]"):
        report = train(model, tok, corpus, c, progress=False, init=init)
    assert report.fvu_above_one == [0, 1] and any("FVU > 1" in f for f in report.flags)
    assert "warning: held-out FVU > 1" in report.summary()


def test_spike_monitor():
    mon = SpikeMonitor(ratio=10.0, warmup=2)
    for step in range(1, 6):
        mon.update(torch.tensor([1.0, 2.0]))
        mon.flush(step, [4, 7])
    mon.update(torch.tensor([1.0, 2.0]))
    mon.update(torch.tensor([1.0, 50.0]))  # one batch x25 at model layer 7
    mon.flush(6, [4, 7])
    assert mon.spikes == [{"step": 6, "layer": 7, "ratio": 25.0}]
    bad, flags = health_flags([0.2, 1.3], [4, 7], mon.spikes)
    assert bad == [7] and len(flags) == 2 and "1 loss spike(s) at layer(s) [7]" in flags[1]
    assert health_flags([0.2, 0.9], [0, 1], []) == ([], [])


def test_a_constant_mlp_output_is_flagged_apart():
    """A layer whose MLP output is constant (held at 0: FVU inf) gets its own flag, not the
    "FVU > 1" one (which names the worst finite layer), and is not listed as worse than the mean."""
    bad, flags = health_flags([0.2, float("inf"), 1.5], [0, 1, 2], [])
    assert bad == [2] and len(flags) == 2
    assert "layer(s) [1] is constant" in flags[0] and "[2], worst 1.50" in flags[1]
    assert health_flags([0.2, float("inf")], [0, 1], [])[0] == []


def test_heldout_fvu_without_the_outliers_training_drops():
    from circuit_trace.transcoders.training.evaluation import reconstruction_summary
    from circuit_trace.transcoders.training.metrics import fvu, reconstruct_tokens

    tc = Transcoder.random(2, 8, 16, cross_layer=True, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, 8, generator=g)
    x[5] = 30.0  # an input outlier (at every layer)
    y = reconstruct_tokens(tc, x)[0] + 0.3 * torch.randn(60, 2, 8, generator=g)  # a good fit...
    y[40, 1] = 100.0  # ...but for a massive output at layer 1 (~110x its median norm), which it misses
    batches = [(x[:30], y[:30]), (x[30:], y[30:])]  # the filter's medians are per batch
    out = reconstruction_summary(tc, iter(batches), outlier_ratios=(10.0, 100.0))
    keep = torch.ones(60, dtype=torch.bool)
    keep[[5, 40]] = False
    y_hat = reconstruct_tokens(tc, x)[0]
    assert out["outlier_tokens"] == 2
    torch.testing.assert_close(torch.tensor(out["fvu"]), fvu(y, y_hat).float(), rtol=1e-5, atol=0)
    torch.testing.assert_close(
        torch.tensor(out["fvu_without_outliers"]), fvu(y[keep], y_hat[keep]).float(), rtol=1e-5, atol=0
    )
    off = reconstruction_summary(tc, iter(batches))  # filter off: nothing dropped, nothing to add
    assert off["outlier_tokens"] == 0 and off["fvu_without_outliers"] is None
    _, flags = health_flags(out["fvu"], [0, 1], [], out["fvu_without_outliers"], out["outlier_tokens"])
    assert len(flags) == 1 and "layer(s) [1] is mostly 2 outlier token(s)" in flags[0]
    assert health_flags([0.2, 0.3], [0, 1], [], [0.15, 0.2], 4) == ([], [])  # less than halved: no flag


@pytest.mark.parametrize("family", ["llama", "gemma2"])  # gemma2: softcapped logits
def test_vocab_chunked_kl_equals_full_logits(family):
    from helpers import make_hf_model

    from circuit_trace.models import get_adapter
    from circuit_trace.replacement.full import kl_divergence
    from circuit_trace.transcoders.training.metrics import chunked_kl_top1, final_hidden, logit_chunks

    model = make_hf_model(family, n_layers=2)
    adapter = get_adapter(model)
    ids = torch.randint(3, 90, (2, 6))
    h = final_hidden(adapter, ids).reshape(-1, adapter.d_model)
    with torch.no_grad():
        logits = model(ids).logits.reshape(-1, adapter.vocab_size)
    torch.testing.assert_close(torch.cat([z for _, z in logit_chunks(adapter, h, 13)], -1), logits.float())
    h2 = h + 0.3 * torch.randn_like(h)
    with torch.no_grad():
        logits2 = torch.cat([z for _, z in logit_chunks(adapter, h2, 13)], -1)
    kl, same = chunked_kl_top1(adapter, h, h2, vocab_chunk=7)  # 100 tokens: 15 uneven blocks
    torch.testing.assert_close(kl, kl_divergence(logits, logits2, torch.float64).float(), rtol=1e-4, atol=1e-6)
    assert torch.equal(same, logits.argmax(-1) == logits2.argmax(-1))
