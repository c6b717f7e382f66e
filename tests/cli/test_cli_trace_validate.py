"""`circuit-trace trace`'s target, HTML and save options and `circuit-trace validate`: what they
print and write is what the Python API gives for the same settings."""

from __future__ import annotations

import json

import helpers
import pytest

import circuit_trace as ct
from circuit_trace.cli import EXIT_INPUT, EXIT_OK, main
from circuit_trace.interventions import ValidationReport

PROMPT = "w1 w5 w7 w9"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-trace")
    helpers.save_llama_and_clt(root)
    return root


@pytest.fixture(scope="module")
def rm(saved):
    return ct.load(str(saved / "model"), str(saved / "clt"), device="cpu")


def model_args(saved) -> list[str]:
    return ["--model", str(saved / "model"), "--transcoders", str(saved / "clt")]


def one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err and err.rstrip().endswith(lines[0]), err
    return lines[0]


def test_trace_targets_logit_diff_html_and_save(saved, rm, tmp_path, capsys):
    out, st = tmp_path / "g.json", tmp_path / "g.safetensors"
    args = ["--target", "w3", "--target", "w4", "--logit-diff", "w3", "w4", "--html", "--save", str(st)]
    code = main(["trace", PROMPT, *model_args(saved), "-q", "-o", str(out), *args])
    assert code == EXIT_OK
    text = capsys.readouterr().out
    expected = ct.attribute(
        rm, PROMPT, targets=["w3", "w4", ct.logit_difference(rm, "w3", "w4")], progress=False
    ).logit_nodes()
    assert text.startswith("targets:\n")
    for _, row in expected.iterrows():  # each target with its probability, the difference with its value
        shown = f"value={row['activation']:.4f}" if row["token_id"] < 0 else f"p={row['logit_prob']:.4f}"
        assert f"{row['token']!r:>16}  {shown}" in text
    saved_graph = ct.Graph.load(st)
    assert list(saved_graph.logit_nodes()["token"]) == list(expected["token"])
    assert f"nodes: {saved_graph.n_nodes} ->" in text  # the full graph is what --save keeps
    html = out.with_suffix(".html")
    assert f"wrote {html}" in text and "plotly" in html.read_text()[:100_000].lower()
    doc = json.loads(out.read_text())
    assert sum(n["feature_type"] == "logit" for n in doc["nodes"]) == 3  # the three targets, nothing else


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "w3 w4"], "exactly one token"),
        (["--logit-diff", "w3", "w4 w5"], "exactly one token"),
    ],
)
def test_trace_bad_targets(saved, tmp_path, capsys, args, message):
    code = main(["trace", PROMPT, *model_args(saved), "-q", "-o", str(tmp_path / "g.json"), *args])
    assert code == EXIT_INPUT and message in one_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    "save, message", [("g.pt", "must end in .safetensors"), ("nodir/g.safetensors", "does not exist")]
)
def test_trace_bad_save_path_fails_before_loading(tmp_path, capsys, save, message):
    code = main(
        ["trace", PROMPT, "--model", str(tmp_path / "none"), "-o", str(tmp_path / "g.json")]
        + ["--save", str(tmp_path / save)]
    )
    assert code == EXIT_INPUT and message in one_error(capsys.readouterr().err)


def test_validate_a_saved_graph_prints_and_saves_the_api_report(saved, rm, tmp_path, capsys):
    graph = ct.attribute(rm, PROMPT, progress=False)
    graph.save(tmp_path / "g.safetensors")
    report_json, fig = tmp_path / "r.json", tmp_path / "r.html"
    args = ["--graph", str(tmp_path / "g.safetensors"), "--json", str(report_json), "--html", str(fig)]
    code = main(["validate", *model_args(saved), "--max-sources", "8", "--n-pairs", "40", *args])
    assert code == EXIT_OK
    text = capsys.readouterr().out
    expected = ct.validate(rm, graph, max_sources=8, n_pairs=40)
    for _, r in expected.summary.iterrows():
        assert f"{r['pairs']:<18}{r['n']:>5}  {r['spearman_direct']:>15.3f}  {r['spearman_total']:>14.3f}" in text
    assert f"goal {expected.goal}" in text and "single-feature ablations" in text
    assert ("why: `--diagnose`" in text) == (expected.passed is False)  # the way on, only below the goal
    assert "note: a pruned graph" not in text  # the full graph
    loaded = ValidationReport.load(report_json)
    assert loaded.pairs[["source", "target"]].equals(expected.pairs[["source", "target"]])
    assert "plotly" in fig.read_text()[:100_000].lower()


def test_validate_traces_a_prompt(saved, capsys):
    code = main(["validate", PROMPT, *model_args(saved), "--max-sources", "4", "-q"])
    assert code == EXIT_OK
    assert "Spearman" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        ([PROMPT, "--graph", "g.safetensors"], "not both"),
        ([], "not both and not neither"),
    ],
)
def test_validate_needs_a_prompt_or_a_graph(saved, capsys, args, message):
    assert main(["validate", *model_args(saved), *args]) == EXIT_INPUT
    assert message in one_error(capsys.readouterr().err)


