"""Checkpoints: circuit-tracer layout round trips, laziness, atomic saves, and clear errors for
broken files."""

import os

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from circuit_trace.transcoders import CheckpointError, Transcoder, load_transcoders
from circuit_trace.transcoders.lazy import READ_LOG

torch.set_num_threads(1)


def _keys(path):
    with safe_open(str(path), "pt") as f:
        return set(f.keys())


def _same_outputs(a: Transcoder, b: Transcoder, seed=0, exact=True):
    xs = torch.randn(a.n_layers, 2, 3, a.d_model, generator=torch.Generator().manual_seed(seed)).to(a.dtype) * 1.5
    with torch.no_grad():
        ya, yb = a.reconstruct(xs), b.reconstruct(xs)
        for l in range(a.n_layers):
            assert torch.equal(a.encode(xs[l], l), b.encode(xs[l], l))
            idx = torch.arange(a.d_features)
            assert torch.equal(a.decoder_vectors(l, idx), b.decoder_vectors(l, idx))
    if exact:
        assert torch.equal(ya, yb)
    else:  # a lazy decode sums over the active rows only: same terms, possibly another order
        torch.testing.assert_close(ya, yb)  # default tolerances follow the dtype


# ---------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("act", ["jumprelu", "relu", "topk"])
@pytest.mark.parametrize("cross", [True, False])
@pytest.mark.parametrize("skip", [True, False])
def test_round_trip(tmp_path, act, cross, skip):
    tc = Transcoder.random(
        3,
        8,
        16,
        cross_layer=cross,
        activation=act,
        skip=skip,
        seed=5,
        input_hook="ln2.hook_normalized",
        output_hook="hook_mlp_out",
        model_name="tiny",
    )
    tc.save(tmp_path / "ckpt")
    for lazy in (False, True):
        back = load_transcoders(tmp_path / "ckpt", lazy=lazy)
        assert (back.is_cross_layer, back.activation, back.k, back.has_skip) == (cross, act, tc.k, skip)
        assert (back.feature_input_hook, back.feature_output_hook, back.model_name) == (
            "ln2.hook_normalized",
            "hook_mlp_out",
            "tiny",
        )
        assert back.name == str(tmp_path / "ckpt")
        assert all(back.is_decoder_loaded(l) != lazy for l in range(3))
        _same_outputs(tc, back, exact=not lazy)


def test_files_follow_circuit_tracer_layout(tmp_path):
    clt = Transcoder.random(3, 4, 8, cross_layer=True, activation="jumprelu", skip=True, seed=0)
    clt.save(tmp_path / "clt")
    assert sorted(os.listdir(tmp_path / "clt")) == sorted(
        ["config.yaml"] + [f"W_enc_{l}.safetensors" for l in range(3)] + [f"W_dec_{l}.safetensors" for l in range(3)]
    )
    assert _keys(tmp_path / "clt/W_enc_1.safetensors") == {"W_enc_1", "b_enc_1", "b_dec_1", "threshold_1", "W_skip_1"}
    dec = load_file(str(tmp_path / "clt/W_dec_1.safetensors"))
    assert dec["W_dec_1"].shape == (8, 2, 4)
    cfg = yaml.safe_load((tmp_path / "clt/config.yaml").read_text())
    assert cfg["model_kind"] == "cross_layer_transcoder"
    assert (cfg["feature_input_hook"], cfg["feature_output_hook"]) == ("hook_resid_mid", "hook_mlp_out")

    plt = Transcoder.random(2, 4, 8, cross_layer=False, activation="jumprelu", skip=True, seed=0)
    plt.save(tmp_path / "plt")
    assert sorted(os.listdir(tmp_path / "plt")) == ["config.yaml", "layer_0.safetensors", "layer_1.safetensors"]
    t = load_file(str(tmp_path / "plt/layer_1.safetensors"))
    assert set(t) == {"W_enc", "W_dec", "b_enc", "b_dec", "activation_function.threshold", "W_skip"}
    assert t["W_dec"].shape == (8, 4) and t["W_enc"].shape == (8, 4)
    assert yaml.safe_load((tmp_path / "plt/config.yaml").read_text())["model_kind"] == "transcoder_set"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    L=st.integers(1, 4),
    d=st.integers(1, 6),
    F=st.integers(1, 12),
    seed=st.integers(0, 999),
    act=st.sampled_from(["jumprelu", "relu", "topk"]),
    cross=st.booleans(),
    skip=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
)
def test_round_trip_property(tmp_path_factory, L, d, F, seed, act, cross, skip, dtype):
    path = tmp_path_factory.mktemp("rt") / "ckpt"
    tc = Transcoder.random(L, d, F, cross_layer=cross, activation=act, skip=skip, seed=seed, dtype=dtype)
    tc.save(path)
    back = load_transcoders(path, lazy=False)
    assert back.dtype == dtype
    sd_a, sd_b = tc.state_dict(), back.state_dict()
    assert sd_a.keys() == sd_b.keys()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    _same_outputs(tc, load_transcoders(path, lazy=True), seed=seed, exact=False)


