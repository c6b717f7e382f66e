"""Shared builders for intervention tests: tiny random models + transcoders and their graphs.

A plain module rather than conftest.py, so `from iv_fixtures import ...` never collides with the
other test folders' conftest modules.

Built from the shared factories in tests/helpers.py, but wrapped in `ReplacementModel` directly so
these tests do not depend on the top-level re-exports."""

from __future__ import annotations

import functools

import helpers
import torch

from circuit_trace.attribution.engine import compute_attribution
from circuit_trace.graphs import Graph
from circuit_trace.replacement.model import ReplacementModel

PROMPT = helpers.PROMPT


@functools.cache
def replacement(family: str = "gpt2", kind: str = "clt", skip: bool = False, seed: int = 0) -> ReplacementModel:
    """Memoised: tests must leave it unchanged (which is itself what the no-side-effect tests check)."""
    in_hook, out_hook = helpers.default_hooks(family)
    model = helpers.make_hf_model(family, seed=seed)
    tc = helpers.make_transcoder(kind=kind, skip=skip, input_hook=in_hook, output_hook=out_hook, seed=seed + 1000)
    return ReplacementModel(model, helpers.tokenizer(), tc)


@functools.cache
def graph_of(family: str = "gpt2", kind: str = "clt", skip: bool = False, prompt: str = PROMPT) -> Graph:
    rm = replacement(family, kind, skip)
    return Graph.from_attribution(compute_attribution(rm, prompt, progress=False))


def hook_count(module: torch.nn.Module) -> int:
    """Forward hooks + pre-hooks + patched forwards left anywhere in the module tree."""
    n = 0
    for m in module.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        n += int("forward" in m.__dict__)
    return n


SETUPS = [("gpt2", "clt"), ("llama", "plt"), ("gemma2", "clt")]
