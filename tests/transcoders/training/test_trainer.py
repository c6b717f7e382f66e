import dataclasses
import math

import pytest
import torch
from safetensors.torch import load_file
from training_fixtures import make_model

from circuit_trace.cli import train_from_args
from circuit_trace.transcoders import TranscoderMismatchError, load_transcoders
from circuit_trace.transcoders.training import (
    CorpusError,
    Normalizer,
    OutputDirError,
    TrainConfig,
    TrainingReport,
    fold_normalization,
    new_transcoder,
    resume_conflicts,
    train,
)
from circuit_trace.transcoders.training.config import resume_differences
from circuit_trace.transcoders.training.trainer import evaluate


def cfg(tmp_path, name="run", **kw):
    base = dict(
        kind="clt",
        n_features=24,
        steps=8,
        batch_size=32,
        context_size=16,
        buffer_tokens=100,
        checkpoint_every=3,
        eval_tokens=40,
        lr=3e-3,
        lambda_s=0.5,
        out_dir=str(tmp_path / name),
    )
    return TrainConfig(**{**base, **kw})


def test_smoke_clt_on_tiny_llama(tiny, tmp_path):
    model, tok, corpus = tiny
    c = cfg(tmp_path, steps=12)
    report = train(model, tok, corpus, c, progress=False)
    assert report.completed and report.steps == 12 and report.tokens == 12 * 32
    assert len(report.fvu) == len(report.l0) == 2 and report.eval_heldout and report.eval_tokens > 0
    assert all(0 < f < 2 for f in report.fvu) and report.l0_total > 0
    assert 0 <= report.top1_agreement <= 1 and report.replacement_kl >= 0
    assert report.dead_window_tokens > 0 and 0 <= report.dead_fraction <= 1
    assert report.history[-1]["step"] == 12
    out = tmp_path / "run"
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_000000009", "step_000000012"]
    assert TrainingReport.load(out / "report.json") == report
    # save -> load -> identical outputs: the checkpoint's weights, folded in memory, match the saved
    # circuit-tracer directory exactly, and the loaded transcoder reproduces the reported metrics.
    loaded = load_transcoders(str(out / "transcoder"))
    assert loaded.is_cross_layer and loaded.feature_input_hook == "mlp.hook_in"
    state = torch.load(out / "checkpoints" / "step_000000012" / "state.pt", weights_only=True)
    tc = new_transcoder(2, 32, c)
    tc.load_state_dict(load_file(str(out / "checkpoints" / "step_000000012" / "transcoder.safetensors")))
    folded = fold_normalization(tc, Normalizer.from_state_dict(state["normalizer"]))
    xs = torch.randn(2, 10, 32)
    with torch.no_grad():
        assert torch.equal(loaded.reconstruct(xs), folded.reconstruct(xs))
    from circuit_trace.models import get_adapter
    from circuit_trace.transcoders.training import make_windows, read_corpus
    from circuit_trace.transcoders.training.chunks import content_mask
    from circuit_trace.transcoders.training.packing import boundary_token_ids

    windows, lengths = make_windows(tok, read_corpus(corpus), 16)
    assert (lengths == 16).all()  # some documents are longer: packed
    skip = boundary_token_ids(tok)
    read = content_mask(windows, lengths, skip)
    assert not read[:, 1:].all()  # packing put separators mid-window: they are skipped
    tokens_from_end = read.sum(1).flip(0).cumsum(0)
    n_eval = int((tokens_from_end < report.eval_tokens).sum()) + 1  # held-out windows at the end
    assert int(tokens_from_end[n_eval - 1]) == report.eval_tokens
    ev = evaluate(get_adapter(model), loaded, windows[-n_eval:], c, lengths[-n_eval:], skip_token_ids=skip)
    assert ev["fvu"] == report.fvu and ev["top1_agreement"] == report.top1_agreement


@pytest.mark.parametrize("kind,activation", [("clt", "jumprelu"), ("plt", "topk")])
def test_resume_is_bit_identical(tiny, tmp_path, kind, activation):
    model, tok, corpus = tiny
    kw = dict(kind=kind, activation=activation, k=4, dead_window=64)
    full = train(model, tok, corpus, cfg(tmp_path, "full", **kw), progress=False)
    part = train(model, tok, corpus, cfg(tmp_path, "split", **kw), progress=False, stop_after=4)
    assert not part.completed and part.steps == 4 and part.transcoder_path is None
    resumed = train(model, tok, corpus, cfg(tmp_path, "split", **kw), progress=False, resume=True)
    assert resumed.history == full.history
    files = sorted(p.name for p in (tmp_path / "full" / "transcoder").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "split" / "transcoder").iterdir())
    for f in files:  # byte-identical saved transcoders
        assert (tmp_path / "full" / "transcoder" / f).read_bytes() == (
            tmp_path / "split" / "transcoder" / f
        ).read_bytes()
    ta, tb = (load_transcoders(str(tmp_path / n / "transcoder")) for n in ("full", "split"))
    assert all(torch.equal(p, q) for p, q in zip(ta.state_dict().values(), tb.state_dict().values()))
    assert resumed.fvu == full.fvu and resumed.top1_agreement == full.top1_agreement


