"""Exactness of head loadings and QK attribution (circuit_trace.attention) on tiny models of every
attention flavour: GPT-2 (biases, LayerNorm), Llama (RoPE, GQA), Qwen3 (QK-norm), Gemma-2 (softcap,
sliding window; the pre-cap score is attributed), Gemma-3 (QK-norm, local/global RoPE).

References are independent of the code under test where it matters:
- the bypass and each head's loading are compared with the edge measured in a frozen model whose
  heads are removed (`frozen_edge(remove=...)`, a forward-pass intervention on the heads' outputs);
- the same by finite differences: the target's response to removing the source, with and without
  the head, in a float64 frozen pass (a constrained intervention, no gradients);
- the QK scores, capped and softmaxed over every key, must give the plain HF model's own attention
  pattern (eager attention, output_attentions=True);
- the exported JSON validates against Neuronpedia's schema, and every contributor id resolves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import cached_replacement, ct_settings, random_prompt
from hypothesis import given
from hypothesis import strategies as st

import circuit_trace as ct
from circuit_trace.attention import (
    attach_attention,
    cross_position_edges,
    frozen_edge,
    head_loadings,
    head_loadings_top,
    qk_attribution,
    qk_attribution_local,
    remove_heads,
)
from circuit_trace.attention.components import record_residuals
from circuit_trace.graphs.neuronpedia import validate

LOADING_FAMILIES = ("gpt2", "llama", "qwen3", "gemma2")
QK_FAMILIES = ("gpt2", "llama", "qwen3", "gemma2", "gemma3")

cases = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 3),
        "kind": st.sampled_from(("plt", "clt")),
        "n_layers": st.integers(2, 3),
        "prompt_seed": st.integers(0, 50),
    }
)


def _model(family: str, case: dict):
    return cached_replacement(family, case["kind"], seed=case["seed"], n_layers=case["n_layers"])


def _graph(rm, case: dict):
    return ct.attribute(rm, random_prompt(case["prompt_seed"]), progress=False)


def _close(a: float, b: float, scale: float, rel: float = 1e-5) -> bool:
    return abs(a - b) <= rel * max(scale, 1e-6)


@pytest.mark.parametrize("family", LOADING_FAMILIES)
@ct_settings(3)
@given(case=cases)
def test_head_loadings_sum_to_edge_and_match_head_removal(family, case):
    rm = _model(family, case)
    g = _graph(rm, case)
    edges = cross_position_edges(g, 1)
    assert len(edges)
    for s, t, w in zip(edges["source"], edges["target"], edges["weight"]):
        df = head_loadings(rm, g, s, t)
        edge = df.attrs["edge"]
        scale = max(abs(edge), df["loading"].abs().max())
        assert _close(edge, w, abs(w), rel=1e-4)  # the graph's own edge (float32 engine)
        n_heads = int((df["kind"] == "head").sum() / df["layer"].nunique())
        for m, sub in df.groupby("layer"):
            heads = sub[sub["kind"] == "head"]
            bypass = float(sub.loc[sub["kind"] == "bypass", "loading"].iloc[0])
            assert _close(heads["loading"].sum() + bypass, edge, scale)
            # the bypass is the edge of the model whose layer-m heads are all removed
            assert _close(frozen_edge(rm, g, s, t, remove={int(m): list(range(n_heads))}), bypass, scale)
            for h, loading in zip(heads["head"], heads["loading"]):
                without = frozen_edge(rm, g, s, t, remove={int(m): [int(h)]})
                assert _close(edge - without, float(loading), scale)


def test_layer_argument_and_layers_above_the_target():
    rm = cached_replacement("llama")
    g = ct.attribute(rm, random_prompt(3), progress=False)
    e = cross_position_edges(g, 20)
    row = e[[g.nodes.loc[i, "kind"] == "feature" and g.nodes.loc[i, "layer"] == 0 for i in e["target_index"]]].iloc[0]
    df = head_loadings(rm, g, row["source"], row["target"])
    above = df[df["layer"] > 0]  # nothing above a layer-0 feature carries its edges
    assert (above.loc[above["kind"] == "head", "loading"] == 0).all()
    assert np.allclose(above.loc[above["kind"] == "bypass", "loading"], df.attrs["edge"])
    one = head_loadings(rm, g, row["source"], row["target"], layer=0)
    assert set(one["layer"]) == {0} and np.allclose(one["loading"], df[df["layer"] == 0]["loading"])


def test_bulk_matches_single_edges():
    rm = cached_replacement("gpt2")
    g = ct.attribute(rm, random_prompt(7), progress=False)
    bulk = head_loadings_top(rm, g, 6)
    assert bulk.groupby(["source", "target"]).ngroups == 6
    for (s, t), sub in list(bulk.groupby(["source", "target"]))[:3]:
        single = head_loadings(rm, g, s, t)
        merged = sub.merge(single, on=["layer", "head", "kind"], suffixes=("", "_single"))
        assert len(merged) == len(sub)
        assert np.allclose(merged["loading"], merged["loading_single"], rtol=1e-6, atol=1e-7)
        # the layers left out cannot carry the edge: at or below the source's layer, heads load 0
        src_layer = int(g.nodes.loc[g.index_of(s), "layer"])
        assert sub["layer"].min() == src_layer + 1
        below = single[(single["layer"] <= src_layer) & (single["kind"] == "head")]
        assert (below["loading"] == 0).all()


# -- constrained intervention by finite differences ----------------------------------------------
def _response(lr, tgt_row, embeds, mlp, remove, rm) -> float:
    """The target's value in a float64 frozen pass (no gradients), heads `remove` removed."""
    with remove_heads(rm, remove), torch.no_grad():
        fo = lr.frozen_forward(embeds=embeds, mlp_out=mlp, requires_grad=False)
    if tgt_row["kind"] == "feature":
        layer, pos, f = int(tgt_row["layer"]), int(tgt_row["pos"]), int(tgt_row["feature"])
        return float(fo.x[layer][0, pos] @ rm.transcoders.W_enc[layer][f])
    w_u = rm.adapter.unembed_weight()
    return float(fo.z[0, 0] @ (w_u[int(tgt_row["token_id"])] - w_u.mean(0)))


