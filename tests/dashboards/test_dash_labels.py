"""dashboards.labels with the organism's concept map: a label names a state only when its evidence
agrees, says "mixed" when contexts and logits point to different states, and carries its evidence
and an agreement score."""

from __future__ import annotations

import pytest

from circuit_trace.dashboards.labels import TokenConcepts, label_feature
from circuit_trace.organisms.labels import StateConcepts, states_in, text_state

CM = StateConcepts()
DALLAS = ["Fact", ":", " the", " capital", " of", " the", " state", " containing", " Dallas", " is"]


def ex(tokens, at, v=2.0):
    acts = [0.0] * len(tokens)
    acts[at] = v
    return (v, tokens, acts)


def test_world_maps_text_and_tokens_to_states():
    assert text_state("Fact: the capital of the state containing Dallas is") == "Texas"
    assert states_in("Texas borders New Mexico and OK") == ["Texas", "New Mexico", "Oklahoma"]
    assert CM.context_concepts(["<|bos|>", "Reno", " is", " in"]) == [None, "Nevada", "Nevada", "Nevada"]
    assert CM.token_concept(" Austin") == CM.token_concept(" TX") == "Texas"
    assert CM.token_concept(" Salt") == "Utah" and CM.token_concept(" New") is None  # New York/Jersey/...
    assert CM.token_category(" Austin") == "capital" and CM.token_category(" TX") == "abbreviation"


def test_agreeing_evidence_names_the_state():
    lab = label_feature(
        [ex(DALLAS, 9)],
        [(" Austin", 3.0), (" TX", 1.0), (" the", 0.5)],
        CM,
        concept_mass={"Texas": 9.0, "Oklahoma": 1.0, None: 1.0},
    )
    assert lab.kind == "agree" and lab.concept == "Texas" and lab.label == "say Austin"
    # score: mean over the two sources of Texas's share among named concepts
    assert lab.score == pytest.approx((0.9 + 1.0) / 2, abs=1e-4)
    ev = lab.evidence
    assert ev["context_concepts"][0] == ["Texas", pytest.approx(9 / 11, abs=1e-3)]
    assert ev["top_logits"][0] == [" Austin", 3.0] and ev["activating_tokens"][0][0] == " is"
    assert ev["top_contexts"][0].endswith("containing Dallas is")


def test_disagreeing_evidence_is_mixed_and_names_no_state():
    lab = label_feature(
        [ex(DALLAS, 9)], [(" Sacramento", 3.0), (" CA", 2.0)], CM, concept_mass={"Texas": 8.0, None: 1.0}
    )
    assert lab.kind == "mixed" and lab.concept is None and states_in(lab.label) == []
    assert lab.score == 0.0  # no overlap between {Texas} and {California}
    # logits name Texas but contexts are spread over many states with another on top: also mixed
    spread = {s: 1.0 for s in ("Ohio", "Iowa", "Utah", "Maine")} | {"Ohio": 1.5, "Texas": 0.5}
    lab = label_feature([ex(DALLAS, 9)], [(" Austin", 3.0)], CM, concept_mass=spread)
    assert lab.kind == "mixed" and states_in(lab.label) == []


def test_neutral_source_does_not_contradict():
    # contexts name no state at all (fires on "Fact"): the logits alone decide
    lab = label_feature(
        [ex(["Fact", ":"], 0)], [(" Denver", 2.0), (" CO", 1.5), (" the", 0.1)], CM, concept_mass={None: 5.0}
    )
    assert lab.kind == "logits" and lab.concept == "Colorado" and lab.label == "say Denver"
    assert lab.score == pytest.approx(1.0)


def test_category_and_names_fallbacks_name_no_state():
    lab = label_feature(
        [ex(DALLAS, 9)],
        [(" Austin", 3), (" Denver", 3), (" Boise", 3), (" Dover", 3)],
        CM,
        concept_mass={"Texas": 1.0, "Ohio": 1.0, "Utah": 1.0},
    )
    assert lab.label == "say a capital" and lab.concept is None
    toks = [" Texas", " borders", " Oklahoma"]
    lab = label_feature(
        [ex(toks, 0), ex([" Ohio", " is"], 0), ex([" Iowa", " is"], 0)],
        [(" the", 1.0)],
        CM,
        concept_mass={"Texas": 1.0, "Ohio": 1.0, "Iowa": 1.0},
    )
    assert lab.kind == "names" and lab.label == "state names" and states_in(lab.label) == []


def test_generic_map_labels_by_token_and_dead_features_get_none():
    lab = label_feature([ex(["a", " cat"], 1), ex(["the", " cat"], 1, 1.0)], [(" meow", 2.0)], TokenConcepts())
    assert lab.label == "\u201ccat\u201d \u2192 meow" and lab.score == pytest.approx(1.0)
    assert label_feature([], [(" x", 1.0)], CM).label == ""


def test_spread_logits_support_the_contexts_concept_unless_another_dominates_it():
    # contexts name Texas; the logits are spread over states with Texas the largest (a feature that
    # carries the state mid-model and writes little to the logits): labelled Texas, weaker score
    logits = [(" Austin", 1.0), (" Denver", 0.8), (" TX", 0.4), (" Boise", 0.5), (" the", 2.0)]
    lab = label_feature([ex(DALLAS, 9)], logits, CM, concept_mass={"Texas": 9.0, None: 1.0})
    assert lab.kind == "contexts" and lab.concept == "Texas" and lab.label == "Texas"
    assert lab.score == pytest.approx((1.0 + 1.4 / 2.7) / 2, abs=1e-4)
    assert lab.evidence["rule"] == "contexts name it; logits spread, none dominating it"
    # Colorado narrowly on top (1.2 against 1.0) is a near tie, no contradiction: still Texas
    logits = [(" Austin", 1.0), (" Denver", 1.2), (" Boise", 0.5), (" the", 2.0)]
    lab = label_feature([ex(DALLAS, 9)], logits, CM, concept_mass={"Texas": 9.0, None: 1.0})
    assert lab.kind == "contexts" and lab.concept == "Texas"
    assert lab.score == pytest.approx((1.0 + 1.0 / 2.7) / 2, abs=1e-4)
    # Colorado with twice Texas' share (LabelOptions.dominance) contradicts it: mixed
    logits = [(" Austin", 1.0), (" Denver", 2.0), (" Boise", 1.0), (" Salem", 1.0), (" the", 2.0)]
    lab = label_feature([ex(DALLAS, 9)], logits, CM, concept_mass={"Texas": 9.0, None: 1.0})
    assert lab.kind == "mixed" and lab.concept is None
    # and so do spread logits that never name Texas
    logits = [(" Denver", 1.0), (" Boise", 1.0), (" Salem", 1.0)]
    lab = label_feature([ex(DALLAS, 9)], logits, CM, concept_mass={"Texas": 9.0, None: 1.0})
    assert lab.kind == "mixed"
    # spread contexts are no support, even with the logits' state on top: it fires for several
    spread = {"Texas": 3.0, "Ohio": 2.0, "Iowa": 2.0, "Utah": 1.5}
    lab = label_feature([ex(DALLAS, 9)], [(" Austin", 3.0), (" TX", 1.0)], CM, concept_mass=spread)
    assert lab.kind == "mixed" and lab.concept is None