def test_log_threshold_round_trip_and_dtype_override(tmp_path):
    tc = Transcoder(2, 4, 8, cross_layer=True, threshold_param="log_threshold")
    with torch.no_grad():
        tc.W_enc.normal_()
        tc.log_threshold.uniform_(-1, 0.5)
        for w in tc.W_dec:
            w.normal_()
    tc.save(tmp_path / "c")
    assert "log_threshold_0" in _keys(tmp_path / "c/W_enc_0.safetensors")
    back = load_transcoders(tmp_path / "c", dtype=torch.float64)
    assert back.threshold_param == "log_threshold" and back.dtype == torch.float64
    torch.testing.assert_close(back.thresholds().float(), tc.thresholds())


# ---------------------------------------------------------------------------- laziness
def test_lazy_reads_only_what_is_used(tmp_path):
    tc = Transcoder.random(4, 6, 32, cross_layer=True, activation="jumprelu", seed=1)
    tc.save(tmp_path / "c")
    READ_LOG.clear()
    lazy = load_transcoders(tmp_path / "c", lazy=True)
    assert not any(lazy.is_decoder_loaded(l) for l in range(4))
    assert sum(READ_LOG.values()) == 0  # loading reads no decoder rows
    n_dec = sum(w.numel() for w in tc.W_dec)  # 32 features × (4 + 3 + 2 + 1) targets × 6
    assert sum(p.numel() for p in lazy.parameters()) == sum(p.numel() for p in tc.parameters()) - n_dec

    v = lazy.decoder_vectors(2, torch.tensor([5, 1, 5]))
    torch.testing.assert_close(v, tc.W_dec[2][[5, 1, 5]].detach())
    f2 = str(tmp_path / "c/W_dec_2.safetensors")
    assert dict(READ_LOG) == {(f2, "W_dec_2"): 2}  # two distinct rows, of layer 2 only

    READ_LOG.clear()
    acts = [torch.zeros(3, 32) for _ in range(4)]
    acts[1][0, 4] = 1.0
    acts[1][2, 9] = 2.0
    with torch.no_grad():
        torch.testing.assert_close(lazy.decode(acts), tc.decode(acts))
    assert dict(READ_LOG) == {(str(tmp_path / "c/W_dec_1.safetensors"), "W_dec_1"): 2}
    assert not any(lazy.is_decoder_loaded(l) for l in range(4))  # nothing was cached

    lazy.materialize_decoders([3])
    assert lazy.is_decoder_loaded(3) and not lazy.is_decoder_loaded(0)
    assert torch.equal(lazy.W_dec[3], tc.W_dec[3])


def test_plt_lazy_reads_only_used_layer(tmp_path):
    tc = Transcoder.random(3, 4, 16, cross_layer=False, activation="relu", seed=1)
    tc.save(tmp_path / "p")
    READ_LOG.clear()
    lazy = load_transcoders(tmp_path / "p")
    assert lazy.decoder_vectors(1, [3]).shape == (1, 1, 4)
    assert list(READ_LOG) == [(str(tmp_path / "p/layer_1.safetensors"), "W_dec")]


# ---------------------------------------------------------------------------- atomic save
def test_save_overwrites_atomically_and_refuses_foreign_dirs(tmp_path):
    a = Transcoder.random(2, 4, 8, cross_layer=True, seed=1)
    b = Transcoder.random(3, 4, 8, cross_layer=False, seed=2)
    a.save(tmp_path / "c")
    b.save(tmp_path / "c")  # replaces a checkpoint, including files b does not write
    assert "W_dec_0.safetensors" not in os.listdir(tmp_path / "c")
    _same_outputs(b, load_transcoders(tmp_path / "c", lazy=False))
    assert sorted(os.listdir(tmp_path)) == ["c"]  # no temp or backup dirs left behind

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        a.save(tmp_path / "mine")
    assert (tmp_path / "mine/notes.txt").read_text() == "precious"


