"""The catalogue of published sets (no downloads): short names resolve to the right repo and hooks,
a set refuses a model it does not fit, `circuit-trace transcoders list` names the sets, and hub ids
fail fast and in one line when the hub is off or unreachable."""

import os
import subprocess
import sys
import time

import pytest
import yaml

import circuit_trace as ct
from circuit_trace import hub
from circuit_trace.cli import main
from circuit_trace.transcoders import (
    CheckpointError,
    TranscoderMismatchError,
    load_transcoders,
)
from circuit_trace.transcoders.catalogue import (
    UnknownTranscoderSetError,
    check_set_fits,
    get_transcoder_set,
    resolve_transcoders,
)

# (short name, model, repo/subfolder loaded, kind, input hook, output hook): from circuit-tracer's own
# code (hf_utils short names 'gemma' / 'llama') and README table.
EXPECTED = [
    ("gemma", "google/gemma-2-2b", "mwhanna/gemma-scope-transcoders", "plt", "ln2.hook_normalized", "hook_mlp_out"),
    ("gemma-clt-426k", "google/gemma-2-2b", "mntss/clt-gemma-2-2b-426k", "clt", "hook_resid_mid", "hook_mlp_out"),
    ("gemma-clt-2.5m", "google/gemma-2-2b", "mntss/clt-gemma-2-2b-2.5M", "clt", "hook_resid_mid", "hook_mlp_out"),
    ("llama", "meta-llama/Llama-3.2-1B", "mntss/transcoder-Llama-3.2-1B", "plt", "hook_resid_mid", "hook_mlp_out"),
    (
        "llama-clt-524k",
        "meta-llama/Llama-3.2-1B",
        "mntss/clt-llama-3.2-1b-524k",
        "clt",
        "hook_resid_mid",
        "hook_mlp_out",
    ),
    ("qwen3-0.6b", "Qwen/Qwen3-0.6B", "mwhanna/qwen3-0.6b-transcoders-lowl0", "plt", "mlp.hook_in", "mlp.hook_out"),
    ("qwen3-4b", "Qwen/Qwen3-4B", "mwhanna/qwen3-4b-transcoders", "plt", "mlp.hook_in", "mlp.hook_out"),
    ("qwen3-14b", "Qwen/Qwen3-14B", "mwhanna/qwen3-14b-transcoders-lowl0", "plt", "mlp.hook_in", "mlp.hook_out"),
    (
        "gemma-3-27b-pt",
        "google/gemma-3-27b-pt",
        "mwhanna/gemma-scope-2-27b-pt/transcoder_all/width_262k_l0_small",
        "plt",
        None,
        None,
    ),
    (
        "gemma-3-1b-it-clt",
        "google/gemma-3-1b-it",
        "mwhanna/gemma-scope-2-1b-it/clt/width_262k_l0_medium_affine",
        "clt",
        None,
        None,
    ),
    (
        "llama-3.1-8b-instruct-topk",
        "meta-llama/Llama-3.1-8B-Instruct",
        "facebook/crv-8b-instruct-transcoders",
        "plt",
        None,
        None,
    ),
]


@pytest.mark.parametrize("name,model,ref,kind,hin,hout", EXPECTED)
def test_short_names_resolve_to_repo_and_hooks(name, model, ref, kind, hin, hout):
    info = get_transcoder_set(name)
    assert (info.model, info.hub_ref, info.kind, info.input_hook, info.output_hook) == (model, ref, kind, hin, hout)
    assert resolve_transcoders(name, model) == ref
    assert resolve_transcoders(name) == ref  # no model to check against


