"""Shared prompts and comparisons for the sweep tests (organism prompts; no Ray needed here)."""

from __future__ import annotations

import json
from pathlib import Path

from circuit_trace import Graph

CITIES = [
    "Dallas",
    "Oakland",
    "Seattle",
    "Miami",
    "Houston",
    "Tulsa",
    "Phoenix",
    "Denver",
    "Boston",
    "Atlanta",
    "Portland",
    "Chicago",
]
GOOD = [f"Fact: the capital of the state containing {city} is" for city in CITIES]
TOO_LONG = "Texas " * 80  # the organism's context is 64 tokens
BAD_TARGET = {"prompt": "The capital of Ohio is", "targets": [" Columbus Columbus"]}  # two tokens


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def prompts_file(directory: Path, *, bad: bool) -> Path:
    """The 12 organism prompts, plus (bad=True) a too-long prompt and a bad target between them."""
    records: list = [{"prompt": p} for p in GOOD]
    if bad:
        records[3:3] = [{"prompt": TOO_LONG}, BAD_TARGET]
    return write_jsonl(directory / ("prompts-bad.jsonl" if bad else "prompts.jsonl"), records)


def load_graph(out: Path, rel: str) -> Graph:
    graph = Graph.load(out / rel)
    graph.settings.get("stats", {}).pop("seconds", None)  # wall time: the only field allowed to differ
    return graph


def assert_same_graphs(a_out: Path, a_summary, b_out: Path, b_summary) -> None:
    """Graph for graph: same prompts, same errors, every graph file equal in every field (rows
    matched by prompt and targets, since line numbers may differ between the two files)."""
    a, b = a_summary.set_index(["prompt", "targets"]), b_summary.set_index(["prompt", "targets"])
    assert sorted(a.index) == sorted(b.index)
    assert (a["error"] == b.loc[a.index, "error"]).all()
    for key, row in a[a["error"] == ""].iterrows():
        assert load_graph(a_out, row["graph_file"]).equals(load_graph(b_out, b.at[key, "graph_file"])), key
        assert (
            json.loads((a_out / row["json_file"]).read_text())["nodes"]
            == json.loads((b_out / b.at[key, "json_file"]).read_text())["nodes"]
        ), key