def test_bad_inputs(tiny, tmp_path):
    model, tok, corpus = tiny
    with pytest.raises(CorpusError, match="no text"):
        train(model, tok, [], cfg(tmp_path), progress=False)
    with pytest.raises(CorpusError, match="no text"):
        train(model, tok, ["  ", "\n"], cfg(tmp_path), progress=False)
    with pytest.raises(CorpusError, match="fewer than one batch"):
        train(model, tok, ["texas ohio maine"], cfg(tmp_path), progress=False)
    (tmp_path / "afile").write_text("")
    with pytest.raises(OutputDirError, match="not writable"):
        train(model, tok, corpus, cfg(tmp_path, "afile/sub"), progress=False)
    with pytest.raises(ValueError, match="kind"):
        train(model, tok, corpus, cfg(tmp_path, kind="sae"), progress=False)
    # a checkpoint written for a d=32 model cannot be resumed on a d=16 model
    train(model, tok, corpus, cfg(tmp_path, "ck", steps=2), progress=False)
    other = make_model(len(tok), n_layers=2, d=16)
    with pytest.raises(TranscoderMismatchError, match="d_model=16"):
        train(other, tok, corpus, cfg(tmp_path, "ck", steps=2), progress=False, resume=True)
    with pytest.raises(FileExistsError, match="resume=True"):  # no silent overwrite of a run
        train(model, tok, corpus, cfg(tmp_path, "ck", steps=2), progress=False)
    # a changed recipe cannot be resumed either
    with pytest.raises(ValueError, match="n_features"):
        train(model, tok, corpus, cfg(tmp_path, "ck", steps=2, n_features=12), progress=False, resume=True)
    # an init transcoder of the wrong shape
    from circuit_trace.transcoders import Transcoder

    with pytest.raises(TranscoderMismatchError):
        train(
            model,
            tok,
            corpus,
            cfg(tmp_path, "init"),
            progress=False,
            init=Transcoder.random(2, 16, 24, input_hook="mlp.hook_in"),
        )


def test_resume_conflicts_say_whether_train_would_resume(tiny, tmp_path):
    model, tok, corpus = tiny
    assert resume_conflicts(cfg(tmp_path, "rc")) == []  # nothing on disk yet
    train(model, tok, corpus, cfg(tmp_path, "rc", steps=2), progress=False)
    changed = cfg(tmp_path, "rc", steps=2, n_features=12, lr=1e-3)
    assert resume_conflicts(changed) == ["n_features (checkpoint 24, now 12)", "lr (checkpoint 0.003, now 0.001)"]
    with pytest.raises(ValueError, match=r"n_features \(checkpoint 24, now 12\), lr"):
        train(model, tok, corpus, changed, progress=False, resume=True)
    longer = cfg(tmp_path, "rc", steps=3)  # more steps is a continuation, not a conflict
    assert resume_conflicts(longer) == []
    assert train(model, tok, corpus, longer, progress=False, resume=True).steps == 3
    # a checkpoint written before a field existed resumes as if it held today's value
    saved = dataclasses.asdict(longer)
    del saved["output_outlier_ratio"]
    assert resume_differences(saved, dataclasses.replace(longer, output_outlier_ratio=5.0)) == []
    assert resume_differences({**saved, "k": 7}, longer) == ["k (checkpoint 7, now 32)"]


def test_cpu_autocast_is_refused_without_native_bf16(tiny, tmp_path, monkeypatch):
    """On an AVX2-only CPU bf16 products are ~100x slower than float32: --autocast would only slow."""
    from circuit_trace.transcoders.training import trainer

    model, tok, corpus = tiny
    monkeypatch.setattr(trainer, "cpu_has_fast_bf16", lambda: False)
    with pytest.raises(ValueError, match="native bf16"):
        train(model, tok, corpus, cfg(tmp_path, "bf16", autocast=True, device="cpu"), progress=False)
    assert not (tmp_path / "bf16").exists()  # refused before anything was written
    # the default (autocast only on CUDA) and float32 are unaffected
    assert train(model, tok, corpus, cfg(tmp_path, "fp32", steps=2, device="cpu"), progress=False).completed


