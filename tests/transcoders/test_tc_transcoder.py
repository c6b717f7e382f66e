"""Transcoder maths: CLT/PLT decode vs a naive loop, encode pieces, sparse encoding, random init,
gradients for training, and validation against a (fake) model adapter."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from circuit_trace.transcoders import Transcoder, TranscoderMismatchError

torch.set_num_threads(1)

ACTS = ["jumprelu", "relu", "topk"]


def naive_decode(tc: Transcoder, acts):
    """ŷ_l = Σ_{l' ≤ l} Σ_i a_{l',i} W_dec[l'][i, l − l'] + b_dec_l, one feature at a time."""
    lead = acts[0].shape[:-1]
    out = tc.b_dec[:, None, :].expand(tc.n_layers, math.prod(lead), tc.d_model).clone()
    for src in range(tc.n_layers):
        a = acts[src].reshape(-1, tc.d_features)
        W = tc.decoder(src)
        for j, tgt in enumerate(tc.output_layers(src)):
            for i in range(tc.d_features):
                out[tgt] += a[:, i : i + 1] * W[i, j]
    return out.reshape(tc.n_layers, *lead, tc.d_model)


shapes = st.tuples(st.integers(1, 4), st.integers(2, 9), st.integers(1, 24))  # L, d, F


@settings(max_examples=30, deadline=None)
@given(
    shape=shapes,
    seed=st.integers(0, 10_000),
    act=st.sampled_from(ACTS),
    cross=st.booleans(),
    skip=st.booleans(),
    P=st.integers(1, 4),
)
def test_decode_matches_naive_loop(shape, seed, act, cross, skip, P):
    L, d, F = shape
    tc = Transcoder.random(L, d, F, cross_layer=cross, activation=act, skip=skip, seed=seed, dtype=torch.float64)
    xs = torch.randn(L, 2, P, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * math.sqrt(1.0)
    with torch.no_grad():
        acts = [tc.encode(xs[l], l) for l in range(L)]
        got = tc.decode(acts)
        torch.testing.assert_close(got, naive_decode(tc, acts))
        skips = torch.stack([tc.skip(xs[l], l) for l in range(L)])
        torch.testing.assert_close(tc.reconstruct(xs), got + skips)
        if not skip:
            assert torch.count_nonzero(skips) == 0
        for l in range(L):
            assert tc.decoder(l).shape == (F, tc.n_outputs(l), d)


def test_plt_writes_only_its_own_layer():
    tc = Transcoder.random(3, 4, 8, cross_layer=False, activation="relu", seed=0)
    acts = [torch.zeros(2, 8) for _ in range(3)]
    acts[1][0, 3] = 2.0
    with torch.no_grad():
        y = tc.decode(acts)
        torch.testing.assert_close(y[0], tc.b_dec[0].expand(2, 4))
        torch.testing.assert_close(y[2], tc.b_dec[2].expand(2, 4))
        torch.testing.assert_close(y[1, 0], tc.b_dec[1] + 2.0 * tc.W_dec[1][3, 0])


def test_clt_feature_writes_to_all_later_layers():
    tc = Transcoder.random(4, 4, 8, cross_layer=True, activation="relu", seed=0)
    acts = [torch.zeros(8) for _ in range(4)]
    acts[1][5] = 1.5
    acts[3] = None  # None means "nothing active at this layer"
    with torch.no_grad():
        y = tc.decode(acts)
        torch.testing.assert_close(y[0], tc.b_dec[0])
        for j, tgt in enumerate(range(1, 4)):
            torch.testing.assert_close(y[tgt], tc.b_dec[tgt] + 1.5 * tc.W_dec[1][5, j])
        assert tc.decoder_vectors(1, [5, 0]).shape == (2, 3, 4)
        assert tc.decoder_vectors(3, torch.tensor([5])).shape == (1, 1, 4)


def test_decode_argument_errors():
    tc = Transcoder.random(2, 4, 8, cross_layer=True, seed=0)
    with pytest.raises(ValueError):
        tc.decode([torch.zeros(8)])
    with pytest.raises(ValueError):
        tc.decode([torch.zeros(7), torch.zeros(7)])
    with pytest.raises(ValueError):
        tc.decode([torch.zeros(2, 8), torch.zeros(3, 8)])
    with pytest.raises(ValueError):
        tc.reconstruct(torch.zeros(3, 5, 4))
    with pytest.raises(IndexError):
        tc.encode(torch.zeros(4), 2)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("cross", [True, False])
def test_encoder_pieces_and_sparse_encode(act, cross):
    tc = Transcoder.random(3, 6, 20, cross_layer=cross, activation=act, seed=3)
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        for l in range(3):
            h = tc.pre_activations(x, l)
            idx = torch.tensor([0, 7, 19, 7])
            torch.testing.assert_close(h[..., idx], x @ tc.encoder_vectors(l, idx).T + tc.encoder_bias(l, idx))
            a = tc.encode(x, l)
            torch.testing.assert_close(a, tc.activations(h, l))
            ind, val = tc.sparse_encode(x, l)
            assert ind.shape == (int((a != 0).sum()), 3) and val.shape == (ind.shape[0],)
            dense = torch.zeros_like(a)
            dense[ind.unbind(-1)] = val
            assert torch.equal(dense, a)
            assert (val != 0).all()
            if act == "topk":
                assert ((a != 0).sum(-1) <= tc.k).all()
            if act != "topk":
                # ReLU is JumpReLU with θ = 0: the same rule a = h·1[h > θ] holds for both
                assert torch.equal(a, h * (h > tc.thresholds(l)))


@pytest.mark.parametrize("act", ACTS)
def test_random_init_fires_a_sensible_fraction(act):
    d, F = 32, 256
    tc = Transcoder.random(2, d, F, cross_layer=True, activation=act, seed=7)
    x = torch.randn(500, d)  # norm ≈ √d
    with torch.no_grad():
        for l in range(2):
            frac = (tc.encode(x, l) != 0).float().mean().item()
            assert 0.05 <= frac <= 0.20, frac
        y = tc.reconstruct(x.expand(2, 500, d))
    assert torch.isfinite(y).all() and 0.1 * math.sqrt(d) < y.norm(dim=-1).mean() < 10 * math.sqrt(d)


def test_random_is_seeded():
    a = Transcoder.random(2, 4, 8, cross_layer=True, seed=1)
    b = Transcoder.random(2, 4, 8, cross_layer=True, seed=1)
    c = Transcoder.random(2, 4, 8, cross_layer=True, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.W_enc, c.W_enc)


@pytest.mark.parametrize("param", ["threshold", "log_threshold"])
def test_training_step_reaches_every_parameter(param):
    tc = Transcoder(2, 4, 16, cross_layer=True, activation="jumprelu", skip=True, threshold_param=param, bandwidth=1.0)
    ref = Transcoder.random(2, 4, 16, cross_layer=True, activation="jumprelu", skip=True, seed=0)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name == "threshold":
                getattr(tc, param).copy_(p if param == "threshold" else p.log())
            else:
                tc.get_parameter(name).copy_(p)
        torch.testing.assert_close(tc.thresholds(), ref.threshold)
    x = torch.randn(2, 64, 4) * 2
    loss = tc.reconstruct(x).pow(2).sum()
    loss.backward()
    for name, p in tc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert torch.count_nonzero(getattr(tc, param).grad) > 0  # the STE delivers a θ-gradient


def test_constructor_checks():
    with pytest.raises(ValueError, match="k"):
        Transcoder(2, 4, 8, cross_layer=True, activation="topk")
    with pytest.raises(ValueError, match="unknown activation"):
        Transcoder(2, 4, 8, cross_layer=True, activation="gelu")
    with pytest.raises(ValueError, match="unknown hook"):
        Transcoder(2, 4, 8, cross_layer=True, feature_input_hook="resid_mid")
    with pytest.raises(ValueError):
        Transcoder(2, 4, 8, cross_layer=True, feature_input_hook="hook_mlp_out")  # not an input point
    tc = Transcoder(
        2,
        4,
        8,
        cross_layer=False,
        feature_input_hook="blocks.{l}.ln2.hook_normalized",
        feature_output_hook="blocks.3.mlp.hook_out",
    )
    assert (tc.feature_input_hook, tc.feature_output_hook) == ("ln2.hook_normalized", "mlp.hook_out")
    assert Transcoder(2, 4, 8, cross_layer=True, activation="topk", k=3).k == 3
    with pytest.raises(ValueError):
        Transcoder(2, 4, 8, cross_layer=True, activation="topk", k=3).thresholds()


class FakeAdapter:
    def __init__(self, n_layers, d_model, hooks=("hook_resid_mid", "hook_mlp_out")):
        self.n_layers, self.d_model, self.hooks = n_layers, d_model, hooks

    def hook_module(self, name, layer):
        if name not in self.hooks:
            raise ValueError(f"unsupported hook {name}")
        return object(), "output", f"model.layers.{layer}"


def test_validate_against_adapter():
    tc = Transcoder.random(3, 8, 16, cross_layer=True, seed=0, name="my/clt")
    tc.validate_against(FakeAdapter(3, 8))
    with pytest.raises(TranscoderMismatchError, match="3 layers.*model has 4"):
        tc.validate_against(FakeAdapter(4, 8))
    with pytest.raises(TranscoderMismatchError, match=r"W_enc.*\[3, 16, 8\].*d_model = 12"):
        tc.validate_against(FakeAdapter(3, 12))
    with pytest.raises(TranscoderMismatchError, match="feature_output_hook 'hook_mlp_out'"):
        tc.validate_against(FakeAdapter(3, 8, hooks=("hook_resid_mid",)))
    with pytest.raises(ValueError):  # it is a ValueError too
        tc.validate_against(FakeAdapter(2, 8))


def test_dtype_and_device_follow_module():
    tc = Transcoder.random(2, 4, 8, cross_layer=True, seed=0, dtype=torch.float64)
    assert tc.dtype == torch.float64
    assert tc.encode(torch.randn(3, 4), 0).dtype == torch.float64
    tc = tc.to(torch.float32)
    assert tc.reconstruct(torch.randn(2, 3, 4)).dtype == torch.float32


def test_theta_gradient_reaches_features_just_below_threshold():
    # Feature 0 sits just below θ: inactive, yet the STE must move θ (via dL/da of the decoder).
    tc = Transcoder(1, 2, 3, cross_layer=True, bandwidth=0.5)
    with torch.no_grad():
        tc.W_enc[0, 0] = torch.tensor([1.0, 0.0])
        tc.threshold.fill_(1.0)
        tc.W_dec[0].fill_(1.0)
    x = torch.tensor([[[0.9, 0.0]]])  # h_0 = 0.9 < θ = 1
    y = tc.reconstruct(x)
    assert torch.count_nonzero(y) == 0
    y.sum().backward()
    assert tc.threshold.grad[0, 0] < 0  # lowering θ would switch the feature on and raise y


@pytest.mark.parametrize("cross", [True, False])
def test_sparse_and_dense_decode_agree(cross):
    tc = Transcoder.random(3, 5, 40, cross_layer=cross, activation="jumprelu", seed=2)
    xs = torch.randn(3, 4, 5)
    with torch.no_grad():
        sparse = tc.reconstruct(xs)  # no grad: only active rows are multiplied
    dense = tc.reconstruct(xs.requires_grad_())  # grad: full decoder
    torch.testing.assert_close(sparse, dense.detach())


def test_validate_against_real_adapter():
    """Same checks through the models/ adapter of a tiny random Llama."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from circuit_trace.models import adapters

    cfg = LlamaConfig(
        vocab_size=16,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
    )
    adapter = adapters.get_adapter(LlamaForCausalLM(cfg))
    Transcoder.random(2, 8, 4, cross_layer=True, seed=0, input_hook="ln2.hook_normalized").validate_against(adapter)
    with pytest.raises(TranscoderMismatchError):
        Transcoder.random(3, 8, 4, cross_layer=True, seed=0).validate_against(adapter)
    with pytest.raises(TranscoderMismatchError):
        Transcoder.random(2, 6, 4, cross_layer=False, seed=0).validate_against(adapter)
