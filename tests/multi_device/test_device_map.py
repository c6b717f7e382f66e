"""`ct.load(..., device_map=...)`: a model placed with accelerate gives the same graphs and the same
intervention results as the model on one device. On CPU every block is mapped to "cpu", which still
goes through accelerate's dispatch (hooks on every block); the multi-GPU test splits the layers over
two GPUs and runs only where there are two."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_hf_model, make_transcoder, random_prompt, tokenizer

import circuit_trace as ct

pytest.importorskip("accelerate", reason="device_map needs accelerate (pip install -e '.[multi-gpu]')")

PROMPT = random_prompt(4, 7)


def block_map(model, devices: list[str]) -> dict:
    """{module name: device}: embeddings on the first device, layers split evenly, the rest on the last."""
    base = getattr(model, model.base_model_prefix)
    prefix = model.base_model_prefix
    layers_name, layers = next((n, m) for n, m in base.named_children() if isinstance(m, torch.nn.ModuleList))
    dm = {f"{prefix}.{n}": devices[-1] for n, _ in base.named_children() if n != layers_name}
    dm.update({n: devices[-1] for n, _ in model.named_children() if n != prefix})
    for name in ("embed_tokens", "wte", "wpe"):
        if f"{prefix}.{name}" in dm:
            dm[f"{prefix}.{name}"] = devices[0]
    for i in range(len(layers)):
        dm[f"{prefix}.{layers_name}.{i}"] = devices[i * len(devices) // len(layers)]
    return dm


def build(family: str, *, device_map=None, device="cpu"):
    model = make_hf_model(family, seed=3)
    tc = make_transcoder(kind="clt", skip=True, seed=1003, input_hook="hook_resid_mid", output_hook="hook_mlp_out")
    if device_map is None:
        return ct.load(model, tc, tokenizer=tokenizer(), device=device)
    dm = block_map(model, device_map) if isinstance(device_map, list) else device_map
    return ct.load(model, tc, tokenizer=tokenizer(), device_map=dm)


def attribute(rm):
    graph = ct.attribute(rm, PROMPT, batch_size=8, progress=False)
    graph.settings.get("stats", {}).pop("seconds", None)
    return graph


def assert_same_graph(a, b) -> None:
    assert a.nodes["node_id"].tolist() == b.nodes["node_id"].tolist()
    dense = lambda m: m.toarray() if hasattr(m, "toarray") else np.asarray(m)
    A = dense(a.adjacency)
    np.testing.assert_allclose(dense(b.adjacency), A, rtol=1e-4, atol=1e-5 * np.abs(A).max())


def edits(graph):
    feats = graph.feature_nodes()
    return [
        ct.scale_feature(int(feats.layer.iloc[0]), int(feats.feature.iloc[0]), -2.0),
        ct.scale_feature(int(feats.layer.iloc[-1]), int(feats.feature.iloc[-1]), 3.0),
    ]


def hooked_blocks(rm) -> list[str]:
    return [n for n, m in rm.model.named_modules() if getattr(m, "_hf_hook", None) is not None]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_dispatched_on_cpu_gives_identical_graphs_and_edits(family):
    plain, placed = build(family), build(family, device_map=["cpu"])
    assert any(".0" in n for n in hooked_blocks(placed)), "accelerate's hooks were not attached"
    a, b = attribute(plain), attribute(placed)
    assert a.equals(b)
    for mode in ("free", "constrained"):
        ra = ct.intervene(plain, PROMPT, edits(a), mode=mode)
        rb = ct.intervene(placed, PROMPT, edits(a), mode=mode)
        assert ra.top_after == rb.top_after and ra.kl == rb.kl
    for freeze in ("norms,attention", "all"):  # parts of the placed model held at clean values
        va, vb = (
            ct.validate(plain, a, max_sources=6, freeze=freeze),
            ct.validate(placed, a, max_sources=6, freeze=freeze),
        )
        assert va.pairs.equals(vb.pairs)


def test_auto_strategy_and_bad_maps():
    placed = build("llama", device_map="auto")
    assert hooked_blocks(placed)
    a, b = attribute(build("llama")), attribute(placed)
    if {p.device.type for p in placed.model.parameters()} == {"cpu"}:
        assert a.equals(b)
    else:  # "auto" put it on a GPU: the same graph to float tolerance (seen on the first GPU check)
        assert_same_graph(a, b)
    with pytest.raises(ValueError, match="device_map must be one of"):
        build("llama", device_map="everywhere")


@pytest.mark.skipif(
    torch.cuda.device_count() < 2,
    reason=f"needs 2+ CUDA GPUs to split a model across devices (this machine has {torch.cuda.device_count()})",
)
@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_split_over_two_gpus_matches_one_device(family):
    cpu, split = build(family), build(family, device_map=["cuda:0", "cuda:1"])
    devices = {p.device for p in split.model.parameters()}
    assert devices == {torch.device("cuda:0"), torch.device("cuda:1")}
    a, b = attribute(cpu), attribute(split)
    assert_same_graph(a, b)
    for mode in ("free", "constrained"):
        ra, rb = ct.intervene(cpu, PROMPT, edits(a), mode=mode), ct.intervene(split, PROMPT, edits(a), mode=mode)
        assert [t.token_id for t in ra.top_after] == [t.token_id for t in rb.top_after]
        assert rb.kl == pytest.approx(ra.kl, rel=1e-3, abs=1e-6)
    va, vb = ct.validate(cpu, a, max_sources=6, freeze="all"), ct.validate(split, a, max_sources=6, freeze="all")
    np.testing.assert_allclose(vb.pairs["measured"], va.pairs["measured"], rtol=1e-3, atol=1e-5)
