"""bfloat16 attribution (`dtype="bfloat16"`): nearly the same nodes as float32, and edge weights
equal to the float32 ones up to bf16 rounding."""

from __future__ import annotations

import helpers
import numpy as np
import pytest

import circuit_trace as ct


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_bfloat16_graph_close_to_float32(family):
    rm32 = helpers.make_replacement(family, seed=5)
    g32 = ct.attribute(rm32, helpers.PROMPT, progress=False)
    rm16 = helpers.make_replacement(family, seed=5)
    g16 = ct.attribute(rm16, helpers.PROMPT, dtype="bfloat16", progress=False)
    assert rm16.dtype.is_floating_point and str(rm16.dtype) == "torch.bfloat16"
    same = g16.nodes["node_id"].isin(g32.nodes["node_id"]).mean()
    assert same > 0.9, f"only {same:.0%} of bf16 nodes are fp32 nodes"
    # edges between nodes present in both graphs agree to bf16 precision (measured: ~2% relative
    # Frobenius error, spread evenly over feature, error and embedding sources)
    common = sorted(set(g16.nodes["node_id"]) & set(g32.nodes["node_id"]))
    i16 = [g16.index_of(n) for n in common]
    i32 = [g32.index_of(n) for n in common]
    a16 = np.asarray(g16.adjacency)[np.ix_(i16, i16)]
    a32 = np.asarray(g32.adjacency)[np.ix_(i32, i32)]
    assert np.linalg.norm(a16 - a32) <= 0.05 * np.linalg.norm(a32)