def _without_source(lr, src_row, rm):
    """(embeds, mlp_out) with what the source writes taken away (its decoder rows, read from W_dec)."""
    embeds, mlp = lr.embeds.clone(), lr.y.clone()
    pos, layer = int(src_row["pos"]), int(src_row["layer"])
    if src_row["kind"] == "embedding":
        embeds[pos] = 0
    elif src_row["kind"] == "error":
        mlp[layer, pos] -= lr.errors[layer, pos]
    else:
        f = lr.features
        i = int(((f.layer == layer) & (f.pos == pos) & (f.index == int(src_row["feature"]))).nonzero()[0, 0])
        dec = rm.transcoders.W_dec[layer][int(src_row["feature"])]  # [n_out, d] (PLT: [d])
        dec = dec.reshape(-1, dec.shape[-1])
        for j in range(dec.shape[0]):
            mlp[layer + j, pos] -= f.activation[i] * dec[j]
    return embeds, mlp


@pytest.mark.parametrize("family", ("gpt2", "llama", "gemma2"))
def test_head_loading_is_the_effect_of_removing_the_head(family):
    from helpers import default_hooks, make_hf_model, make_transcoder, tokenizer

    model = make_hf_model(family)
    tc = make_transcoder(3, 32, kind="clt", input_hook=default_hooks(family)[0], seed=1000)
    rm = ct.load(model, tc, tokenizer=tokenizer(), device="cpu", dtype=torch.float64)
    g = ct.attribute(rm, random_prompt(11), progress=False)
    lr = rm.local_context(list(g.input_ids))
    for s, t in zip(*cross_position_edges(g, 2)[["source_index", "target_index"]].to_numpy().T):
        src, tgt = g.nodes.iloc[int(s)], g.nodes.iloc[int(t)]
        df = head_loadings(rm, g, int(s), int(t))
        emb0, mlp0 = _without_source(lr, src, rm)
        top = df[df["kind"] == "head"].sort_values("loading", key=abs).tail(3)
        for m, h, loading in top[["layer", "head", "loading"]].itertuples(index=False):
            remove = {int(m): [int(h)]}
            full = _response(lr, tgt, None, None, {}, rm) - _response(lr, tgt, emb0, mlp0, {}, rm)
            cut = _response(lr, tgt, None, None, remove, rm) - _response(lr, tgt, emb0, mlp0, remove, rm)
            scale = max(abs(full), abs(_response(lr, tgt, None, None, {}, rm)))
            assert _close(full, df.attrs["edge"], scale)
            assert _close(full - cut, float(loading), scale)