def test_save_failure_leaves_old_checkpoint(tmp_path, monkeypatch):
    a = Transcoder.random(2, 4, 8, cross_layer=True, seed=1)
    a.save(tmp_path / "c")
    import circuit_trace.transcoders.formats as formats

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(formats, "save_file", boom)
    with pytest.raises(OSError):
        Transcoder.random(2, 4, 8, cross_layer=True, seed=2).save(tmp_path / "c")
    assert sorted(os.listdir(tmp_path)) == ["c"]
    _same_outputs(a, load_transcoders(tmp_path / "c", lazy=False))


def test_lazy_transcoder_can_be_saved_over_its_own_files(tmp_path):
    tc = Transcoder.random(3, 4, 8, cross_layer=True, seed=4)
    tc.save(tmp_path / "c")
    lazy = load_transcoders(tmp_path / "c")
    lazy.save(tmp_path / "c")
    lazy.save(tmp_path / "copy")
    _same_outputs(tc, load_transcoders(tmp_path / "copy", lazy=False))
    _same_outputs(tc, lazy, exact=False)


# ---------------------------------------------------------------------------- interop with hand-written files
def test_reads_circuit_tracer_clt_written_by_hand(tmp_path):
    """Files exactly as circuit-tracer's CrossLayerTranscoder.to_safetensors writes them, with a
    minimal config: activation is inferred from the threshold tensors."""
    L, F, d = 2, 6, 4
    g = torch.Generator().manual_seed(0)
    for l in range(L):
        save_file(
            {
                f"W_enc_{l}": torch.randn(F, d, generator=g),
                f"b_enc_{l}": torch.zeros(F),
                f"b_dec_{l}": torch.randn(d, generator=g),
                f"threshold_{l}": torch.full((F,), 0.3),
            },
            str(tmp_path / f"W_enc_{l}.safetensors"),
        )
        save_file({f"W_dec_{l}": torch.randn(F, L - l, d, generator=g)}, str(tmp_path / f"W_dec_{l}.safetensors"))
    (tmp_path / "config.yaml").write_text(
        "model_name: google/gemma-2-2b\nmodel_kind: cross_layer_transcoder\n"
        "feature_input_hook: blocks.{l}.hook_resid_mid\nfeature_output_hook: hook_mlp_out\n"
    )
    tc = load_transcoders(tmp_path / "config.yaml")
    assert (
        tc.activation == "jumprelu"
        and tc.is_cross_layer
        and tc.d_features == F
        and tc.model_name == "google/gemma-2-2b"
    )
    assert tc.feature_input_hook == "hook_resid_mid"
    torch.testing.assert_close(tc.thresholds(1), torch.full((F,), 0.3))


def test_reads_transcoder_set_list_with_gemmascope_npz(tmp_path):
    L, F, d = 2, 5, 3
    g = np.random.default_rng(0)
    names = []
    for l in range(L):
        names.append(f"gs/layer_{l}/params.npz")
        (tmp_path / f"gs/layer_{l}").mkdir(parents=True)
        np.savez(
            tmp_path / names[-1],
            W_enc=g.normal(size=(d, F)).astype(np.float32),
            W_dec=g.normal(size=(F, d)).astype(np.float32),
            b_enc=np.zeros(F, np.float32),
            b_dec=np.ones(d, np.float32),
            threshold=np.full(F, 0.2, np.float32),
        )
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "model_kind": "transcoder_set",
                "feature_input_hook": "ln2.hook_normalized",
                "feature_output_hook": "hook_mlp_out",
                "transcoders": names,
            }
        )
    )
    tc = load_transcoders(tmp_path)
    assert not tc.is_cross_layer and tc.activation == "jumprelu" and (tc.d_features, tc.d_model) == (F, d)
    raw = np.load(tmp_path / names[1])
    np.testing.assert_allclose(tc.W_enc[1].detach().numpy(), raw["W_enc"].T)  # stored [d, F]
    np.testing.assert_allclose(tc.decoder_vectors(1, [2])[0, 0].detach().numpy(), raw["W_dec"][2])


