"""Save/load, Neuronpedia JSON, networkx and pandas exporters."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
from graphs_toy import E1, ERR, F2, L0, L1, make_toy_graph

from circuit_trace.graphs import Graph, cantor_unpair, load_json, random_graph
from circuit_trace.graphs.neuronpedia import SCHEMA_PATH, to_neuronpedia

REFERENCE_SCHEMA = Path("/work/shared/reference/neuronpedia-graph-schema.json")
FEATURE_TYPES = {"cross layer transcoder", "mlp reconstruction error", "embedding", "logit"}


def reference_validator() -> jsonschema.Draft7Validator:
    path = REFERENCE_SCHEMA if REFERENCE_SCHEMA.exists() else SCHEMA_PATH
    return jsonschema.Draft7Validator(json.loads(path.read_text()))


@pytest.mark.skipif(not REFERENCE_SCHEMA.exists(), reason="reference schema not beside the repo")
def test_packaged_schema_is_the_reference():
    assert json.loads(SCHEMA_PATH.read_text()) == json.loads(REFERENCE_SCHEMA.read_text())


# ------------------------------------------------------------------ save / load
@pytest.mark.parametrize("sparse", [False, True])
def test_save_load_round_trip(tmp_path, sparse):
    g = random_graph(3, 5, 60, seed=3, sparse=sparse)
    g.settings["nested"] = {"a": [1, 2.5, "x"], "np": np.float32(0.5)}
    path = tmp_path / "g.safetensors"
    g.save(path)
    h = Graph.load(path)
    g.settings["nested"]["np"] = 0.5  # numpy scalars come back as plain floats
    assert h.equals(g)
    assert h.is_sparse == sparse
    assert os.listdir(tmp_path) == ["g.safetensors"]  # no temp file left behind
    # plain safetensors: an 8-byte little-endian header length, then the JSON header
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert header["__metadata__"]["format"] == "circuit_trace.graph"


def test_save_load_toy_and_pruned(tmp_path, toy_graph):
    toy_graph.save(tmp_path / "toy.st")
    assert Graph.load(tmp_path / "toy.st").equals(toy_graph)
    pruned = toy_graph.prune(0.7, 0.6).graph
    pruned.save(tmp_path / "pruned.st")
    assert Graph.load(tmp_path / "pruned.st").equals(pruned)


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "g.st"
    random_graph(2, 4, 10, seed=0).save(path)
    g2 = random_graph(2, 4, 20, seed=1)
    g2.save(path)
    assert Graph.load(path).equals(g2)


def test_save_refuses_a_json_name(tmp_path):
    """A binary file named .json would fail in every JSON viewer: point at to_json instead."""
    with pytest.raises(ValueError, match="to_json"):
        random_graph(2, 4, 10, seed=0).save(tmp_path / "g.JSON")
    assert not list(tmp_path.iterdir())


def test_load_rejects_other_files(tmp_path):
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3)}, str(tmp_path / "other.st"))
    with pytest.raises(ValueError):
        Graph.load(tmp_path / "other.st")


def test_graph_validates_its_fields():
    g = make_toy_graph()
    with pytest.raises(ValueError):
        Graph(**{**_fields(g), "adjacency": np.zeros((3, 3))})
    with pytest.raises(ValueError):
        Graph(**{**_fields(g), "nodes": g.nodes.drop(columns=["kind"])})
    with pytest.raises(ValueError):
        Graph(**{**_fields(g), "bias_terms": np.zeros(2)})


def _fields(g: Graph) -> dict:
    from dataclasses import fields

    return {f.name: getattr(g, f.name) for f in fields(g)}


# ------------------------------------------------------------------ Neuronpedia JSON
def test_toy_json(tmp_path, toy_graph):
    path = tmp_path / "toy.json"
    data = toy_graph.to_json(
        path,
        node_threshold=0.7,
        edge_threshold=0.6,
        pinned_ids=["1_3_1", "3_11_1"],
        supernodes=[["say animal", "1_3_1", "0_-1_1"], ("bos", ["E_1_0"])],
        info={"description": "toy"},
        export_node_threshold=0.7,
        export_edge_threshold=0.6,
    )
    assert load_json(path) == data
    reference_validator().validate(data)
    meta = data["metadata"]
    assert meta["slug"] == "toy" and meta["scan"] == "toy-model"
    assert meta["prompt"] == "<bos> cat" and meta["prompt_tokens"] == ["<bos>", " cat"]
    assert meta["schema_version"] == 1 and meta["node_threshold"] == 0.7
    assert meta["pruning_settings"] == {"node_threshold": 0.7, "edge_threshold": 0.6}
    assert meta["info"]["generator"]["name"] == "circuit-trace"
    assert meta["info"]["description"] == "toy"
    assert meta["generation_settings"]["batch_size"] == 256
    q = data["qParams"]
    assert q["pinnedIds"] == ["1_3_1", "3_11_1"]
    assert q["supernodes"] == [["say animal", "1_3_1", "0_-1_1"], ["bos", "E_1_0"]]
    assert q["linkType"] == "both"

    nodes = {n["node_id"]: n for n in data["nodes"]}
    # kept nodes (see test_prune_outcome_at_chosen_thresholds): F2, Err, E0, E1, L0, L1
    assert list(nodes) == ["1_3_1", "0_-1_1", "E_1_0", "E_42_1", "3_11_1", "3_22_1"]
    f2 = nodes["1_3_1"]
    assert f2["feature"] == (1 + 3) * (1 + 3 + 1) // 2 + 3  # Cantor(1, 3) = 13
    assert f2["layer"] == "1" and f2["ctx_idx"] == 1 and f2["clerp"] == "say animal"
    assert f2["feature_type"] == "cross layer transcoder" and f2["activation"] == 0.5
    # JSON influence = cumulative share at the node's rank: F2 is 2nd, 1.3125 / 3.15625
    assert f2["influence"] == pytest.approx(1.3125 / 3.15625, rel=1e-15)
    err = nodes["0_-1_1"]
    assert err["feature"] == -1 and err["feature_type"] == "mlp reconstruction error"
    assert err["layer"] == "0"
    e0 = nodes["E_1_0"]
    assert e0["feature"] == 0 and e0["layer"] == "E" and e0["feature_type"] == "embedding"
    l0, l1 = nodes["3_11_1"], nodes["3_22_1"]
    assert l0["layer"] == "3" and l0["feature"] == 11 and l0["feature_type"] == "logit"
    assert l0["clerp"] == 'Output " dog" (p=0.750)'
    assert l1["clerp"] == 'Output "⏎" (p=0.250)'  # newline made visible, as circuit-tracer does
    assert l0["is_target_logit"] and not l1["is_target_logit"]
    assert l0["token_prob"] == 0.75
    # Links: kept edges, weight = A[target, source]
    links = {(x["source"], x["target"]): x["weight"] for x in data["links"]}
    assert links == {("1_3_1", "3_11_1"): 3.0, ("0_-1_1", "1_3_1"): 2.0, ("E_42_1", "3_22_1"): 2.0}


def test_pinned_ids_must_be_kept_nodes(tmp_path, toy_graph):
    with pytest.raises(ValueError, match="not a kept node"):
        toy_graph.to_json(
            tmp_path / "x.json",
            node_threshold=0.7,
            edge_threshold=0.6,
            pinned_ids=["0_7_1"],
            export_node_threshold=0.7,
            export_edge_threshold=0.6,
        )  # F1 is pruned
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("seed", range(4))
def test_random_graph_json_validates(tmp_path, seed):
    g = random_graph(3 + seed, 4 + seed, 50 * (seed + 1), seed=seed, sparse=seed % 2 == 1)
    r = g.prune()
    data = to_neuronpedia(g, r, slug=f"g{seed}")
    reference_validator().validate(data)
    ids = [n["node_id"] for n in data["nodes"]]
    assert len(ids) == len(set(ids)) == int(r.node_mask.sum())
    js_err = [n["jsNodeId"] for n in data["nodes"] if n["feature_type"] != "cross layer transcoder"]
    assert len(js_err) == len(set(js_err))
    assert len(data["links"]) == r.n_edges
    known = set(ids)
    assert all(x["source"] in known and x["target"] in known for x in data["links"])
    n_layers = g.n_layers
    for n in data["nodes"]:
        assert n["feature_type"] in FEATURE_TYPES
        assert 0.0 < n["influence"] <= 1.0
        if n["feature_type"] == "cross layer transcoder":
            layer, index, pos = map(int, n["node_id"].split("_"))
            assert cantor_unpair(n["feature"]) == (layer, index)
            assert n["layer"] == str(layer) and n["ctx_idx"] == pos
        elif n["feature_type"] == "mlp reconstruction error":
            layer, minus_one, pos = map(int, n["node_id"].split("_"))
            assert minus_one == -1 and n["feature"] == -1
        elif n["feature_type"] == "logit":
            assert n["layer"] == str(n_layers + 1)
            assert re.fullmatch(r'Output ".*" \(p=\d\.\d{3}\)', n["clerp"])
        else:
            assert n["layer"] == "E" and n["feature"] == n["ctx_idx"]
    # every embedding and logit is always exported
    assert sum(n["feature_type"] == "embedding" for n in data["nodes"]) == g.n_pos
    assert sum(n["feature_type"] == "logit" for n in data["nodes"]) == len(g.logit_indices)


def test_custom_logit_targets_get_distinct_ids():
    g = make_toy_graph()
    g.nodes.loc[[L0, L1], "token_id"] = -1  # e.g. logit-difference directions
    data = to_neuronpedia(g, slug="custom")
    logits = [n for n in data["nodes"] if n["feature_type"] == "logit"]
    assert [n["node_id"] for n in logits] == ["3_-1_1", "3_-2_1"]
    reference_validator().validate(data)


def test_load_json_rejects_dangling_links(tmp_path):
    data = to_neuronpedia(make_toy_graph(), slug="x")
    data["links"].append({"source": "nope", "target": data["nodes"][0]["node_id"], "weight": 1.0})
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError):
        load_json(tmp_path / "bad.json")
    data.pop("links")
    (tmp_path / "bad2.json").write_text(json.dumps(data))
    with pytest.raises(jsonschema.ValidationError):
        load_json(tmp_path / "bad2.json")


# ------------------------------------------------------------------ networkx / pandas
def test_to_networkx(toy_graph):
    r = toy_graph.prune(0.7, 0.6)
    g = r.graph.to_networkx()
    assert g.number_of_edges() == r.n_edges == 3
    assert g.number_of_nodes() == 6
    assert g["0_-1_1"]["1_3_1"]["weight"] == 2.0  # source -> target
    assert g.nodes["1_3_1"]["label"] == "say animal" and g.nodes["1_3_1"]["kind"] == "feature"
    full = toy_graph.to_networkx()
    assert full.number_of_edges() == 11
    import networkx as nx

    assert nx.is_directed_acyclic_graph(full)


def test_random_pruned_networkx_edge_count():
    g = random_graph(4, 6, 200, seed=5, sparse=True)
    r = g.prune()
    assert r.graph.to_networkx().number_of_edges() == r.n_edges == r.graph.n_edges


def test_edges_frame(toy_graph):
    df = toy_graph.edges_frame()
    assert list(df.columns) == ["source", "target", "weight", "source_kind", "target_kind"]
    assert len(df) == 11
    row = df[(df.source == "0_-1_1") & (df.target == "1_3_1")].iloc[0]
    assert row.weight == 2.0 and row.source_kind == "error" and row.target_kind == "feature"
    assert isinstance(df, pd.DataFrame)


def test_kind_helpers(toy_graph):
    assert toy_graph.n_nodes == 8 and toy_graph.n_pos == 2
    np.testing.assert_array_equal(toy_graph.feature_indices, [0, 1, 2])
    np.testing.assert_array_equal(toy_graph.error_indices, [ERR])
    np.testing.assert_array_equal(toy_graph.logit_indices, [L0, L1])
    assert len(toy_graph.feature_nodes()) == 3
    assert toy_graph.index_of("E_42_1") == E1
    assert toy_graph.logit_weights()[L0] == 0.75 and toy_graph.logit_weights()[F2] == 0.0


def test_missing_node_id_column_is_filled_with_neuronpedia_ids():
    g = make_toy_graph()
    fields = _fields(g)
    fields["nodes"] = g.nodes.drop(columns=["node_id"])

    class Result:  # stands in for attribution's AttributionResult (graphs never imports it)
        pass

    res = Result()
    for k, v in fields.items():
        setattr(res, k, v)
    res.stats = {"ignored": True}
    h = Graph.from_attribution(res)
    assert list(h.nodes.columns)[0] == "node_id"
    assert h.nodes["node_id"].tolist() == g.nodes["node_id"].tolist()
    # attribution's graph also gets the influence columns (SPEC §4 node score and its share)
    np.testing.assert_array_equal(h.nodes["influence"], g.node_influence())
    assert h.equals(g.add_influence())


def test_to_json_with_a_precomputed_prune_writes_the_same_graph(tmp_path):
    g = random_graph(3, 6, 20, seed=4)
    fresh = g.to_json(tmp_path / "a.json", node_threshold=0.7, edge_threshold=0.9)
    reused = g.to_json(tmp_path / "b.json", node_threshold=0.7, edge_threshold=0.9, pruned=g.prune(0.7, 0.9))
    for doc in (fresh, reused):
        doc["metadata"]["slug"] = ""
        doc["metadata"].get("info", {}).pop("create_time_ms", None)
    assert fresh == reused


# ------------------------------------------------------------------ export writes what it is handed
def test_pruned_graph_is_exported_as_it_is(tmp_path):
    g = random_graph(4, 6, 200, seed=7)
    pruned = g.prune(0.8, 0.98)
    assert pruned.graph.is_pruned and not g.is_pruned
    data = pruned.graph.to_json(tmp_path / "p.json")
    assert len(data["nodes"]) == pruned.graph.n_nodes
    assert len(data["links"]) == pruned.graph.n_edges == pruned.n_edges
    assert data["metadata"]["node_threshold"] == 0.8
    assert data["metadata"]["pruning_settings"] == {"node_threshold": 0.8, "edge_threshold": 0.98}
    # JSON influence is the share on the full graph, as a direct export of g writes it
    direct = {
        n["node_id"]: n
        for n in g.to_json(tmp_path / "d.json", export_node_threshold=0.8, export_edge_threshold=0.98)["nodes"]
    }
    for n in data["nodes"]:
        assert n["influence"] == direct[n["node_id"]]["influence"]
        assert n["node_influence"] == direct[n["node_id"]]["node_influence"]
    reference_validator().validate(data)
    # prune=False on the full graph writes every node
    assert len(g.to_json(tmp_path / "all.json", prune=False)["nodes"]) == g.n_nodes


def test_graph_carries_influence_columns():
    g = random_graph(3, 5, 80, seed=2)
    r = g.prune(0.8, 0.98)
    kept = r.kept_nodes
    np.testing.assert_array_equal(r.graph.nodes["influence"], r.node_influence[kept])
    np.testing.assert_array_equal(r.graph.nodes["cumulative_influence"], r.cumulative_influence[kept])
    # same values as pruning's own node scores, computed from the table's graph
    np.testing.assert_array_equal(g.node_influence(), r.node_influence)


def test_default_export_is_wider_than_the_view(tmp_path):
    g = random_graph(4, 6, 300, seed=11)
    view = g.prune(0.8, 0.98)
    data = g.to_json(tmp_path / "w.json", pruned=view)
    meta = data["metadata"]
    assert meta["node_threshold"] == 0.8
    assert meta["pruning_settings"] == {
        "node_threshold": 0.8,
        "edge_threshold": 0.98,
        "export_node_threshold": 0.9,
        "export_edge_threshold": 0.99,
    }
    ids = {n["node_id"] for n in data["nodes"]}
    assert set(view.graph.nodes["node_id"]) < ids  # strictly more nodes than the view
    wide = g.prune(0.9, 0.99)
    assert len(ids) == wide.graph.n_nodes and len(data["links"]) == wide.n_edges
    # links carry their edge score and come strongest |weight| first
    w = [abs(x["weight"]) for x in data["links"]]
    assert w == sorted(w, reverse=True)
    assert all(x["score"] is not None and x["score"] >= 0 for x in data["links"])
    reference_validator().validate(data)
    with pytest.raises(ValueError, match="at least the view"):
        g.to_json(tmp_path / "bad.json", export_node_threshold=0.5)


def test_edge_scores_match_hand_computation(tmp_path, toy_graph):
    data = toy_graph.to_json(tmp_path / "t.json", prune=False)
    # toy: L0 <- F2 (3.0), L0 <- F0 (1.0); L0 has weight 0.75 and no outputs, so its score is 0.75
    # and the edge score of F2 -> L0 is Â[L0, F2] * 0.75 = 3 / 4 * 0.75
    links = {(x["source"], x["target"]): x["score"] for x in data["links"]}
    assert links[("1_3_1", "3_11_1")] == pytest.approx(0.75 * 3 / 4)
    assert links[("0_5_1", "3_11_1")] == pytest.approx(0.75 * 1 / 4)


def test_from_json_round_trips_ids_links_and_qparams(tmp_path):
    g = random_graph(4, 6, 200, seed=3)
    pruned = g.prune(0.8, 0.98).graph
    feats = pruned.feature_nodes()["node_id"].tolist()
    first = pruned.to_json(tmp_path / "a.json", pinned_ids=feats[:3], supernodes=[["group", *feats[:2]]])
    h = Graph.from_json(tmp_path / "a.json")
    assert h.is_pruned and h.n_nodes == pruned.n_nodes and h.n_layers == g.n_layers
    assert sorted(h.nodes["node_id"]) == sorted(pruned.nodes["node_id"])
    assert h.settings["qParams"]["pinnedIds"] == feats[:3]
    second = h.to_json(tmp_path / "b.json")
    assert second["qParams"] == first["qParams"]
    assert [n["node_id"] for n in second["nodes"]] == [n["node_id"] for n in first["nodes"]]

    def links(d):
        return {(x["source"], x["target"]): x["weight"] for x in d["links"]}

    assert links(second) == pytest.approx(links(first), rel=1e-6)  # float32 adjacency
    for a, b in zip(first["nodes"], second["nodes"]):
        for key in ("feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "clerp", "influence"):
            assert a[key] == b[key], key
    assert second["metadata"]["pruning_settings"] == first["metadata"]["pruning_settings"]
    assert h.tokens == pruned.tokens and h.input_ids == pruned.input_ids


def test_from_json_of_a_wide_export_keeps_its_view(tmp_path):
    g = random_graph(3, 5, 120, seed=9)
    first = g.to_json(tmp_path / "w.json")
    second = Graph.from_json(tmp_path / "w.json").to_json(tmp_path / "w2.json")
    assert second["metadata"]["pruning_settings"] == first["metadata"]["pruning_settings"]
    assert second["metadata"]["node_threshold"] == 0.8
    assert len(second["links"]) == len(first["links"])


def test_load_and_from_json_say_what_a_wrong_file_is(tmp_path):
    g = random_graph(2, 4, 10, seed=0)
    g.to_json(tmp_path / "g.json")
    with pytest.raises(ValueError, match="is a JSON file, not a saved graph: use Graph.from_json"):
        Graph.load(tmp_path / "g.json")
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ValueError, match="is not a circuit_trace graph file"):
        Graph.load(tmp_path / "junk.bin")
    (tmp_path / "broken.json").write_text('{"nodes": [')
    with pytest.raises(ValueError, match="is not a Neuronpedia graph JSON file"):
        Graph.from_json(tmp_path / "broken.json")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="is not a valid Neuronpedia graph JSON file"):
        Graph.from_json(tmp_path / "other.json")
    g.save(tmp_path / "g.st")
    with pytest.raises(ValueError, match="is not a Neuronpedia graph JSON file"):
        Graph.from_json(tmp_path / "g.st")


def test_stats_and_label_extras_reach_the_json(tmp_path, toy_graph):
    toy_graph.stats = {"n_active_features": 120, "dropped_features": 20, "dropped_share": 0.125, "not_json": object()}
    toy_graph.nodes["label_score"] = [0.9, np.nan, 0.4, np.nan, np.nan, np.nan, np.nan, np.nan]
    toy_graph.nodes["label_evidence"] = ["acts: Texas; logits: Austin"] + [""] * 7
    data = toy_graph.to_json(tmp_path / "s.json", prune=False)
    assert data["metadata"]["info"]["stats"] == {
        "n_active_features": 120,
        "dropped_features": 20,
        "dropped_share": 0.125,
    }
    nodes = {n["node_id"]: n for n in data["nodes"]}
    assert nodes["0_5_1"]["label_score"] == 0.9
    assert nodes["0_5_1"]["label_evidence"] == "acts: Texas; logits: Austin"
    assert "label_score" not in nodes["0_7_1"] and "label_evidence" not in nodes["0_7_1"]
    reference_validator().validate(data)