# -- QK attribution ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", QK_FAMILIES)
@ct_settings(2)
@given(case=cases)
def test_qk_scores_are_exact_and_give_the_models_pattern(family, case):
    rm = _model(family, case)
    ids = rm.tokenize(random_prompt(case["prompt_seed"]))
    with torch.no_grad():
        ref = rm.model(ids[None], output_attentions=True).attentions  # plain HF eager attention
    lr = rm.local_context(ids)
    res = record_residuals(lr)
    cfg = rm.model.config
    q = len(ids) - 1
    for m in range(rm.n_layers):
        for h in (1,) if m % 2 == 0 else (cfg.num_attention_heads - 1,):  # GQA: these read different kv heads
            capped = []
            for k in range(q + 1):
                r = qk_attribution_local(lr, m, h, q, k, residuals=res)
                scale = float(r.pairs["contribution"].abs().sum())
                assert _close(r.total, r.score, scale)  # Σ pairs (bias included) = the score
                assert np.isclose(r.query_marginal["contribution"].sum(), r.score, rtol=0, atol=1e-5 * scale)
                assert np.isclose(r.key_marginal["contribution"].sum(), r.score, rtol=0, atol=1e-5 * scale)
                capped.append(r.capped_score)
                if family == "gemma2":
                    assert r.softcap == cfg.attn_logit_softcapping
            s = torch.tensor(capped)
            window = getattr(cfg, "sliding_window", None)
            types = getattr(cfg, "layer_types", None)
            if window and types and types[m] == "sliding_attention":
                s[: max(0, q - window + 1)] = -float("inf")
            assert torch.allclose(torch.softmax(s, 0).float(), ref[m][0, h, q, : q + 1], atol=2e-6)


def test_qk_components_and_bad_input():
    rm = cached_replacement("qwen3", skip=True)
    g = ct.attribute(rm, random_prompt(5), progress=False)
    r = qk_attribution(rm, g, 2, 3, -1, 2)
    kinds = set(r.components["kind"])
    assert {"embedding", "attention", "error", "bias", "skip", "mlp bias"} <= kinds
    key_feats = r.components[(r.components["side"] == "key") & (r.components["kind"] == "feature")]
    assert (key_feats["pos"] == 2).all() and (key_feats["layer"] < 2).all()
    assert len(r.pairs) == (r.components["side"] == "query").sum() * (r.components["side"] == "key").sum()
    text = repr(r)  # a summary, not the tables
    assert "\n" not in text and len(text) < 300 and f"{len(r.pairs)} pairs" in text and f"{r.score:.4g}" in text
    with pytest.raises(ValueError, match="key position"):
        qk_attribution(rm, g, 0, 0, 1, 3)
    with pytest.raises(ValueError, match="head"):
        qk_attribution(rm, g, 0, 9, -1, 1)
    with pytest.raises(ValueError, match="sources are"):
        head_loadings(rm, g, g.nodes["node_id"].iloc[-1], g.nodes["node_id"].iloc[0])
    with pytest.raises(ValueError, match="not a node id"):
        head_loadings(rm, g, "nope", g.nodes["node_id"].iloc[0])


# -- in the graph and the JSON ----------------------------------------------------------------------
@pytest.mark.parametrize("family", ("llama", "gemma2"))
def test_exported_json_is_schema_valid_with_qk_fields(family, tmp_path):
    rm = cached_replacement(family)
    g = ct.attribute(rm, random_prompt(2), progress=False)
    payload = attach_attention(rm, g, n_edges=5, n_heads=2, n_contributors=6)
    assert payload["edges"] and payload["qk_tracing_results"]
    for e in payload["edges"]:  # per layer: the heads listed never exceed the edge's total
        assert len(e["heads"]) == 2 and set(e["bypass"]) == {str(m) for m in range(len(e["bypass"]))}
    data = g.to_json(tmp_path / "g.json", slug="g")
    validate(data)
    with_qk = [n for n in data["nodes"] if "qk_tracing_results" in n]
    assert with_qk
    known = {n["node_id"] for n in data["nodes"]} | set(data["qk_only_nodes"])
    for n in with_qk:
        res = n["qk_tracing_results"]
        for a, b, v in res["pair_wise_contributors"]:
            assert isinstance(a, str) and isinstance(b, str) and isinstance(v, float) and {a, b} <= known
        for name in ("top_q_marginal_contributors", "top_k_marginal_contributors"):
            assert res[name] and all(i in known and isinstance(v, float) for i, v in res[name])
        for head in res["heads"]:
            assert head["key_pos"] <= head["query_pos"] == n["ctx_idx"]
    assert "attention" not in data["metadata"]["generation_settings"]
    # the payload travels with the graph file
    g.save(tmp_path / "g.safetensors")
    assert ct.Graph.load(tmp_path / "g.safetensors").settings["attention"] == json.loads(json.dumps(payload))
