"""In-process sweeps on the embedded organism: outputs, tables, resume, bad prompts, CLI."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from sweep_fixtures import GOOD, load_graph, prompts_file, write_jsonl

import circuit_trace as ct
from circuit_trace.cli import main
from circuit_trace.sweeps import SweepInputError, SweepOptions, read_prompts, sweep
from circuit_trace.sweeps.tables import read_table


@pytest.fixture(scope="module")
def model():
    return ct.load()


@pytest.fixture(scope="module")
def done(tmp_path_factory, model):
    """One in-process sweep of 12 good and 2 bad organism prompts."""
    d = tmp_path_factory.mktemp("local")
    return sweep(prompts_file(d, bad=True), d / "out", model=model, progress=False)


def test_every_prompt_has_a_row_graph_and_json(done):
    s = done.summary
    assert len(s) == 14 and done.n_traced == 14
    good = s[s["error"] == ""]
    assert good["prompt"].tolist() == GOOD
    assert (good["top_token"] == good["top_token"]).all() and (good["top_prob"] > 0.5).all()
    for _, row in good.iterrows():
        g = load_graph(done.out, row["graph_file"])  # the pruned graph
        assert (g.n_nodes, g.n_edges) == (row["n_nodes_pruned"], row["n_edges_pruned"])
        assert g.prompt == row["prompt"] and row["graph_bytes"] == (done.out / row["graph_file"]).stat().st_size
        meta = json.loads((done.out / row["json_file"]).read_text())["metadata"]
        assert (meta["slug"], meta["prompt"]) == (row["key"], row["prompt"])
        assert row["n_nodes"] > row["n_nodes_pruned"] and 0 < row["replacement"] <= row["completeness"] <= 1


def test_summary_row_matches_a_direct_attribution(done, model):
    row = done.summary.iloc[0]
    graph = ct.attribute(model, row["prompt"], progress=False)
    top = graph.logit_nodes().iloc[0]
    assert (row["top_token"], row["n_nodes"], row["n_edges"]) == (top["token"], graph.n_nodes, graph.n_edges)
    assert row["top_prob"] == pytest.approx(top["logit_prob"], rel=1e-6)
    assert row["replacement"] == pytest.approx(graph.scores().replacement, rel=1e-6)


def test_bad_prompts_are_recorded_not_fatal(done):
    errors = done.summary.set_index("index")["error"]
    assert errors[4].startswith("PromptError") and "context" in errors[4]
    assert errors[5].startswith("TargetError") and "one token" in errors[5]
    assert done.n_failed == 2 and (errors.drop([4, 5]) == "").all()


def test_summary_and_feature_tables_on_disk(done):
    on_disk = read_table(done.summary_path)
    assert on_disk["key"].tolist() == done.summary["key"].tolist()
    assert on_disk["error"].tolist() == done.summary["error"].tolist()
    np.testing.assert_allclose(on_disk["top_prob"].astype(float), done.summary["top_prob"].astype(float))
    assert (
        read_table(done.features_path)[["layer", "feature", "n_graphs"]].values.tolist()
        == done.features[["layer", "feature", "n_graphs"]].values.tolist()
    )


def test_feature_table_counts_graphs_and_influence(done):
    """Recount from the saved pruned graphs; influences are the full graphs' node influence."""
    counts: dict = {}
    for rel in done.summary.loc[done.summary["error"] == "", "graph_file"]:
        feats = load_graph(done.out, rel).feature_nodes()
        for key in set(zip(feats["layer"], feats["feature"])):
            counts[key] = counts.get(key, 0) + 1
    table = done.features.set_index(["layer", "feature"])
    assert dict(zip(table.index, table["n_graphs"])) == counts
    assert (table["mean_influence"] > 0).all() and (table["max_influence"] >= table["mean_influence"] - 1e-12).all()
    assert 1 < table["n_graphs"].max() <= 12  # some features recur across the two-hop graphs


def test_rerun_skips_everything(done, model):
    before = {p: p.stat().st_mtime_ns for p in done.out.rglob("*") if p.is_file() and p.parent != done.out}
    again = sweep(done.out.parent / "prompts-bad.jsonl", done.out, model=model, progress=False)
    assert (again.n_traced, again.n_skipped) == (0, 14)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert again.summary.equals(done.summary)