def test_catalogue_covers_every_published_family():
    sets = ct.list_transcoder_sets()
    names = {s.name for s in sets}
    assert {
        "gemma",
        "gemma-clt-426k",
        "gemma-clt-2.5m",
        "llama",
        "llama-clt-524k",
        "llama-3.1-8b-instruct-topk",
    } <= names
    assert {f"qwen3-{s}" for s in ("0.6b", "1.7b", "4b", "8b", "14b")} <= names
    assert {f"gemma-3-{s}-{v}" for s in ("270m", "1b", "4b", "12b", "27b") for v in ("pt", "it")} <= names
    assert {s.name for s in sets if s.model.startswith("google/gemma-3") and s.kind == "clt"} >= {
        "gemma-3-270m-pt-clt",
        "gemma-3-1b-pt-clt",
    }
    topk = get_transcoder_set("llama-3.1-8b-instruct-topk")
    assert (topk.activation, topk.k) == ("topk", 128)
    # what could not be checked says so
    assert (
        not get_transcoder_set("gemma-3-1b-pt-clt").verified
        and "hooks" in get_transcoder_set("gemma-3-1b-pt-clt").unverified
    )


def test_estimated_size_follows_the_shapes():
    g = get_transcoder_set("gemma")  # 26 layers x (W_enc + W_dec [16384, 2304] + b_enc, θ, b_dec) in fp32
    assert g.estimated_bytes() == 26 * (2 * 16384 * 2304 + 2 * 16384 + 2304) * 4
    c = get_transcoder_set("llama-clt-524k")  # CLT decoder: F·L(L+1)/2·d, bf16
    assert c.estimated_bytes() == (32768 * 2048 * 136 + 16 * (32768 * 2048 + 2 * 32768 + 2048)) * 2
    assert get_transcoder_set("qwen3-4b").estimated_bytes() is None  # width unknown: no made-up figure


def test_wrong_model_is_refused_in_one_line(tmp_path):
    with pytest.raises(
        TranscoderMismatchError, match=r"^transcoder set 'gemma' was trained on google/gemma-2-2b, not on gpt2;"
    ):
        resolve_transcoders("gemma", "gpt2")
    with pytest.raises(TranscoderMismatchError, match="'llama'"):
        ct.load("google/gemma-2-2b", "llama")  # refused before any download
    local = tmp_path / "model"
    local.mkdir()
    (local / "config.json").write_text('{"num_hidden_layers": 4, "hidden_size": 2304}')
    with pytest.raises(TranscoderMismatchError, match=r"\(layers = 26\) but the model .* has layers = 4"):
        check_set_fits(get_transcoder_set("gemma"), str(local))
    with pytest.raises(UnknownTranscoderSetError, match="unknown transcoder set 'gema'"):
        resolve_transcoders("gema", "google/gemma-2-2b")
    assert resolve_transcoders("some/repo", "gpt2") == "some/repo"  # hub ids pass through
    assert resolve_transcoders(str(tmp_path), "gpt2") == str(tmp_path)  # so do local paths