# ---------------------------------------------------------------------------- errors
@pytest.fixture
def clt_dir(tmp_path):
    Transcoder.random(3, 4, 8, cross_layer=True, activation="jumprelu", seed=0).save(tmp_path / "c")
    return tmp_path / "c"


def test_missing_files(clt_dir, tmp_path):
    os.remove(clt_dir / "W_dec_1.safetensors")
    with pytest.raises(CheckpointError, match=r"missing checkpoint file .*W_dec_1\.safetensors") as e:
        load_transcoders(clt_dir)
    assert e.value.path.endswith("W_dec_1.safetensors")
    os.remove(clt_dir / "W_enc_1.safetensors")
    with pytest.raises(CheckpointError, match=r"W_enc_1\.safetensors"):
        load_transcoders(clt_dir)
    os.remove(clt_dir / "config.yaml")
    with pytest.raises(CheckpointError, match="missing config.yaml"):
        load_transcoders(clt_dir)
    with pytest.raises(CheckpointError, match="no such transcoder directory"):
        load_transcoders(tmp_path / "does" / "not" / "exist")


@pytest.mark.parametrize("fname", ["W_enc_2.safetensors", "W_dec_0.safetensors"])
@pytest.mark.parametrize("keep", [4, 30, -10])
def test_truncated_file(clt_dir, fname, keep):
    p = clt_dir / fname
    data = p.read_bytes()
    p.write_bytes(data[:keep] if keep > 0 else data[:keep])
    with pytest.raises(CheckpointError, match=rf"{fname}: not a readable safetensors file"):
        load_transcoders(clt_dir)


def _rewrite(path, fn):
    t = load_file(str(path))
    fn(t)
    save_file(t, str(path))


def test_nan_in_encoder_names_file_and_tensor(clt_dir):
    _rewrite(clt_dir / "W_enc_1.safetensors", lambda t: t["b_enc_1"].__setitem__(3, float("nan")))
    with pytest.raises(CheckpointError, match=r"W_enc_1\.safetensors: tensor 'b_enc_1' contains 1 NaN/inf") as e:
        load_transcoders(clt_dir)
    assert e.value.tensor == "b_enc_1"


def test_inf_in_lazy_decoder(clt_dir):
    _rewrite(clt_dir / "W_dec_2.safetensors", lambda t: t["W_dec_2"].__setitem__((5, 0, 1), float("inf")))
    tc = load_transcoders(clt_dir, lazy=True)  # lazy: found when the rows are read ...
    tc.decoder_vectors(2, [4])
    with pytest.raises(CheckpointError, match=r"W_dec_2\.safetensors: tensor 'W_dec_2' contains NaN or inf"):
        tc.decoder_vectors(2, [5])
    with pytest.raises(CheckpointError, match="W_dec_2"):  # ... or at load with verify=True
        load_transcoders(clt_dir, lazy=True, verify=True)
    with pytest.raises(CheckpointError, match="W_dec_2"):
        load_transcoders(clt_dir, lazy=False)


def test_shape_mismatches_name_file_tensor_and_shapes(clt_dir):
    _rewrite(clt_dir / "W_dec_1.safetensors", lambda t: t.__setitem__("W_dec_1", torch.zeros(8, 3, 4)))
    with pytest.raises(
        CheckpointError, match=r"W_dec_1\.safetensors: tensor 'W_dec_1' has shape \[8, 3, 4\], expected \[8, 2, 4\]"
    ):
        load_transcoders(clt_dir)
    _rewrite(clt_dir / "W_dec_1.safetensors", lambda t: t.__setitem__("W_dec_1", torch.zeros(8, 2, 4)))
    load_transcoders(clt_dir)
    _rewrite(clt_dir / "W_enc_2.safetensors", lambda t: t.__setitem__("W_enc_2", torch.zeros(9, 4)))
    with pytest.raises(
        CheckpointError, match=r"W_enc_2\.safetensors: tensor 'W_enc_2' has shape \[9, 4\], expected \[8, 4\]"
    ):
        load_transcoders(clt_dir)


