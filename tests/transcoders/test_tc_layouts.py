"""Every published on-disk layout loads: small random files written in exactly that layout, and
encode / decode / skip checked against the layout's formula written out by hand here (not through
our Transcoder). Layouts: GemmaScope-2 CLT (params_layer_{i}.safetensors) and EleutherAI sparsify /
clt-training (<hookpoint>/cfg.json + sae.safetensors). The circuit-tracer native layouts are
covered by test_tc_formats.py; benchmarks/check_layouts_ct.py compares with circuit-tracer itself."""

import json

import pytest
import torch
import yaml
from safetensors.torch import save_file

from circuit_trace.transcoders import CheckpointError, load_transcoders
from circuit_trace.transcoders.lazy import READ_LOG

torch.set_num_threads(1)
L, D, F = 3, 6, 10


def _g(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- GemmaScope-2 CLT
def _write_gs2_clt(folder, *, skip=True, full_slots=True, seed=0, with_config=True):
    """Per layer i: w_enc [d, F], w_dec [F, L, d] (slots i.. used) or [F, L − i, d], b_enc, b_dec,
    threshold, affine_skip_connection [d, d] (applied as x A)."""
    g = _g(seed)
    folder.mkdir()
    raw = []
    for i in range(L):
        t = {
            "w_enc": torch.randn(D, F, generator=g),
            "b_enc": 0.1 * torch.randn(F, generator=g),
            "b_dec": torch.randn(D, generator=g),
            "threshold": 0.5 + 0.5 * torch.rand(F, generator=g),
            "w_dec": torch.randn(F, L if full_slots else L - i, D, generator=g),
        }
        if skip:
            t["affine_skip_connection"] = 0.1 * torch.randn(D, D, generator=g)
        save_file(t, str(folder / f"params_layer_{i}.safetensors"))
        raw.append(t)
    if with_config:
        (folder / "config.yaml").write_text(
            yaml.safe_dump(
                {
                    "model_kind": "cross_layer_transcoder",
                    "feature_input_hook": "hook_resid_mid",
                    "feature_output_hook": "hook_mlp_out",
                    "model_name": "google/gemma-3-270m-pt",
                }
            )
        )
    return raw


def _gs2_reference(raw, xs, full_slots=True):
    """By hand: a_i = h·1[h > θ] with h = x_i w_enc + b_enc; y_t = Σ_{i ≤ t} a_i w_dec_i[slot] + b_dec_t + x_t A_t."""
    acts = []
    for i, t in enumerate(raw):
        h = xs[i] @ t["w_enc"] + t["b_enc"]
        acts.append(h * (h > t["threshold"]))
    ys = []
    for tgt in range(L):
        y = raw[tgt]["b_dec"] + (
            xs[tgt] @ raw[tgt]["affine_skip_connection"] if "affine_skip_connection" in raw[tgt] else 0
        )
        for i in range(tgt + 1):
            slot = tgt if full_slots else tgt - i
            y = y + acts[i] @ raw[i]["w_dec"][:, slot, :]
        ys.append(y)
    return acts, torch.stack(ys)


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("full_slots", [True, False])
@pytest.mark.parametrize("skip", [True, False])
def test_gemmascope2_clt_matches_formula(tmp_path, lazy, full_slots, skip):
    raw = _write_gs2_clt(tmp_path / "clt", skip=skip, full_slots=full_slots)
    tc = load_transcoders(tmp_path / "clt", lazy=lazy)
    assert (tc.is_cross_layer, tc.activation, tc.has_skip) == (True, "jumprelu", skip)
    assert (tc.n_layers, tc.d_model, tc.d_features) == (L, D, F)
    assert all(tc.is_decoder_loaded(l) != lazy for l in range(L))
    xs = torch.randn(L, 4, D, generator=_g(7))
    acts, y_ref = _gs2_reference(raw, xs, full_slots)
    with torch.no_grad():
        for l in range(L):
            torch.testing.assert_close(tc.encode(xs[l], l), acts[l])
            assert (acts[l] > 0).any() and (acts[l] == 0).any()  # the threshold matters in this test
        torch.testing.assert_close(tc.reconstruct(xs), y_ref, rtol=1e-5, atol=1e-5)
        if skip:
            torch.testing.assert_close(tc.skip(xs[1], 1), xs[1] @ raw[1]["affine_skip_connection"])


def test_gemmascope2_clt_lazy_reads_only_active_rows_of_used_slots(tmp_path):
    raw = _write_gs2_clt(tmp_path / "clt")
    tc = load_transcoders(tmp_path / "clt", lazy=True)
    READ_LOG.clear()
    v = tc.decoder_vectors(1, torch.tensor([3, 0]))  # [2, L − 1, d]: slots 1 and 2 of layer 1's file
    assert v.shape == (2, L - 1, D)
    torch.testing.assert_close(v, raw[1]["w_dec"][[3, 0], 1:, :])
    assert sum(READ_LOG.values()) == 2


def test_gemmascope2_clt_from_config_list_and_bad_shapes(tmp_path):
    _write_gs2_clt(tmp_path / "w", with_config=False)
    cfg = {
        "model_kind": "cross_layer_transcoder",
        "feature_input_hook": "hook_resid_mid",
        "feature_output_hook": "hook_mlp_out",
        "transcoders": [str(tmp_path / "w" / f"params_layer_{i}.safetensors") for i in range(L)],
    }
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.yaml").write_text(yaml.safe_dump(cfg))
    tc = load_transcoders(tmp_path / "cfg", lazy=False)
    assert tc.n_layers == L and tc.is_cross_layer
    with pytest.raises(CheckpointError, match="config.yaml"):  # hooks are not guessed
        load_transcoders(tmp_path / "w")
    bad = _write_gs2_clt(tmp_path / "bad")[2]
    bad["w_dec"] = torch.randn(F, 2 * L, D)
    save_file(bad, str(tmp_path / "bad" / "params_layer_2.safetensors"))
    with pytest.raises(CheckpointError, match=r"params_layer_2.*'w_dec' has shape \[10, 6, 6\]"):
        load_transcoders(tmp_path / "bad")


# ---------------------------------------------------------------------------- sparsify
def _write_sparsify(
    folder, *, skip=False, k=3, n_targets=None, normalize_io=False, prefix="layers", seed=0, extra=None
):
    """<prefix>.{i}.mlp/cfg.json + sae.safetensors as sparsify's save_to_disk writes them
    (encoder.weight [F, d], encoder.bias [F], W_dec [F, d], b_dec [d], W_skip [d, d]); with
    n_targets, clt-training's W_decs.{j}, b_decs.{j}, W_skips.{j}."""
    g = _g(seed)
    folder.mkdir()
    raw = []
    for i in range(L):
        cfg = {
            "activation": "topk",
            "expansion_factor": 32,
            "normalize_decoder": True,
            "num_latents": F,
            "k": k,
            "multi_topk": False,
            "skip_connection": skip,
            "transcode": True,
            "d_in": D,
        }
        t = {"encoder.weight": torch.randn(F, D, generator=g), "encoder.bias": 0.1 * torch.randn(F, generator=g)}
        if n_targets is None:
            t["W_dec"], t["b_dec"] = torch.randn(F, D, generator=g), torch.randn(D, generator=g)
            if skip:
                t["W_skip"] = 0.1 * torch.randn(D, D, generator=g)
            t["post_enc"] = torch.zeros(F)
        else:
            cfg["n_targets"] = n_t = min(n_targets, L - i)
            for j in range(n_t):
                t[f"W_decs.{j}"], t[f"b_decs.{j}"] = torch.randn(F, D, generator=g), torch.randn(D, generator=g)
                t[f"post_encs.{j}"] = torch.zeros(F)
                if skip:
                    t[f"W_skips.{j}"] = (0.1 * torch.randn(D, D, generator=g)) if j == 0 else torch.zeros(D, D)
        if normalize_io:
            cfg["normalize_io"] = True
            t["in_norm"], t["out_norm"] = torch.tensor([3.0 + i]), torch.tensor([0.5 + i])
        t.update((extra or {}).get(i, {}))
        sub = folder / f"{prefix}.{i}.mlp"
        sub.mkdir()
        (sub / "cfg.json").write_text(json.dumps(cfg))
        save_file(t, str(sub / "sae.safetensors"))
        raw.append((cfg, t))
    return raw


def _topk_by_hand(pre, k):
    """sparsify's fused_encoder: ReLU first, then the k largest per row."""
    post = torch.relu(pre)
    vals, idx = post.topk(k, dim=-1)
    return torch.zeros_like(post).scatter(-1, idx, vals)


def _sparsify_reference(raw, xs):
    acts, ys = [], [torch.zeros(xs.shape[1:]) for _ in range(L)]
    for i, (cfg, t) in enumerate(raw):
        x = xs[i]
        if cfg.get("normalize_io"):
            x = x * (D**0.5 / t["in_norm"])
        a = _topk_by_hand(x @ t["encoder.weight"].T + t["encoder.bias"], cfg["k"])
        acts.append(a)
        if "n_targets" not in cfg:
            y = a @ t["W_dec"] + t["b_dec"] + (x @ t["W_skip"].T if "W_skip" in t else 0)
            ys[i] = ys[i] + (y * (t["out_norm"] / D**0.5) if cfg.get("normalize_io") else y)
        else:
            for j in range(cfg["n_targets"]):
                ys[i + j] = ys[i + j] + a @ t[f"W_decs.{j}"] + t[f"b_decs.{j}"]
                if f"W_skips.{j}" in t:
                    ys[i + j] = ys[i + j] + x @ t[f"W_skips.{j}"].T
    return acts, torch.stack(ys)


@pytest.mark.parametrize(
    "case",
    [
        {},
        {"skip": True},
        {"normalize_io": True, "skip": True},
        {"prefix": "model.layers"},
        {"n_targets": 2},
        {"n_targets": 3, "skip": True},
    ],
)
@pytest.mark.parametrize("lazy", [False, True])
def test_sparsify_matches_formula(tmp_path, case, lazy):
    raw = _write_sparsify(tmp_path / "sp", **case)
    tc = load_transcoders(tmp_path / "sp", lazy=lazy)
    cross = "n_targets" in case
    assert (tc.is_cross_layer, tc.activation, tc.k, tc.has_skip) == (cross, "topk", 3, case.get("skip", False))
    assert (tc.feature_input_hook, tc.feature_output_hook) == ("mlp.hook_in", "mlp.hook_out")
    plain = not cross and not case.get("normalize_io")
    assert all(tc.is_decoder_loaded(l) != (lazy and plain) for l in range(L))
    xs = torch.randn(L, 5, D, generator=_g(3))
    acts, y_ref = _sparsify_reference(raw, xs)
    with torch.no_grad():
        for l in range(L):
            torch.testing.assert_close(tc.encode(xs[l], l), acts[l], rtol=1e-5, atol=1e-5)
            assert int((acts[l] > 0).sum(-1).max()) <= 3
        torch.testing.assert_close(tc.reconstruct(xs), y_ref, rtol=1e-5, atol=1e-5)


def test_sparsify_refuses_what_it_cannot_represent(tmp_path):
    _write_sparsify(tmp_path / "pe", extra={1: {"post_enc": torch.ones(F)}})
    with pytest.raises(CheckpointError, match=r"layers.1.mlp.*'post_enc' is not 0"):
        load_transcoders(tmp_path / "pe")
    _write_sparsify(tmp_path / "xs", n_targets=2, skip=True, extra={0: {"W_skips.1": torch.ones(D, D)}})
    with pytest.raises(CheckpointError, match="skip connection from one layer to a later one"):
        load_transcoders(tmp_path / "xs")
    raw = _write_sparsify(tmp_path / "sae")
    cfg = dict(raw[0][0], transcode=False)
    (tmp_path / "sae" / "layers.0.mlp" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="sparse autoencoder, not a transcoder"):
        load_transcoders(tmp_path / "sae")
    _write_sparsify(tmp_path / "gap")
    (tmp_path / "gap" / "layers.1.mlp" / "cfg.json").unlink()
    with pytest.raises(CheckpointError, match="no hookpoint folder for layer 1"):
        load_transcoders(tmp_path / "gap")
    _write_sparsify(tmp_path / "resid", prefix="layers")
    (tmp_path / "resid" / "layers.2.mlp").rename(tmp_path / "resid" / "layers.2")
    with pytest.raises(CheckpointError, match="not one MLP module"):
        load_transcoders(tmp_path / "resid")