def test_cpu_autocast_warns_where_bf16_measures_no_faster(tiny, tmp_path, monkeypatch):
    """A CPU with native bf16 whose bf16 products are no faster than float32 (an Intel AVX-512 VM
    without AMX): --autocast trains, with a warning that says so; where bf16 is faster, no warning."""
    import warnings

    from circuit_trace.transcoders.training import trainer

    model, tok, corpus = tiny
    monkeypatch.setattr(trainer, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(trainer, "bf16_speedup", lambda: 0.7)
    with pytest.warns(UserWarning, match=r"0\.70x the speed of float32"):
        report = train(model, tok, corpus, cfg(tmp_path, "slow", steps=1, autocast=True, device="cpu"), progress=False)
    assert report.completed
    monkeypatch.setattr(trainer, "bf16_speedup", lambda: 2.9)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="--autocast")
        train(model, tok, corpus, cfg(tmp_path, "fast", steps=1, autocast=True, device="cpu"), progress=False)
    monkeypatch.undo()
    assert 0 < trainer.bf16_speedup(n=64, runs=1) < math.inf  # the real measurement runs


def test_init_from_transcoder_and_defaults(tiny, tmp_path):
    model, tok, corpus = tiny
    from circuit_trace.transcoders import Transcoder

    init = Transcoder.random(2, 32, 24, cross_layer=True, seed=2, input_hook="mlp.hook_in")
    report = train(model, tok, corpus, cfg(tmp_path, steps=1, lr=1e-12), progress=False, init=init)
    loaded = load_transcoders(report.transcoder_path)
    xs = torch.randn(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.reconstruct(xs), init.reconstruct(xs), rtol=1e-4, atol=1e-4)
    d = TrainConfig(kind="clt", n_features=4096)
    assert d.total_steps() == 2000 and 1e-4 < d.resolved_lr() < 1e-2 and d.activation == "jumprelu"
    assert TrainConfig(n_tokens=5000, batch_size=1000).total_steps() == 5


def test_train_from_args(tiny, tmp_path, capsys):
    model, tok, corpus = tiny
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    (tmp_path / "corpus.txt").write_text("\n\n".join(corpus))
    report = train_from_args(
        [
            "--model",
            str(tmp_path / "model"),
            "--corpus",
            str(tmp_path / "corpus.txt"),
            "--kind",
            "plt",
            "--features",
            "16",
            "--steps",
            "3",
            "--batch-size",
            "32",
            "--context-size",
            "16",
            "--out",
            str(tmp_path / "cli"),
            "--no-progress",
        ]
    )
    assert report.completed and report.kind == "plt" and (tmp_path / "cli" / "transcoder" / "config.yaml").exists()
    assert "PLT jumprelu F=16" in capsys.readouterr().out


def test_relu_with_skip_from_the_command_line(tiny, tmp_path, capsys):
    """`train --activation relu --skip`: a ReLU PLT with a learned skip trains, saves and loads back
    as what was asked for, and its sparsity penalty keeps features from all firing."""
    model, tok, corpus = tiny
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    (tmp_path / "corpus.txt").write_text("\n\n".join(corpus))
    args = ["--model", str(tmp_path / "model"), "--corpus", str(tmp_path / "corpus.txt"), "--kind", "plt"]
    args += ["--features", "16", "--steps", "12", "--batch-size", "32", "--context-size", "16", "--lr", "3e-3"]
    args += ["--activation", "relu", "--skip", "--out", str(tmp_path / "relu"), "--no-progress"]
    report = train_from_args(args)
    assert report.completed and report.activation == "relu"
    assert "PLT relu F=16" in capsys.readouterr().out
    loaded = load_transcoders(str(tmp_path / "relu" / "transcoder"))
    assert loaded.activation == "relu" and loaded.has_skip and not loaded.is_cross_layer
    assert loaded.W_skip is not None and float(loaded.W_skip.abs().sum()) > 0  # the skip was learned
    assert all(0 < f < 2 for f in report.fvu) and 0 < report.l0_total < 2 * 16


def test_short_documents_one_window_each(tiny, tmp_path):
    model, tok, _ = tiny
    docs = ["the capital of texas is austin", "ohio has columbus", "maine is small", "utah is big"] * 10
    report = train(model, tok, docs, cfg(tmp_path, steps=3, eval_tokens=6), progress=False)
    assert report.completed and report.eval_tokens == 2 * 3  # eval docs "maine is small", "utah is big"