def test_validate_freeze_all_is_a_diagnosis_with_exact_predictions(saved, capsys):
    code = main(["validate", PROMPT, *model_args(saved), "--max-sources", "4", "-q", "--freeze", "all"])
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert "held at the clean prompt's values in the real model: norms, attention, errors, choice" in out
    assert "cannot be compared with the goal" in out and "nothing frozen" in out
    assert "Spearman (total) 1.000" in out  # every part frozen: the graph is exact
    assert "leaves out" not in out  # it holds every active feature


def test_validate_freeze_all_says_what_a_capped_graph_leaves_out(saved, capsys):
    args = ["--max-sources", "4", "-q", "--freeze", "all", "--max-feature-nodes", "5"]
    assert main(["validate", PROMPT, *model_args(saved), *args]) == EXIT_OK
    assert "note: the graph leaves out" in capsys.readouterr().out


@pytest.mark.parametrize("freeze, message", [("choice", "needs 'errors'"), ("norms,mlp", "cannot freeze mlp")])
def test_validate_bad_freeze_fails_before_loading(tmp_path, capsys, freeze, message):
    missing = ["--model", str(tmp_path / "no-model"), "--transcoders", str(tmp_path / "no-tc")]
    assert main(["validate", PROMPT, *missing, "--freeze", freeze]) == EXIT_INPUT
    assert message in one_error(capsys.readouterr().err)


def test_validate_diagnose_prints_the_api_table(saved, rm, capsys):
    code = main(["validate", PROMPT, *model_args(saved), "--max-sources", "4", "--n-pairs", "20", "-q", "--diagnose"])
    assert code == EXIT_OK
    out = capsys.readouterr().out
    graph = ct.attribute(rm, PROMPT, progress=False)
    table = ct.diagnose_validation(rm, graph, max_sources=4, n_pairs=20, progress=False).table
    for name, r in zip(["nothing", "+ norms", "+ attention", "+ errors", "+ choice"], table.to_dict("records")):
        assert f"  {name:<38}{r['ff']:>7.3f}{r['fl']:>7.3f}" in out
    assert table["ff"].iloc[-1] > 0.999  # everything frozen: exact
    assert "leaves out" not in out  # the graph holds every active feature
    capped = ["--max-sources", "4", "--n-pairs", "20", "-q", "--diagnose", "--max-feature-nodes", "5"]
    assert main(["validate", PROMPT, *model_args(saved), *capped]) == EXIT_OK
    assert "note: the graph leaves out" in capsys.readouterr().out


@pytest.mark.parametrize("extra", [["--freeze", "norms"], ["--json", "r.json"], ["--html", "r.html"]])
def test_validate_diagnose_refuses_other_outputs_before_loading(tmp_path, capsys, extra):
    missing = ["--model", str(tmp_path / "no-model"), "--transcoders", str(tmp_path / "no-tc")]
    assert main(["validate", PROMPT, *missing, "--diagnose", *extra]) == EXIT_INPUT
    assert "not with --freeze, --json or --html" in one_error(capsys.readouterr().err)


def test_validate_bad_graph_file(saved, tmp_path, capsys):
    (tmp_path / "g.safetensors").write_text("not a graph")
    code = main(["validate", "--graph", str(tmp_path / "g.safetensors"), *model_args(saved)])
    assert code == EXIT_INPUT and "--graph" in one_error(capsys.readouterr().err)


@pytest.mark.parametrize("diagnose", [[], ["--diagnose"]])
def test_validate_a_pruned_json_says_it_is_pruned(saved, rm, tmp_path, capsys, diagnose):
    graph = ct.attribute(rm, PROMPT, progress=False)
    graph.to_json(tmp_path / "g.json", pruned=ct.prune(graph, node_threshold=0.9, edge_threshold=0.99))
    args = ["--graph", str(tmp_path / "g.json"), *model_args(saved), "--max-sources", "4", "-q", *diagnose]
    code = main(["validate", *args])
    assert code == EXIT_OK
    assert "note: a pruned graph" in capsys.readouterr().out


def test_trace_export_thresholds_set_what_the_json_holds(saved, rm, tmp_path, capsys):
    wide, tight = tmp_path / "wide.json", tmp_path / "tight.json"
    assert main(["trace", PROMPT, *model_args(saved), "-q", "-o", str(wide)]) == EXIT_OK
    view = ["--export-node-threshold", "0.8", "--export-edge-threshold", "0.98"]
    assert main(["trace", PROMPT, *model_args(saved), "-q", "-o", str(tight), *view]) == EXIT_OK
    assert f"wrote {tight} (" in capsys.readouterr().out
    pruned = ct.prune(ct.attribute(rm, PROMPT, progress=False)).graph  # the view: 0.8 / 0.98
    doc, wide_doc = json.loads(tight.read_text()), json.loads(wide.read_text())
    assert (len(doc["nodes"]), len(doc["links"])) == (pruned.n_nodes, pruned.n_edges)
    assert len(wide_doc["links"]) > len(doc["links"])  # the default keeps room to loosen the view


def test_trace_export_threshold_below_the_view_fails_before_loading(tmp_path, capsys):
    args = ["--model", str(tmp_path / "none"), "-o", str(tmp_path / "g.json"), "--export-edge-threshold", "0.9"]
    assert main(["trace", PROMPT, *args]) == EXIT_INPUT
    assert "--export-edge-threshold 0.9 is below --edge-threshold 0.98" in one_error(capsys.readouterr().err)
