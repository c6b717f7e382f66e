"""feature_dashboards on a tiny random model: every feature's dict validates against the
Neuronpedia feature-details schema, the numbers match brute force over the whole corpus, both
formats round-trip, a resumed run gives the same files, and dashboards stay tied to their weights."""

from __future__ import annotations

import json
import random
from pathlib import Path

import helpers
import jsonschema
import pytest

from circuit_trace.dashboards import (
    CompactDashboards,
    DashboardError,
    DashboardStoreError,
    feature_dashboards,
    find_dashboards,
    open_dashboards,
    transcoder_fingerprint,
)
from circuit_trace.dashboards.logits import feature_directions
from circuit_trace.models.activations import mlp_io
from circuit_trace.viz.feature_details import validate_feature_details

SCHEMA = json.loads(
    (
        Path(__import__("circuit_trace").__file__).parent
        / "dashboards"
        / "schema"
        / "neuronpedia-feature-details-schema.json"
    ).read_text()
)
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "neuronpedia-feature-details-schema.json"
OPTS = dict(ctx_len=6, batch_size=4, top_k=3, n_samples=4, progress=False)


def corpus(n=23, seed=0):
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(3, 60)}" for _ in range(rng.randint(2, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    rm = helpers.cached_replacement("llama", "clt")
    out = tmp_path_factory.mktemp("dash") / "features"
    res = feature_dashboards(rm, corpus(), out, neuronpedia_json=True, **OPTS)
    return rm, out, res


def test_packaged_schema_is_the_reference():
    if REFERENCE.is_file():
        assert json.loads(REFERENCE.read_text()) == SCHEMA


def test_every_feature_validates_and_both_formats_round_trip(built):
    rm, out, res = built
    tc = rm.transcoders
    reader = open_dashboards(out)
    assert isinstance(reader, CompactDashboards) and reader.layers == list(range(tc.n_layers))
    assert res.n_features == tc.n_layers * tc.d_features
    json_dir = open_dashboards(out / "json")
    for layer in range(tc.n_layers):
        assert reader.n_features(layer) == tc.d_features
        for f in range(tc.d_features):
            d = reader.feature(layer, f)
            jsonschema.validate(d, SCHEMA)
            validate_feature_details(d)
            assert d["layer"] == layer and d["feature"] == f and d["transcoder_id"] == tc.name
            assert json_dir.feature(layer, f) == d  # the Neuronpedia files hold the same dicts
            assert reader.by_index(d["index"]) == d


def _brute_force(rm, docs, ctx_len):
    """Per layer: ctx_max [N, F], acts [N, P, F] over every context, via nnsight (not our hooks)."""
    from circuit_trace.dashboards.corpus import context_batches

    out = []
    batches = list(context_batches(rm.tokenizer, docs, ctx_len=ctx_len, batch_size=1000))
    (b,) = batches
    x, _ = mlp_io(rm.adapter, b.ids, rm.transcoders.feature_input_hook, rm.transcoders.feature_output_hook)
    mask = b.mask.clone()
    mask[:, 0] = False
    for layer in range(rm.transcoders.n_layers):
        acts = rm.transcoders.encode(x[layer], layer) * mask[..., None]
        out.append(acts)
    return out, mask