def test_resume_traces_only_missing_and_retry_failed(tmp_path, model):
    f = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": GOOD[0]}, {"prompt": GOOD[1]}, {"prompt": GOOD[2], "targets": ["?!?!"]}]
    )
    first = sweep(f, tmp_path / "out", model=model, progress=False)
    (tmp_path / "out" / "rows" / f"{first.summary.at[1, 'key']}.json").unlink()  # as if killed mid-prompt
    second = sweep(f, tmp_path / "out", model=model, progress=False)
    assert (second.n_traced, second.n_skipped) == (1, 2)
    third = sweep(f, tmp_path / "out", model=model, progress=False, retry_failed=True)
    assert (third.n_traced, third.n_failed) == (1, 1)


def test_other_settings_refuse_the_directory(tmp_path, model):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": GOOD[0]}])
    sweep(f, tmp_path / "out", model=model, progress=False)
    with pytest.raises(SweepInputError, match="other settings"):
        sweep(f, tmp_path / "out", model=model, progress=False, options=SweepOptions(node_threshold=0.5))


def test_full_graph_option_saves_the_unpruned_graph(tmp_path, model):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": GOOD[0]}])
    res = sweep(f, tmp_path / "out", model=model, progress=False, options=SweepOptions(save_full_graph=True))
    row = res.summary.iloc[0]
    assert load_graph(res.out, row["graph_file"]).n_nodes == row["n_nodes"]


def test_gzip_json_option(tmp_path, model, done):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": GOOD[0]}])
    res = sweep(f, tmp_path / "out", model=model, progress=False, options=SweepOptions(gzip_json=True))
    row = res.summary.iloc[0]
    assert row["json_file"].endswith(".json.gz") and row["json_bytes"] < done.summary.iloc[0]["json_bytes"]
    assert json.loads(gzip.decompress((res.out / row["json_file"]).read_bytes()))["metadata"]["prompt"] == GOOD[0]


def test_read_prompts_formats_and_errors(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\nsecond prompt\n")
    specs = read_prompts(txt)
    assert [(s.index, s.prompt, s.targets) for s in specs] == [(1, "first prompt", ()), (3, "second prompt", ())]
    assert len({s.key for s in specs}) == 2
    jl = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "targets": [" b", 7]}, {"prompt": "c", "targets": " d"}])
    assert [s.targets for s in read_prompts(jl)] == [(" b", 7), (" d",)]
    for text, msg in (
        ("{bad json\n", "not valid JSON"),
        ('{"text": "x"}\n', 'string "prompt"'),
        ('{"prompt": "x", "targets": [[1]]}\n', "list of tokens"),
        ("\n\n", "no prompt"),
    ):
        (tmp_path / "x.jsonl").write_text(text)
        with pytest.raises(SweepInputError, match=msg):
            read_prompts(tmp_path / "x.jsonl")
    with pytest.raises(SweepInputError, match="does not exist"):
        read_prompts(tmp_path / "missing.txt")


def test_cli_sweep(tmp_path, capsys):
    f = tmp_path / "p.txt"
    f.write_text(f"{GOOD[0]}\n{'Texas ' * 80}\n")
    assert main(["sweep", str(f), "--out", str(tmp_path / "out"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "2 prompts: 2 traced, 0 already done, 1 failed" in out and "line 2: PromptError" in out
    assert main(["sweep", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o2"), "-q"]) == 2
    assert main(["sweep", str(f), "--out", str(tmp_path / "new" / "sub" / "dir"), "-q"]) == 0  # parents made
    assert (tmp_path / "new" / "sub" / "dir" / "sweep.json").is_file()
    assert main(["sweep", str(f), "--out", str(f), "-q"]) == 2  # a file, not a directory
    assert "is a file, not a directory" in capsys.readouterr().err
    assert main(["sweep", str(f), "--out", str(tmp_path / "o3"), "--model", str(tmp_path / "nomodel"), "-q"]) == 3
    assert "error:" in capsys.readouterr().err