def test_missing_tensor_and_inconsistent_config(clt_dir):
    _rewrite(clt_dir / "W_enc_1.safetensors", lambda t: t.pop("threshold_1"))
    with pytest.raises(CheckpointError, match=r"W_enc_1\.safetensors: missing tensor 'threshold_1'"):
        load_transcoders(clt_dir)


@pytest.mark.parametrize(
    "edit,match",
    [
        ({"feature_input_hook": "hook_resid_pre"}, "feature_input_hook: unknown hook name 'hook_resid_pre'"),
        ({"feature_output_hook": "blocks.0.attn.hook_z"}, "feature_output_hook: unknown hook name"),
        ({"model_kind": "sae"}, "unknown model_kind 'sae'"),
        ({"n_layers": 5}, "n_layers = 5 but 3 layers"),
        ({"d_model": 7}, "d_model = 7 but the tensors say 4"),
        ({"activation": "topk", "k": None}, "no 'k'"),
    ],
)
def test_bad_config(clt_dir, edit, match):
    cfg = yaml.safe_load((clt_dir / "config.yaml").read_text())
    cfg.update(edit)
    (clt_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError, match=match):
        load_transcoders(clt_dir)


def test_plt_shape_mismatch_between_files(tmp_path):
    Transcoder.random(2, 4, 8, cross_layer=False, skip=True, seed=0).save(tmp_path / "p")
    _rewrite(tmp_path / "p/layer_1.safetensors", lambda t: t.__setitem__("W_skip", torch.zeros(4, 5)))
    with pytest.raises(
        CheckpointError, match=r"layer_1\.safetensors: tensor 'W_skip' has shape \[4, 5\], expected \[4, 4\]"
    ):
        load_transcoders(tmp_path / "p")


def test_hub_id_offline_gives_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.chdir(tmp_path)  # so "owner/repo" is not a local directory
    with pytest.raises(
        CheckpointError,
        match=r"'nobody-owner/no-such-transcoders@main' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set",
    ):
        load_transcoders("nobody-owner/no-such-transcoders@main")


def test_transcoder_set_list_of_layer_files_and_gemmascope2_names(tmp_path):
    """`transcoders:` entries relative to config.yaml; layer 0 in circuit-tracer naming (lazy),
    layer 1 in GemmaScope-2 naming (w_enc [d, F], affine_skip_connection [d_in, d_out])."""
    F, d = 6, 4
    g = torch.Generator().manual_seed(0)
    ct = {
        "W_enc": torch.randn(F, d, generator=g),
        "W_dec": torch.randn(F, d, generator=g),
        "b_enc": torch.zeros(F),
        "b_dec": torch.randn(d, generator=g),
        "activation_function.threshold": torch.full((F,), 0.1),
        "W_skip": torch.randn(d, d, generator=g),
    }
    gs2 = {
        "w_enc": torch.randn(d, F, generator=g),
        "w_dec": torch.randn(F, d, generator=g),
        "b_enc": torch.zeros(F),
        "b_dec": torch.randn(d, generator=g),
        "threshold": torch.full((F,), 0.2),
        "affine_skip_connection": torch.randn(d, d, generator=g),
    }
    (tmp_path / "a").mkdir()
    save_file(ct, str(tmp_path / "a/first.safetensors"))
    save_file(gs2, str(tmp_path / "second.safetensors"))
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "model_kind": "transcoder_set",
                "feature_input_hook": "mlp.hook_in",
                "feature_output_hook": "mlp.hook_out",
                "transcoders": ["a/first.safetensors", str(tmp_path / "second.safetensors")],
            }
        )
    )
    tc = load_transcoders(tmp_path)
    assert tc.has_skip and not tc.is_decoder_loaded(0) and tc.is_decoder_loaded(1)
    x = torch.randn(3, d)
    with torch.no_grad():
        torch.testing.assert_close(tc.skip(x, 0), x @ ct["W_skip"].T)  # circuit-tracer: x @ W_skip.T
        torch.testing.assert_close(tc.skip(x, 1), x @ gs2["affine_skip_connection"])
        torch.testing.assert_close(tc.pre_activations(x, 1), x @ gs2["w_enc"] + gs2["b_enc"])
        torch.testing.assert_close(tc.thresholds(1), gs2["threshold"])
        torch.testing.assert_close(tc.decoder_vectors(0, [2])[0, 0], ct["W_dec"][2])
