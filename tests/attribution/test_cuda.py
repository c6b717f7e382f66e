"""On a CUDA machine the graph equals the CPU graph (skipped where there is no GPU, as in CI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_hf_model, make_transcoder, random_prompt, tokenizer

import circuit_trace as ct

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def dense(a) -> np.ndarray:
    return a.toarray() if hasattr(a, "toarray") else np.asarray(a)


def build(family: str, device: str):
    model = make_hf_model(family, seed=3)
    tc = make_transcoder(kind="clt", skip=True, seed=1003, input_hook="hook_resid_mid", output_hook="hook_mlp_out")
    return ct.load(model, tc, tokenizer=tokenizer(), device=device)


@pytest.mark.parametrize("family,cap", [("gpt2", None), ("gemma2", 20), ("llama", None)])
def test_cuda_graph_equals_cpu(family, cap):
    cpu, gpu = (
        ct.attribute(build(family, d), random_prompt(4, 7), max_feature_nodes=cap, batch_size=8, progress=False)
        for d in ("cpu", "cuda")
    )
    assert gpu.nodes.node_id.tolist() == cpu.nodes.node_id.tolist()
    A = dense(cpu.adjacency)
    np.testing.assert_allclose(dense(gpu.adjacency), A, rtol=1e-4, atol=1e-5 * np.abs(A).max())


def test_cuda_two_pass_selection_equals_cpu():
    # a row store of 1 byte forces the two-pass strategy (long prompts on a GPU take this path)
    opts = ct.AttributionOptions(row_store_bytes=1)
    cpu, gpu = (
        ct.attribute(
            build("llama", d), random_prompt(4, 7), max_feature_nodes=15, batch_size=4, progress=False, options=opts
        )
        for d in ("cpu", "cuda")
    )
    assert gpu.settings["stats"]["selection"] == "two-pass"
    assert gpu.nodes.node_id.tolist() == cpu.nodes.node_id.tolist()
    A = dense(cpu.adjacency)
    np.testing.assert_allclose(dense(gpu.adjacency), A, rtol=1e-4, atol=1e-5 * np.abs(A).max())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_cuda_interventions_validation_and_head_loadings_equal_cpu(family):
    out = {}
    for device in ("cpu", "cuda"):
        rm = build(family, device)
        prompt = random_prompt(4, 7)
        graph = ct.attribute(rm, prompt, batch_size=8, progress=False)
        feats = graph.feature_nodes()
        edits = [ct.scale_feature(int(feats.layer.iloc[0]), int(feats.feature.iloc[0]), -2.0)]
        res = {mode: ct.intervene(rm, prompt, edits, mode=mode) for mode in ("free", "constrained")}
        report = ct.validate(rm, graph, max_sources=6, n_pairs=30)
        loads = ct.head_loadings_top(rm, graph, n_edges=4)
        gen = ct.generate(rm, prompt, edits, max_new_tokens=3)
        qk = ct.qk_attribution(rm, graph, 1, 0, -1, 2)
        out[device] = (res, report, loads, gen, qk)
    (rc, vc, lc, gc, qc), (rg, vg, lg, gg, qg) = out["cpu"], out["cuda"]
    for mode in ("free", "constrained"):
        assert [t.token_id for t in rg[mode].top_after] == [t.token_id for t in rc[mode].top_after]
        assert rg[mode].kl == pytest.approx(rc[mode].kl, rel=1e-3, abs=1e-6)
        torch.testing.assert_close(rg[mode].logits_after.cpu(), rc[mode].logits_after, rtol=1e-4, atol=1e-4)
    for col in ("predicted_direct", "predicted_total", "measured"):
        np.testing.assert_allclose(vg.pairs[col], vc.pairs[col], rtol=1e-3, atol=1e-5)
    assert lg[["source", "target", "layer", "head"]].equals(lc[["source", "target", "layer", "head"]])
    np.testing.assert_allclose(lg["loading"], lc["loading"], rtol=1e-3, atol=1e-6)
    assert gg.text == gc.text
    both = qc.pairs.merge(qg.pairs, on=["query", "key"], suffixes=("_cpu", "_gpu"), validate="one_to_one")
    assert len(both) == len(qc.pairs) == len(qg.pairs)
    np.testing.assert_allclose(both["contribution_gpu"], both["contribution_cpu"], rtol=1e-3, atol=1e-6)
