"""`circuit-trace train --cache DIR` from a harvested activation cache: no --model or --corpus needed
(the cache's metadata names the model), the transcoder still records its model, a --model that is
not the cache's model and an incomplete or corrupt cache are one-line bad-input errors (exit 2)
before anything trains."""

from __future__ import annotations

import json
import shutil

import helpers
import numpy as np
import pytest
import yaml

from circuit_trace.cli import EXIT_INPUT, EXIT_LOAD, EXIT_OK, main
from circuit_trace.transcoders.training import ActivationCache


@pytest.fixture(scope="module")
def harvested(tmp_path_factory):
    """A tiny Llama saved as `tiny-llama`, its corpus, and a complete 3-shard cache of it."""
    root = tmp_path_factory.mktemp("cli-train-cache")
    helpers.make_hf_model("llama", n_layers=2, seed=3).save_pretrained(root / "tiny-llama")
    helpers.tokenizer().save_pretrained(root / "tiny-llama")
    words = [f"w{i}" for i in range(3, 60)]
    docs = [" ".join(words[(7 * k + j) % len(words)] for j in range(12)) for k in range(40)]
    (root / "corpus.txt").write_text("\n\n".join(docs))
    argv = ["harvest", "--model", str(root / "tiny-llama"), "--corpus", str(root / "corpus.txt")]
    argv += ["--out", str(root / "cache"), "--context-size", "8", "--shard-tokens", "120", "--no-progress"]
    assert main(argv) == EXIT_OK
    return root


def train_argv(cache, out, *extra: str) -> list[str]:
    argv = ["train", "--cache", str(cache), "--kind", "plt", "--features", "16", "--steps", "3"]
    return [*argv, "--batch-size", "32", "--eval-tokens", "32", "--out", str(out), "--no-progress", *extra]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert err.rstrip().endswith(lines[0]), err
    return lines[0]


def test_the_cache_metadata_names_model_layers_hooks_and_tokens(harvested):
    meta = json.loads((harvested / "cache" / "cache.json").read_text())
    assert meta["model"] == "tiny-llama" and len(meta["model_hash"]) == 64
    assert (meta["layers"], meta["n_model_layers"], meta["d_model"]) == ([0, 1], 2, 32)
    assert (meta["input_hook"], meta["output_hook"]) == ("mlp.hook_in", "hook_mlp_out")
    assert meta["complete"] and len(meta["shards"]) >= 3
    assert meta["n_tokens"] == int((ActivationCache(harvested / "cache").lengths - 1).clamp_min(0).sum())


def test_train_from_the_cache_alone(harvested, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(harvested / "cache", out)) == EXIT_OK, capsys.readouterr().err
    said = capsys.readouterr().out
    meta = json.loads((harvested / "cache" / "cache.json").read_text())
    assert f"model tiny-llama, weights {meta['model_hash'][:12]}; layers 0-1 of 2, d_model 32" in said
    assert f"mlp.hook_in -> hook_mlp_out, {meta['n_tokens']} tokens, bfloat16" in said
    assert "top-1 n/a" in said  # no model: no replacement metrics
    cfg = yaml.safe_load((out / "transcoder" / "config.yaml").read_text())
    assert cfg["model_name"] == "tiny-llama" and cfg["n_layers"] == 2
    report = json.loads((out / "report.json").read_text())
    assert (report["model"], report["model_hash"]) == ("tiny-llama", meta["model_hash"])
    assert report["completed"] and report["replacement_kl"] is None and len(report["fvu"]) == 2


def test_train_from_the_cache_with_its_own_model_measures_the_replacement(harvested, tmp_path, capsys):
    out = tmp_path / "run"
    argv = train_argv(harvested / "cache", out, "--model", str(harvested / "tiny-llama"))
    assert main(argv) == EXIT_OK, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["replacement_kl"] is not None and 0 <= report["top1_agreement"] <= 1
    assert yaml.safe_load((out / "transcoder" / "config.yaml").read_text())["model_name"] == "tiny-llama"


