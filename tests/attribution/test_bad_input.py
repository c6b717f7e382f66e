"""Bad inputs fail early with errors that say what is wrong; custom targets obey the same identity
as logit targets (Σ incoming edges + constant = target value)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from helpers import (
    N_CTX,
    PROMPT,
    SUPPORTED,
    cached_replacement,
    make_hf_model,
    make_transcoder,
    plain_forward,
    tokenizer,
)

import circuit_trace as ct
from circuit_trace.attribution.targets import TargetError
from circuit_trace.models import UnsupportedArchitectureError
from circuit_trace.transcoders import CheckpointError, TranscoderMismatchError, load_transcoders


@pytest.fixture(scope="module")
def rm():
    return cached_replacement("llama", "clt", "jumprelu", False, None, None, 0)


def attribute(rm, prompt=PROMPT, **kw):
    kw.setdefault("progress", False)
    return ct.attribute(rm, prompt, **kw)


# -- prompts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt(rm, prompt):
    with pytest.raises(ct.PromptError, match="empty"):
        attribute(rm, prompt)


def test_prompt_of_only_bos(rm):
    with pytest.raises(ct.PromptError, match="no token after BOS"):
        attribute(rm, [0])


def test_prompt_longer_than_context(rm):
    long_prompt = " ".join(f"w{i}" for i in range(N_CTX + 3))
    with pytest.raises(ct.PromptError, match=rf"context is {N_CTX}") as e:
        attribute(rm, long_prompt)
    assert str(N_CTX + 4) in str(e.value)  # the prompt's length (with BOS) is named
    with pytest.raises(ct.PromptError, match="context"):
        attribute(rm, list(range(N_CTX + 1)))
    # exactly the context length is fine
    attribute(rm, " ".join(f"w{i}" for i in range(N_CTX - 1)), max_feature_nodes=5)


def test_token_ids_outside_vocabulary(rm):
    with pytest.raises(ct.PromptError, match="vocabulary"):
        attribute(rm, [0, 5, 10_000])


# -- transcoders that do not fit the model -----------------------------------------------------------
def test_transcoder_d_model_mismatch():
    model = make_hf_model("llama")
    with pytest.raises(TranscoderMismatchError, match="d_model") as e:
        ct.load(model, make_transcoder(3, 24), tokenizer=tokenizer(), device="cpu")
    assert "24" in str(e.value) and "32" in str(e.value)


def test_transcoder_layer_count_mismatch():
    model = make_hf_model("gpt2")
    with pytest.raises(TranscoderMismatchError, match="layers") as e:
        ct.load(model, make_transcoder(2, 32), tokenizer=tokenizer(), device="cpu")
    assert "2 layers" in str(e.value) and "3 layers" in str(e.value)


def test_transcoder_unknown_hook_names():
    with pytest.raises(ValueError, match="hook_resid_pre"):
        make_transcoder(3, 32, input_hook="hook_resid_pre")
    with pytest.raises(ValueError, match="feature_output_hook"):
        make_transcoder(3, 32, output_hook="hook_resid_mid")  # an input point, not an MLP output
    # a transcoder object whose hook names were edited by hand: named at load time
    tc = make_transcoder(3, 32)
    tc.feature_input_hook = "blocks.0.attn.hook_z"
    with pytest.raises(TranscoderMismatchError, match="feature_input_hook") as e:
        ct.load(make_hf_model("qwen3"), tc, tokenizer=tokenizer(), device="cpu")
    assert "attn.hook_z" in str(e.value)


def test_checkpoint_with_unknown_hook_name(tmp_path):
    tc = make_transcoder(3, 32, kind="plt")
    tc.save(str(tmp_path / "tc"))
    cfg_path = tmp_path / "tc" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["feature_output_hook"] = "hook_resid_post"
    cfg_path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError, match="feature_output_hook.*hook_resid_post"):
        load_transcoders(str(tmp_path / "tc"))


# -- targets and options -----------------------------------------------------------------------------
def test_target_that_is_not_one_token(rm):
    with pytest.raises(TargetError, match="exactly one token"):
        attribute(rm, targets=["w1 w2"])
    with pytest.raises(TargetError, match="exactly one token"):
        attribute(rm, targets=["w3", "w4 w5"])
    with pytest.raises(TargetError, match="exactly one token"):
        ct.logit_difference(rm, "w3", "w4 w5")
    with pytest.raises(TargetError, match="outside the vocabulary"):
        attribute(rm, targets=[10_000])
    with pytest.raises(TargetError, match="non-empty"):
        attribute(rm, targets=[])


@pytest.mark.parametrize("n", [0, -1])
def test_max_feature_nodes_not_positive(rm, n):
    with pytest.raises(ValueError, match="max_feature_nodes"):
        attribute(rm, max_feature_nodes=n)


def test_batch_size_not_positive(rm):
    with pytest.raises(ValueError, match="batch_size"):
        attribute(rm, batch_size=0)


# -- unsupported architectures --------------------------------------------------------------------------
def _opt():
    from transformers import OPTConfig, OPTForCausalLM

    return OPTForCausalLM(
        OPTConfig(
            num_hidden_layers=2,
            hidden_size=32,
            ffn_dim=64,
            num_attention_heads=2,
            vocab_size=100,
            max_position_embeddings=16,
            word_embed_proj_dim=32,
        )
    )


def _bert():
    from transformers import BertConfig, BertLMHeadModel

    return BertLMHeadModel(
        BertConfig(
            num_hidden_layers=2,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            vocab_size=100,
            max_position_embeddings=16,
            is_decoder=True,
        )
    )


@pytest.mark.parametrize("build", [_opt, _bert], ids=["opt", "bert"])
def test_unsupported_architecture_names_supported_families(build):
    model = build()
    with pytest.raises(UnsupportedArchitectureError) as e:
        ct.load(model, make_transcoder(2, 32), tokenizer=tokenizer(), device="cpu")
    msg = str(e.value)
    assert model.config.model_type in msg
    for fam in SUPPORTED:
        assert fam in msg, f"{fam} missing from {msg!r}"


# -- non-finite transcoder weights ---------------------------------------------------------------------
@pytest.mark.parametrize("tensor", ["W_enc", "b_enc", "threshold", "b_dec", "W_dec", "W_skip"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_transcoder_weights(tensor, value):
    """NaN/inf anywhere in the weights is reported at load, naming the tensor — including places a
    forward pass never reveals (a NaN threshold just switches its feature off; the decoder row of
    a feature that is inactive on the prompt is never read)."""
    tc = make_transcoder(3, 32, skip=True)
    with torch.no_grad():
        if tensor == "W_dec":
            tc.W_dec[2][-1, 0, 3] = value
        else:
            getattr(tc, tensor).view(-1)[7] = value
    with pytest.raises(ValueError, match=rf"(?i){tensor}.*(nan|inf)"):
        ct.load(make_hf_model("llama"), tc, tokenizer=tokenizer(), device="cpu")


# -- custom targets ---------------------------------------------------------------------------------
def _source_free_target_constant(rm, prompt, direction, bias):
    lr = rm.local_context(prompt)
    emb0, mlp0 = lr.source_free_constants()
    fo0 = lr.frozen_forward(1, embeds=emb0, mlp_out=mlp0, requires_grad=False)
    return float(fo0.z[0, 0].double() @ direction.double()) + bias


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_logit_difference_edges_sum_to_difference(family):
    rm = cached_replacement(family, "clt", "jumprelu", True, None, None, 2)
    target = ct.logit_difference(rm, "w3", "w7")
    g = attribute(rm, targets=[target], batch_size=64)
    nodes = g.nodes
    assert (nodes.kind == "logit").sum() == 1
    r = int(np.flatnonzero(nodes.kind.to_numpy() == "logit")[0])
    A = np.asarray(g.adjacency.toarray() if hasattr(g.adjacency, "toarray") else g.adjacency, dtype=np.float64)
    _, raw = plain_forward(rm, rm.tokenize(PROMPT))
    diff = float(raw[-1, 3 + 3] - raw[-1, 3 + 7])  # ids of "w3", "w7" (after <bos>, <eos>, <unk>)
    const = _source_free_target_constant(rm, PROMPT, target.direction, target.bias)
    total = A[r].sum() + const
    assert abs(total - diff) <= 2e-5 * (1 + np.abs(A[r]).sum() + abs(const)), (total, diff)
    assert abs(float(g.target_values[r]) - diff) <= 1e-4 * (1 + abs(diff))


def test_custom_direction_and_token_targets_together(rm):
    d = torch.randn(rm.adapter.d_model, generator=torch.Generator().manual_seed(3))
    g = attribute(rm, targets=["w9", ct.custom_target(d, weight=0.5, label="probe")], batch_size=64)
    logits = g.nodes[g.nodes.kind == "logit"]
    assert logits.label.tolist()[-1] == "probe" and logits.token_id.tolist()[0] == 3 + 9
    r = int(np.flatnonzero(g.nodes.kind.to_numpy() == "logit")[-1])
    A = np.asarray(g.adjacency, dtype=np.float64)
    lr = rm.local_context(PROMPT)
    value = float(lr.frozen_forward(1, requires_grad=False).z[0, 0].double() @ d.double())
    const = _source_free_target_constant(rm, PROMPT, d, 0.0)
    assert abs(A[r].sum() + const - value) <= 2e-5 * (1 + np.abs(A[r]).sum() + abs(const))
    with pytest.raises(TargetError, match="shape"):
        attribute(rm, targets=[ct.custom_target(torch.ones(7))])
    with pytest.raises(TargetError, match="NaN"):
        ct.custom_target(torch.full((32,), float("nan")))