def test_numbers_match_brute_force(built):
    rm, out, res = built
    reader = open_dashboards(out)
    acts_by_layer, mask = _brute_force(rm, corpus(), OPTS["ctx_len"])
    n_tok = int(mask.sum())
    assert res.n_tokens == n_tok and res.n_contexts == mask.shape[0] > len(corpus())  # long docs split
    w_u = rm.adapter.unembed_weight().float()
    for layer, acts in enumerate(acts_by_layer):
        ctx_max = acts.amax(1)  # [N, F]
        effects = feature_directions(rm, layer) @ w_u.T  # [F, V]
        for f in range(rm.transcoders.d_features):
            d = reader.feature(layer, f)
            assert d["activation_frequency"] == pytest.approx(float((acts[..., f] > 0).sum()) / n_tok)
            assert d["act_max"] == pytest.approx(float(ctx_max[:, f].max()), abs=1e-3)
            assert d["top_logits"][0] == rm.tokenizer.decode([int(effects[f].argmax())])
            assert d["bottom_logits"][0] == rm.tokenizer.decode([int(effects[f].argmin())])
            if ctx_max[:, f].max() <= 0:
                assert d["examples_quantiles"] == [] and d["label"] == ""
                continue
            top = d["examples_quantiles"][0]
            assert top["quantile_name"] == "Top activations"
            want = ctx_max[:, f].topk(min(OPTS["top_k"], int((ctx_max[:, f] > 0).sum()))).values
            got = [max(e["tokens_acts_list"]) for e in top["examples"]]
            assert got == pytest.approx(want.tolist(), abs=2e-3)
            e = top["examples"][0]
            c = e["context_id"]
            assert e["tokens_acts_list"] == pytest.approx(acts[c, 1 : 1 + len(e["tokens"]), f].tolist(), abs=2e-3)
            assert sum(d["histogram"]) == int((acts[..., f] > 0).sum())
            assert d["label"] and 0.0 <= d["label_score"] <= 1.0 and d["label_evidence"]["top_logits"]


class Interrupting(list):
    """A corpus that raises KeyboardInterrupt part-way through its second full read (the first is
    the fingerprint), as a killed run would stop."""

    def __init__(self, items, stop_at):
        super().__init__(items)
        self.stop_at, self.reads = stop_at, 0

    def __iter__(self):
        self.reads += 1
        for i, x in enumerate(list.__iter__(self)):
            if self.reads == 2 and i == self.stop_at:
                raise KeyboardInterrupt
            yield x


def test_interrupted_run_resumes_to_identical_files(tmp_path):
    rm = helpers.cached_replacement("llama", "clt")
    docs = corpus(31, seed=3)
    straight = feature_dashboards(rm, docs, tmp_path / "a", **OPTS)
    with pytest.raises(KeyboardInterrupt):
        feature_dashboards(rm, Interrupting(docs, 20), tmp_path / "b", checkpoint_every=1, **OPTS)
    assert (tmp_path / "b" / ".partial" / "progress.json").is_file()
    resumed = feature_dashboards(rm, docs, tmp_path / "b", **OPTS)
    assert resumed.resumed_from > 0 and straight.resumed_from == 0
    for name in [f"layer_{i}.bin" for i in range(rm.transcoders.n_layers)] + ["labels.json"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert not (tmp_path / "b" / ".partial").exists()
    # a partial run over another corpus is refused, not silently mixed in
    with pytest.raises(KeyboardInterrupt):
        feature_dashboards(rm, Interrupting(docs, 20), tmp_path / "c", checkpoint_every=1, **OPTS)
    with pytest.raises(DashboardError, match="partial run"):
        feature_dashboards(rm, corpus(31, seed=4), tmp_path / "c", **OPTS)


def test_dashboards_are_tied_to_their_weights(tmp_path):
    rm = helpers.cached_replacement("llama", "clt")
    other = helpers.cached_replacement("llama", "clt", seed=1)
    assert transcoder_fingerprint(rm.transcoders) != transcoder_fingerprint(other.transcoders)
    folder = tmp_path / "tc"
    folder.mkdir()
    feature_dashboards(rm, corpus(5), folder / "features", **OPTS)
    for r in (rm, other):
        r.transcoders.source_path = str(folder)
    try:
        assert find_dashboards(rm.transcoders) == folder / "features"
        assert find_dashboards(other.transcoders) is None  # same folder, other weights: refused
    finally:
        for r in (rm, other):
            del r.transcoders.source_path
    with pytest.raises(DashboardStoreError, match="not 'someone-else'"):
        CompactDashboards(folder / "features", expected_id="someone-else")


def test_bad_options_and_empty_corpus(tmp_path):
    rm = helpers.cached_replacement("llama", "clt")
    with pytest.raises(DashboardError, match="unknown"):
        feature_dashboards(rm, corpus(2), tmp_path, nonsense=1)
    with pytest.raises(DashboardError, match="batch_size"):
        feature_dashboards(rm, corpus(2), tmp_path, batch_size=0)
    with pytest.raises(DashboardError, match="no text"):
        feature_dashboards(rm, [], tmp_path / "e", progress=False)