def test_corpus_and_bos_with_a_cache_are_said_to_be_unused(harvested, tmp_path, capsys):
    argv = train_argv(harvested / "cache", tmp_path / "run", "--corpus", str(harvested / "corpus.txt"))
    assert main([*argv, "--bos", "none"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "note: --corpus is not used with --cache" in err and "note: --bos is not used" in err


@pytest.mark.parametrize("kind", ["same-name-other-weights", "other-shape"])
def test_a_model_that_is_not_the_cache_s_is_refused(harvested, tmp_path, capsys, kind):
    layers, seed = (2, 4) if kind == "same-name-other-weights" else (3, 3)
    other = tmp_path / "models" / "tiny-llama"  # same directory name, so the same model id
    helpers.make_hf_model("llama", n_layers=layers, seed=seed).save_pretrained(other)
    helpers.tokenizer().save_pretrained(other)
    out = tmp_path / "run"
    assert main(train_argv(harvested / "cache", out, "--model", str(other))) == EXIT_INPUT
    line = one_error_line(capsys)
    assert "was harvested from another model (tiny-llama" in line
    assert ("has other weights" in line) == (kind == "same-name-other-weights")
    assert not out.exists()  # refused before anything was trained or written


def truncate(path):
    path.write_bytes(path.read_bytes()[:-40])


def spoil(cache, how: str) -> str:
    """Damage a copy of a cache; the words its error must say."""
    meta = cache / "cache.json"
    if how == "no-metadata":
        meta.unlink()
        return "is not an activation cache (no cache.json)"
    if how == "metadata-not-json":
        meta.write_text(meta.read_text()[:50])
        return "cache.json is corrupt"
    if how == "metadata-missing-field":
        d = json.loads(meta.read_text())
        del d["d_model"]
        meta.write_text(json.dumps(d))
        return "cache.json is corrupt"
    if how == "metadata-shard-rows":
        d = json.loads(meta.read_text())
        d["shards"][1]["rows"][0] += 1
        meta.write_text(json.dumps(d))
        return "shard_00001 holds rows"
    if how == "metadata-shard-malformed":
        d = json.loads(meta.read_text())
        del d["shards"][0]["windows"]
        meta.write_text(json.dumps(d))
        return "a shard entry in cache.json is malformed"
    if how == "incomplete":
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "complete": False}))
        return "is incomplete: run the same harvest again"
    if how == "shard-missing":
        (cache / "shard_00001.y.npy").unlink()
        return "is corrupt: cannot read shard_00001.y.npy"
    if how == "shard-truncated":
        truncate(cache / "shard_00002.x.npy")
        return "is corrupt: cannot read shard_00002.x.npy"
    if how == "shard-wrong-shape":
        np.save(cache / "shard_00000.norms.npy", np.zeros((3, 2, 2), np.float32))
        return "shard_00000.norms.npy is float32 [3, 2, 2], expected"
    if how == "windows-changed":
        w = np.load(cache / "windows.npy")
        w[0, 1] += 1
        np.save(cache / "windows.npy", w)
        return "its windows do not match the fingerprint"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "no-metadata",
        "metadata-not-json",
        "metadata-missing-field",
        "metadata-shard-rows",
        "metadata-shard-malformed",
        "incomplete",
        "shard-missing",
        "shard-truncated",
        "shard-wrong-shape",
        "windows-changed",
    ],
)
def test_an_incomplete_or_corrupt_cache_is_one_line_and_exit_2(harvested, tmp_path, capsys, how):
    cache = tmp_path / "cache"
    shutil.copytree(harvested / "cache", cache)
    words = spoil(cache, how)
    out = tmp_path / "run"
    # checked before the model loads: a model that cannot load would be exit 3
    code = main(train_argv(cache, out, "--model", str(tmp_path / "no-such-model")))
    line = one_error_line(capsys)
    assert code == EXIT_INPUT and words in line, line
    assert not out.exists()


def test_without_a_cache_model_and_corpus_are_needed(harvested, tmp_path, capsys):
    argv = train_argv(harvested / "cache", tmp_path / "run")
    argv = argv[:1] + argv[3:]  # no --cache
    assert main([*argv, "--corpus", str(harvested / "corpus.txt")]) == EXIT_INPUT
    assert "train needs --model and --corpus, or --cache DIR" in one_error_line(capsys)
    assert main([*argv, "--model", str(harvested / "tiny-llama")]) == EXIT_INPUT
    assert "train needs --model and --corpus" in one_error_line(capsys)
    assert main([*argv, "--model", str(tmp_path / "nothing"), "--corpus", "c.txt"]) == EXIT_LOAD
    assert not (tmp_path / "run").exists()
