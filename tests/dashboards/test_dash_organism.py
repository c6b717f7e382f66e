"""The organism's shipped dashboards: `trace` writes a graph's details into its own transcoder's
folder (a PLT graph never shows the CLT's details), `graph.nodes` carries the labels' agreement
scores, and no label in the demo graph names a state that its own evidence contradicts."""

from __future__ import annotations

import json
import math

import pytest

import circuit_trace as ct
from circuit_trace.cli import main
from circuit_trace.dashboards import open_dashboards, transcoder_fingerprint
from circuit_trace.organisms import ORGANISM_DIR
from circuit_trace.organisms.demo import DEMO_PROMPT
from circuit_trace.organisms.labels import states_in

PLT_DIR = ORGANISM_DIR.parent / "plt"


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    out = tmp_path_factory.mktemp("graphs")
    assert main(["trace", DEMO_PROMPT, "-o", str(out / "clt.json"), "-q", "--device", "cpu"]) == 0
    assert (
        main(
            ["trace", DEMO_PROMPT, "-o", str(out / "plt.json"), "-q", "--device", "cpu", "--transcoders", str(PLT_DIR)]
        )
        == 0
    )
    return out


def _features(data):
    return [n for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"]


@pytest.mark.parametrize("kind", ["clt", "plt"])
def test_trace_writes_details_of_its_own_transcoder(traced, kind):
    rm = ct.load(None, str(ORGANISM_DIR.parent / kind), device="cpu")
    data = json.loads((traced / f"{kind}.json").read_text())
    base = data["metadata"]["feature_details"]["feature_json_base_url"]
    assert base == f"features/circuit-trace--states-{kind}"
    feats = _features(data)
    assert feats
    fp = transcoder_fingerprint(rm.transcoders)
    for node in feats:
        d = json.loads((traced / base / f"{node['feature']}.json").read_text())
        assert d["transcoder_id"] == f"circuit-trace/states-{kind}" and d["transcoder_fingerprint"] == fp
        assert d["index"] == node["feature"]


def test_plt_graph_never_shows_clt_details(traced):
    """Both graphs sit in one folder; the PLT graph's detail folder holds only PLT details, and none
    of its feature ids resolves to a CLT file (the CLT folder is never where it looks)."""
    clt = json.loads((traced / "clt.json").read_text())["metadata"]["feature_details"]["feature_json_base_url"]
    plt = json.loads((traced / "plt.json").read_text())["metadata"]["feature_details"]["feature_json_base_url"]
    assert clt != plt and (traced / clt).is_dir() and (traced / plt).is_dir()
    ids = {json.loads(p.read_text())["transcoder_id"] for p in (traced / plt).glob("*.json")}
    assert ids == {"circuit-trace/states-plt"}
    assert not list((traced / "features").glob("*.json"))  # nothing flat that any graph could fall back on


def test_nodes_carry_label_scores():
    rm = ct.load(device="cpu")
    g = ct.attribute(rm, DEMO_PROMPT, progress=False)
    feats = g.feature_nodes()
    labelled = feats[feats["label"] != ""]
    assert len(labelled) and "label_score" in g.nodes.columns
    assert all(0.0 <= s <= 1.0 for s in labelled["label_score"])
    assert all(math.isnan(s) for s in g.nodes.loc[g.nodes["kind"] != "feature", "label_score"])


def _top_named(pairs):
    named = [(c, s) for c, s in pairs if c is not None]
    return (named[0][0] if named else None), sum(s for _, s in named)


def test_demo_labels_never_contradict_their_evidence(traced):
    data = json.loads((traced / "clt.json").read_text())
    reader = open_dashboards(ORGANISM_DIR.parent / "clt" / "features")
    checked = 0
    for node in _features(data):
        d = reader.by_index(node["feature"])
        assert node.get("clerp", "") == d["label"]
        named = states_in(d["label"])
        if not named:
            continue
        assert len(set(named)) == 1, d["label"]
        for source in ("context_concepts", "logit_concepts"):
            top, mass = _top_named(d["label_evidence"][source])
            if mass >= 0.3:  # the source has a say: its leading state must be the label's
                assert top == named[0], (d["label"], source, d["label_evidence"][source])
        checked += 1
    # and in the whole CLT set, no state-naming label is of kind "mixed"
    labels = json.loads((ORGANISM_DIR.parent / "clt" / "features" / "labels.json").read_text())["labels"]
    assert all(not states_in(v["label"]) for v in labels.values() if v["kind"] == "mixed")