def test_cli_lists_and_shows_sets(capsys):
    assert main(["transcoders", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("gemma", "llama", "llama-clt-524k", "qwen3-8b", "gemma-3-4b-it", "llama-3.1-8b-instruct-topk"):
        assert any(line.split()[0] == name for line in out.splitlines()[1:] if line.strip())
    assert "google/gemma-2-2b" in out and "not downloaded" in out and "~7.3 GiB" in out
    assert main(["transcoders", "list", "--model", "meta-llama/Llama-3.2-1B"]) == 0
    rows = [ln.split()[0] for ln in capsys.readouterr().out.splitlines()[1:-1]]
    assert sorted(rows) == ["llama", "llama-clt-524k"]
    assert main(["transcoders", "show", "llama"]) == 0
    assert "mntss/transcoder-Llama-3.2-1B" in capsys.readouterr().out
    assert main(["transcoders", "show", "nope"]) == 2
    assert "unknown transcoder set 'nope'" in capsys.readouterr().err


def test_dashboards_say_where_they_live(capsys):
    gemma = get_transcoder_set("gemma").dashboards
    assert gemma is not None and (gemma.repo, gemma.path) == ("mntss/gemma-scope-transcoders", "features")
    assert gemma.neuronpedia_url(20, 1234) == "https://www.neuronpedia.org/gemma-2-2b/20-gemmascope-transcoder-16k/1234"
    llama = get_transcoder_set("llama").dashboards
    assert llama is not None and llama.neuronpedia is None and llama.neuronpedia_url(0, 1) is None
    hosted = [s.name for s in ct.list_transcoder_sets() if s.dashboards and s.dashboards.neuronpedia]
    assert {"gemma", "gemma-clt-2.5m", "qwen3-4b", "gemma-3-27b-it"} <= set(hosted)
    assert main(["transcoders", "show", "gemma-3-27b-it"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("dashboards"))
    assert "Neuronpedia https://www.neuronpedia.org/gemma-3-27b-it/{layer}-" in line and "(unverified)" in line


@pytest.mark.parametrize(
    "dashboards, match",
    [
        ({"repo": "a/b", "colour": "red"}, "keys among"),
        ({"neuronpedia": "https://www.neuronpedia.org/m/{layer}-set"}, "URL pattern"),
        ({"verified": True}, "neither a hub repo nor"),
    ],
)
def test_bad_dashboards_entries_are_refused(dashboards, match):
    from circuit_trace.transcoders.catalogue import DashboardSource

    with pytest.raises(ct.TranscoderError, match=match):
        DashboardSource.parse(dashboards, "catalogue/x.yaml")


def test_cli_trace_with_a_set_for_another_model_exits_3(capsys):
    assert main(["trace", "hello", "--model", "gpt2", "--transcoders", "gemma"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'gemma'" in err and "google/gemma-2-2b" in err and "gpt2" in err


def test_cached_size_reads_the_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    snap = tmp_path / "models--mntss--clt-llama-3.2-1b-524k" / "snapshots" / "abc"
    blobs = tmp_path / "models--mntss--clt-llama-3.2-1b-524k" / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    (blobs / "b1").write_bytes(b"x" * 1000)
    (snap / "W_enc_0.safetensors").symlink_to(blobs / "b1")
    assert get_transcoder_set("llama-clt-524k").cached_bytes() == 1000
    assert get_transcoder_set("llama").cached_bytes() == 0


def test_every_catalogue_file_is_complete():
    from importlib import resources

    folder = resources.files("circuit_trace.transcoders") / "catalogue"
    files = [f for f in folder.iterdir() if f.name.endswith(".yaml")]
    assert len(files) == len(ct.list_transcoder_sets()) >= 25
    for f in files:
        data = yaml.safe_load(f.read_text())
        for key in (
            "name",
            "model",
            "kind",
            "hub",
            "hooks",
            "activation",
            "width",
            "licence",
            "dashboards",
            "verified",
            "unverified",
            "sources",
        ):
            assert key in data, f"{f.name}: {key}"


# ---------------------------------------------------------------------------- offline
@pytest.fixture
def fresh_probe(monkeypatch):
    hub.clear_probe_cache()
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-hf-cache")
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    yield
    hub.clear_probe_cache()  # the probes above saw this test's endpoints and proxies, not the real ones


def test_probe_goes_through_a_configured_proxy(fresh_probe, monkeypatch):
    import socket

    with socket.socket() as proxy:  # a listening local "proxy"; the endpoint itself refuses
        proxy.bind(("127.0.0.1", 0))
        proxy.listen()
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert hub.hub_reachable()
    hub.clear_probe_cache()
    monkeypatch.delenv("HTTP_PROXY")
    assert not hub.hub_reachable()


def _one_line_fast(fn, match):
    t0 = time.perf_counter()
    with pytest.raises(Exception) as info:
        fn()
    took = time.perf_counter() - t0
    msg = str(info.value)
    assert "\n" not in msg and match in msg and "local" in msg, msg
    return took, info.value


def test_offline_flag_fails_fast_for_short_names_and_hub_ids(fresh_probe, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    took, err = _one_line_fast(lambda: load_transcoders("mntss/clt-llama-3.2-1b-524k"), "HF_HUB_OFFLINE is set")
    assert isinstance(err, CheckpointError) and took < 5
    took, err = _one_line_fast(lambda: ct.load("gpt2", "some/transcoders"), "HF_HUB_OFFLINE is set")
    assert isinstance(err, hub.HubUnavailableError) and "model 'gpt2'" in str(err) and took < 5
    # the CLI: exit 3 with that line
    t0 = time.perf_counter()
    assert main(["trace", "x", "--model", "meta-llama/Llama-3.2-1B", "--transcoders", "llama"]) == 3
    assert time.perf_counter() - t0 < 5


def test_unreachable_hub_fails_fast(fresh_probe, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    assert not hub.hub_reachable()
    took, _ = _one_line_fast(lambda: load_transcoders("mntss/transcoder-Llama-3.2-1B"), "cannot be reached")
    assert took < 5
    took, _ = _one_line_fast(lambda: ct.load("gpt2", "some/transcoders"), "http://127.0.0.1:9")
    assert took < 5


@pytest.mark.slow  # a fresh interpreter imports torch + transformers: ~10 s idle, a minute on a loaded CI box
def test_offline_subprocess_end_to_end(tmp_path):
    """A fresh interpreter with HF_HUB_OFFLINE=1 (huggingface_hub reads it at import): one line, at
    once. The clock starts after `circuit_trace.api` is imported: `import circuit_trace` is lazy, and
    importing torch and transformers (5-8 s on some machines) is not the refusal's wait."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path))
    code = (
        "import time, circuit_trace as ct, circuit_trace.api\nt=time.perf_counter()\n"
        "try: ct.load('google/gemma-2-2b', 'gemma')\n"
        "except OSError as e: print(round(time.perf_counter()-t, 2), e)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=False
    ).stdout
    took, msg = out.split(" ", 1)
    assert float(took) < 5 and "model 'google/gemma-2-2b'" in msg and "HF_HUB_OFFLINE is set" in msg


def test_short_name_loads_from_a_populated_cache_offline(tmp_path, monkeypatch, fresh_probe):
    """Offline, a set already in the HF cache loads by its short name (tiny random weights stand in
    for the real repo's files, in the cache's own snapshot layout)."""
    import huggingface_hub.constants as hc

    from circuit_trace.transcoders import Transcoder

    cache = tmp_path / "hf"
    snap = cache / "models--mntss--clt-llama-3.2-1b-524k" / "snapshots" / ("a" * 40)
    Transcoder.random(3, 8, 16, cross_layer=True, seed=4).save(snap)
    (cache / "models--mntss--clt-llama-3.2-1b-524k" / "refs").mkdir()
    (cache / "models--mntss--clt-llama-3.2-1b-524k" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    tc = load_transcoders(resolve_transcoders("llama-clt-524k", "meta-llama/Llama-3.2-1B"))
    assert time.perf_counter() - t0 < 5
    assert (tc.n_layers, tc.d_features, tc.is_cross_layer) == (3, 16, True)
    assert get_transcoder_set("llama-clt-524k").cached_bytes() > 0


def test_cached_hub_model_loads_offline(tmp_path, monkeypatch, fresh_probe):
    """Offline, a hub id already in the HF cache still loads (cache only, no network)."""
    import huggingface_hub.constants as hc
    from helpers import make_hf_model, make_transcoder, tokenizer

    cache = tmp_path / "hf"
    repo = cache / "models--someone--tiny-llama"
    make_hf_model("llama", n_layers=3, d_model=32).save_pretrained(repo / "snapshots" / ("b" * 40))
    tokenizer().save_pretrained(repo / "snapshots" / ("b" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("b" * 40)
    make_transcoder(3, 32).save(tmp_path / "tc")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    rm = ct.load("someone/tiny-llama", str(tmp_path / "tc"), device="cpu")
    assert rm.model_id == "someone/tiny-llama" and rm.transcoders.n_layers == 3
