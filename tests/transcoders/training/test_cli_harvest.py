"""`circuit-trace harvest`, `train --cache --layers` and `merge-transcoders` from the command line."""

import json
import re

import pytest

from circuit_trace.cli import main
from circuit_trace.transcoders import load_transcoders
from circuit_trace.transcoders.training import ActivationCache


def test_harvest_train_subsets_merge(tiny, tmp_path, capsys):
    model, tok, corpus = tiny
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    (tmp_path / "corpus.txt").write_text("\n\n".join(corpus))
    common = ["--model", str(tmp_path / "model"), "--corpus", str(tmp_path / "corpus.txt"), "--no-progress"]
    assert (
        main(["harvest", *common, "--out", str(tmp_path / "cache"), "--context-size", "16", "--shard-tokens", "300"])
        == 0
    )
    assert "tokens, layers 2, bfloat16" in capsys.readouterr().out
    assert ActivationCache(tmp_path / "cache").info.complete
    train = ["train", *common, "--cache", str(tmp_path / "cache"), "--kind", "plt", "--features", "16"]
    train += ["--steps", "2", "--batch-size", "32", "--eval-tokens", "40"]
    for layers in ("0", "1"):
        assert main([*train, "--layers", layers, "--out", str(tmp_path / f"l{layers}")]) == 0
    assert main(["merge-transcoders", str(tmp_path / "l0"), str(tmp_path / "l1"), "--out", str(tmp_path / "m")]) == 0
    assert "PLT, 2 layers" in capsys.readouterr().out
    assert load_transcoders(str(tmp_path / "m")).n_layers == 2
    assert main(["merge-transcoders", str(tmp_path / "l0"), "--out", str(tmp_path / "m2")]) == 2
    assert "no run covers layer(s) [1]" in capsys.readouterr().err
    splice = ["merge-transcoders", str(tmp_path / "m"), str(tmp_path / "l1"), "--out", str(tmp_path / "m3")]
    assert main(splice) == 2 and "layer 1 is in runs 1 and 2" in capsys.readouterr().err
    assert main([*splice, "--replace"]) == 0 and "PLT, 2 layers" in capsys.readouterr().out
    scored = ["merge-transcoders", str(tmp_path / "l0"), str(tmp_path / "l1"), "--out", str(tmp_path / "m4")]
    scored += ["--eval-cache", str(tmp_path / "cache"), "--model", str(tmp_path / "model"), "--eval-tokens", "40"]
    assert main(scored) == 0
    assert re.search(r"held-out \(\d+ tokens of .*replacement KL [\d.]+ nats, top-1 [\d.]+ %", capsys.readouterr().out)
    ev = json.loads((tmp_path / "m4" / "eval.json").read_text())
    runs = [json.loads((tmp_path / f"l{layer}" / "report.json").read_text()) for layer in "01"]
    assert ev["fvu"] == pytest.approx([r["fvu"][0] for r in runs], rel=1e-5)  # each layer as its own run scored it
    assert ev["tokens"] == runs[0]["eval_tokens"] and ev["top1_agreement"] is not None
    assert load_transcoders(str(tmp_path / "m4")).n_layers == 2  # eval.json beside the set is ignored
    bad_cache = [*scored[:5], "--eval-cache", str(tmp_path / "nowhere")]
    bad_cache[4] = str(tmp_path / "m5")
    assert main(bad_cache) == 2 and not (tmp_path / "m5").exists()  # refused before merging
    assert main([*scored[:5], "--model", str(tmp_path / "model")]) == 2  # --model without --eval-cache
    assert "only used with --eval-cache" in capsys.readouterr().err
    bad = ["harvest", *common, "--out", str(tmp_path / "cache"), "--context-size", "8"]
    assert main(bad) == 2 and "other settings" in capsys.readouterr().err
