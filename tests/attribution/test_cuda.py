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


@pytest.mark.parametrize("family,cap", [("gpt2", None), ("gemma2", 20), ("llama", None)])
def test_cuda_graph_equals_cpu(family, cap):
    graphs = []
    for device in ("cpu", "cuda"):
        model = make_hf_model(family, seed=3)
        tc = make_transcoder(kind="clt", skip=True, seed=1003, input_hook="hook_resid_mid", output_hook="hook_mlp_out")
        rm = ct.load(model, tc, tokenizer=tokenizer(), device=device)
        graphs.append(ct.attribute(rm, random_prompt(4, 7), max_feature_nodes=cap, batch_size=8, progress=False))
    cpu, gpu = graphs
    assert gpu.nodes.node_id.tolist() == cpu.nodes.node_id.tolist()
    A = dense(cpu.adjacency)
    np.testing.assert_allclose(dense(gpu.adjacency), A, rtol=1e-4, atol=1e-5 * np.abs(A).max())
