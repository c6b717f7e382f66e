"""`circuit-trace features` on a saved tiny model: bad input exits 2 with one line; a run writes the
dashboards beside the transcoders, and `trace` then writes the graph's details where its JSON says."""

from __future__ import annotations

import json

import helpers
import pytest

from circuit_trace.cli import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    rm = helpers.make_replacement("llama", "plt")
    rm.model.save_pretrained(root / "model")
    helpers.tokenizer().save_pretrained(root / "model")
    rm.transcoders.save(str(root / "tc"))
    (root / "corpus.txt").write_text("\n".join(helpers.random_prompt(s) for s in range(12)) + "\n")
    return root


def test_bad_input_exits_2(saved, tmp_path, capsys):
    args = ["--model", str(saved / "model"), "--transcoders", str(saved / "tc"), "-q"]
    assert main(["features", str(tmp_path / "missing.txt"), *args]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["features", str(saved / "corpus.txt"), "-o", str(tmp_path / "no" / "out"), *args]) == 2
    with pytest.raises(SystemExit) as exc:  # argparse refuses it before anything runs
        main(["features", str(saved / "corpus.txt"), "--ctx-len", "0", *args])
    assert exc.value.code == 2


def test_features_then_trace_shows_details(saved, tmp_path, capsys):
    args = ["--model", str(saved / "model"), "--transcoders", str(saved / "tc"), "--device", "cpu"]
    assert main(["features", str(saved / "corpus.txt"), "--ctx-len", "8", "--json", "-q", *args]) == 0
    out = capsys.readouterr().out
    assert "features" in out and str(saved / "tc" / "features") in out
    assert (saved / "tc" / "features" / "index.json.gz").is_file()
    assert len(list((saved / "tc" / "features" / "json").glob("*.json"))) == 3 * 48
    graph = tmp_path / "g.json"
    assert (
        main(["trace", helpers.PROMPT, "-o", str(graph), "-q", "--node-threshold", "1", "--edge-threshold", "1", *args])
        == 0
    )  # random weights: keep every node
    assert "feature-detail files" in capsys.readouterr().out
    data = json.loads(graph.read_text())
    base = tmp_path / data["metadata"]["feature_details"]["feature_json_base_url"]
    feats = [n for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert feats and all((base / f"{n['feature']}.json").is_file() for n in feats)
