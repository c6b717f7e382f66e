"""The package's front door: every public name resolves, `import circuit_trace` stays cheap, wrong
argument types get one sentence, and the main result objects have short, informative reprs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import cached_replacement, random_prompt

import circuit_trace as ct


def test_every_public_name_resolves():
    missing = [name for name in ct.__all__ if getattr(ct, name, None) is None]
    assert missing == []
    assert {
        "activations_from",
        "strongest_path",
        "PromptError",
        "TargetError",
        "EditError",
        "TranscoderError",
        "TranscoderMismatchError",
        "CheckpointError",
        "UnsupportedArchitectureError",
    } <= set(ct.__all__)
    assert set(ct.__all__) <= set(dir(ct))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ct.nope  # noqa: B018


def test_import_is_cheap():
    """`import circuit_trace` loads no torch, transformers, plotly or training code (names resolve on
    first use: `test_every_public_name_resolves`)."""
    code = (
        "import sys, circuit_trace as ct\n"
        "heavy = [m for m in ('torch', 'transformers', 'nnsight', 'plotly', 'pandas', 'numpy',\n"
        "         'circuit_trace.transcoders', 'circuit_trace.viz', 'circuit_trace.interventions')\n"
        "         if m in sys.modules]\n"
        "assert heavy == [], heavy\n"
        "assert ct.__version__\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_organism_training_does_not_shadow_transcoder_training():
    from circuit_trace.organisms import train as organism_train

    assert not hasattr(organism_train, "train") and not hasattr(organism_train, "TrainConfig")
    assert ct.train.__module__ == "circuit_trace.transcoders.training.trainer"


@pytest.fixture(scope="module")
def rm():
    return cached_replacement("llama")


@pytest.fixture(scope="module")
def graph(rm):
    return ct.attribute(rm, random_prompt(1, 4), progress=False)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda rm, g: ct.attribute("gpt2", "w1"), "attribute(): model must be a ReplacementModel"),
        (lambda rm, g: ct.attribute(rm, 17), "attribute(): prompt must be a string or a list of token ids, got int"),
        (lambda rm, g: ct.attribute(rm, "w1", max_n_logits="5"), "max_n_logits must be an integer"),
        (lambda rm, g: ct.attribute(rm, "w1", batch_size=2.5), "batch_size must be an integer or None"),
        (lambda rm, g: ct.prune("graph.json"), "prune(): graph must be a Graph"),
        (lambda rm, g: ct.prune(g, node_threshold="0.8"), "node_threshold must be a number"),
        (lambda rm, g: ct.intervene("gpt2", "w1", []), "model must be a ReplacementModel"),
        (lambda rm, g: ct.generate(g, "w1", []), "model must be a ReplacementModel"),
        (lambda rm, g: ct.validate(rm, "g.json"), "validate(): graph must be a Graph"),
        (lambda rm, g: ct.strongest_path(rm, 0, 1), "strongest_path(): graph must be a Graph"),
        (lambda rm, g: ct.load(3), "model must be a hub id, a path or a PreTrainedModel, got int"),
    ],
)
def test_wrong_argument_types_get_one_sentence(rm, graph, call, message):
    with pytest.raises(TypeError) as exc:
        call(rm, graph)
    text = str(exc.value)
    assert message in text and "\n" not in text


def test_bad_device_is_one_sentence():
    with pytest.raises(ValueError, match="'banana' is not a torch device"):
        ct.load(device="banana")


def test_reprs(rm, graph):
    text = repr(rm)
    assert text.startswith("ReplacementModel(") and "llama, 3 layers, d_model 32" in text and "CLT" in text
    pruned = ct.prune(graph)
    text = repr(pruned)
    kept, total = int(pruned.node_mask.sum()), graph.n_nodes
    assert f"kept {kept} of {total} nodes" in text and f"{pruned.n_edges} of" in text
    assert "node_threshold=0.8" in text and len(text) < 200


def test_load_without_transcoders_refuses_before_reading_the_model(tmp_path):
    # The directory holds no model at all: the refusal must come before any attempt to load it.
    with pytest.raises(ValueError, match="transcoders are required"):
        ct.load(str(tmp_path / "no-model-here"))
