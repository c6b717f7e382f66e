"""`validate(freeze=...)`: parts of the real model held at the clean prompt's values. With every
part frozen the real model is linear in every feature, and the graph's predictions must equal the
measured ablations; with fewer, the frozen parts must keep their clean values and nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from iv_fixtures import SETUPS, graph_of, hook_count, replacement

from circuit_trace.interventions import FREEZE_PARTS, ValidationReport, freeze_parts, frozen, validate
from circuit_trace.models.freeze import FrozenState, freeze_mode


@pytest.mark.parametrize(
    "family,kind,skip", [(f, k, False) for f, k in SETUPS] + [("qwen3", "clt", True), ("gemma3", "plt", True)]
)
def test_fully_frozen_model_matches_the_graph_exactly(family, kind, skip):
    rm, graph = replacement(family, kind, skip), graph_of(family, kind, skip)
    rep = validate(rm, graph, n_pairs=30, seed=2, max_sources=10, freeze="all")
    d = rep.pairs
    assert (d["kind"] == "feature").sum() > 10 and (d["kind"] == "logit").sum() > 0
    scale = float(np.abs(d["measured"]).max())
    assert scale > 1e-3  # the ablations move something
    np.testing.assert_allclose(d["predicted_total"], d["measured"], atol=2e-5 * scale)
    assert hook_count(rm.model) == 0


def test_without_the_choice_the_real_model_is_not_linear():
    # the previous test can fail: one part left live and the predictions are off
    rm, graph = replacement("gpt2", "clt"), graph_of("gpt2", "clt")
    d = validate(rm, graph, n_pairs=30, seed=2, max_sources=10, freeze="norms,attention,errors").pairs
    assert float(np.abs(d["predicted_total"] - d["measured"]).max()) > 1e-3


@pytest.mark.parametrize("parts", ["norms", "attention", "norms,attention,errors", "all"])
def test_frozen_parts_keep_the_clean_pass(parts):
    rm, graph = replacement("llama", "plt"), graph_of("llama", "plt")
    ids = torch.tensor([graph.input_ids])
    with torch.no_grad():
        clean = rm.model(input_ids=ids).logits
        with frozen(rm, graph.input_ids, parts):
            held = rm.model(input_ids=ids).logits
    torch.testing.assert_close(held, clean, atol=1e-5, rtol=1e-5)
    assert hook_count(rm.model) == 0


def test_frozen_norms_alone_keep_attention_live():
    """Another prompt of the same length under norms-only freezing: the final norm divides by the
    recorded denominators, while attention follows the new prompt (unlike freezing both)."""
    rm, graph = replacement("llama", "plt"), graph_of("llama", "plt")
    ad = rm.adapter
    ids = torch.tensor([graph.input_ids])
    other = torch.roll(ids, 1, dims=1)
    norm = ad.model.model.norm
    seen: dict[str, torch.Tensor] = {}
    handle = norm.register_forward_hook(lambda _m, a, out: seen.update(x=a[0], y=out))
    state = FrozenState()
    try:
        with torch.no_grad():
            with freeze_mode(ad, "record", state):
                ad.model(input_ids=ids)
            with freeze_mode(ad, "frozen", state, frozenset({"norms"})):
                norms_only = ad.model(input_ids=other).logits
            expected = seen["x"] * state.norm_scales[id(norm)] * norm.weight
            torch.testing.assert_close(seen["y"], expected)
            with freeze_mode(ad, "frozen", state):
                both = ad.model(input_ids=other).logits
    finally:
        handle.remove()
    assert not torch.allclose(norms_only, both, atol=1e-4)


def test_freeze_arguments():
    assert freeze_parts(None) == freeze_parts("") == ()
    assert freeze_parts("all") == FREEZE_PARTS
    assert freeze_parts("errors, norms") == ("norms", "errors")
    assert freeze_parts(["choice", "errors"]) == ("errors", "choice")
    with pytest.raises(ValueError, match="needs 'errors'"):
        freeze_parts("choice")
    with pytest.raises(ValueError, match="cannot freeze mlps"):
        freeze_parts("norms,mlps")
    with pytest.raises(ValueError, match="subset"):
        with freeze_mode(replacement("gpt2", "clt").adapter, "frozen", FrozenState(), frozenset({"errors"})):
            pass


def test_a_frozen_report_is_a_diagnosis(tmp_path):
    rm, graph = replacement("gpt2", "clt"), graph_of("gpt2", "clt")
    rep = validate(rm, graph, n_pairs=20, seed=1, max_sources=6, freeze="norms")
    assert rep.frozen == ("norms",) and rep.passed is None
    assert rep.summary["passed"].isna().all()
    assert "frozen: norms" in str(rep) and "norms frozen" in rep.figure().layout.title.text
    assert "goal" not in rep.figure().layout.title.text  # a diagnosis is not compared with it
    rep.save(tmp_path / "v.json")
    assert ValidationReport.load(tmp_path / "v.json").frozen == ("norms",)
    free = validate(rm, graph, n_pairs=20, seed=1, max_sources=6)
    assert free.frozen == () and free.passed in (True, False) and "goal 0.72" in free.figure().layout.title.text
    assert not np.allclose(free.pairs["measured"], rep.pairs["measured"])


def test_frozen_refuses_another_length_and_cleans_up():
    rm, graph = replacement("llama", "plt"), graph_of("llama", "plt")
    with pytest.raises(ValueError, match="frozen for"):
        with torch.no_grad(), frozen(rm, graph.input_ids, "errors"):
            rm.model(input_ids=torch.tensor([graph.input_ids[:-1]]))
    assert hook_count(rm.model) == 0
