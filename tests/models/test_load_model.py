"""`ct.load_model`: GGUF read once into a cached safetensors copy (equal to transformers' own GGUF
read, reused, refreshed when the file changes, written atomically), the BOS choice, and a clean
model id (never a local path) in the loaded model, `ct.load`'s graphs and trained transcoders."""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from unittest import mock

import helpers
import pytest
import torch

import circuit_trace as ct
from circuit_trace.models import clean_model_id, gguf, set_bos
from circuit_trace.models.gguf import MARKER, cached_copy, drop_quantizer, find_gguf, gguf_cache_dir

pytest.importorskip("gguf", reason="the GGUF tests write a tiny GGUF with the `gguf` package")


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return helpers.write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


@pytest.fixture(scope="module")
def direct(tiny_gguf):
    """(model, tokenizer) as transformers reads the GGUF itself (the reference)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": tiny_gguf.name}
    tok = AutoTokenizer.from_pretrained(str(tiny_gguf.parent), **kw)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_gguf.parent), dtype=torch.float32, **kw).eval()
    return model, tok


def logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


class CountingReads:
    """Wraps `gguf.read_gguf` to count how often the GGUF itself is parsed."""

    def __init__(self, monkeypatch):
        self.calls, self.real = 0, gguf.read_gguf
        monkeypatch.setattr(gguf, "read_gguf", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


def test_gguf_is_converted_once_and_equals_the_direct_read(tiny_gguf, direct, tmp_path, monkeypatch):
    reads = CountingReads(monkeypatch)
    ref_model, ref_tok = direct
    text = "ab cd efg"
    first = ct.models.load_model(tiny_gguf.parent, device="cpu", cache_dir=tmp_path)
    assert reads.calls == 1 and first.model_id == "tiny-llama.F32" and first.gguf == str(tiny_gguf)
    ids = first.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == ref_tok(text, add_special_tokens=False)["input_ids"]
    assert first.tokenizer.bos_token == ref_tok.bos_token == "<|im_start|>"
    assert torch.equal(logits(first.model, [1, *ids]), logits(ref_model, [1, *ids]))
    second = ct.models.load_model(tiny_gguf, device="cpu", cache_dir=tmp_path)  # the file itself this time
    assert reads.calls == 1, "the second load parsed the GGUF again"
    assert second.path is not None and second.path == first.path and Path(second.path).parent.parent == tmp_path
    assert torch.equal(logits(second.model, [1, *ids]), logits(ref_model, [1, *ids]))
    assert second.model.config._name_or_path == "tiny-llama.F32"
    assert getattr(second.model, "hf_quantizer", None) is None


def test_cached_copy_lists_its_added_tokens_so_loads_skip_parsing_tokenizer_json(tiny_gguf, direct, tmp_path):
    """The copy's tokenizer_config.json names every added token, so transformers builds the tokenizer
    from the Rust reader alone (no Python parse of tokenizer.json): same tokens, ids and flags."""
    from transformers import AutoTokenizer

    _, ref_tok = direct
    copy = Path(str(ct.models.load_model(tiny_gguf, device="cpu", cache_dir=tmp_path).path))
    listed = json.loads((copy / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    in_tokenizer = json.loads((copy / "tokenizer.json").read_text())["added_tokens"]
    assert {int(i): t["content"] for i, t in listed.items()} == {t["id"]: t["content"] for t in in_tokenizer}
    real_open = open

    def no_tokenizer_json(file, *args, **kwargs):
        assert not str(file).endswith("tokenizer.json"), "transformers re-read tokenizer.json in Python"
        return real_open(file, *args, **kwargs)

    with mock.patch("builtins.open", no_tokenizer_json):
        tok = AutoTokenizer.from_pretrained(str(copy))
    assert {i: str(t) for i, t in tok.added_tokens_decoder.items()} == {
        i: str(t) for i, t in ref_tok.added_tokens_decoder.items()
    }
    assert [tok.bos_token, tok.eos_token, tok.pad_token] == [ref_tok.bos_token, ref_tok.eos_token, ref_tok.pad_token]
    assert tok("ab cd<|im_end|>")["input_ids"] == ref_tok("ab cd<|im_end|>")["input_ids"]


def test_gguf_cache_follows_the_environment_and_the_file(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUIT_TRACE_CACHE", str(tmp_path / "env-cache"))
    reads = CountingReads(monkeypatch)
    copy = ct.models.load_model(tiny_gguf, device="cpu").path
    assert copy is not None and Path(copy).is_relative_to(tmp_path / "env-cache" / "gguf")
    assert cached_copy(tiny_gguf) == Path(copy) and reads.calls == 1
    changed = tmp_path / "changed" / tiny_gguf.name  # same name, other bytes: a new copy
    changed.parent.mkdir()
    helpers.write_tiny_gguf(changed, seed=1)
    os.utime(changed, ns=(time.time_ns(), tiny_gguf.stat().st_mtime_ns + 10**9))
    assert cached_copy(changed) is None
    other = ct.models.load_model(changed, device="cpu")
    assert reads.calls == 2 and other.path != copy
    helpers.write_tiny_gguf(changed, seed=2)  # rewritten in place: size equal, mtime differs -> stale copy
    os.utime(changed, ns=(time.time_ns(), changed.stat().st_mtime_ns + 2 * 10**9))
    assert cached_copy(changed) is None


def test_failed_conversion_leaves_no_copy(tiny_gguf, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(gguf, "read_gguf", broken)
    with pytest.raises(OSError, match="disk full"):
        ct.models.load_model(tiny_gguf, device="cpu", cache_dir=tmp_path)
    assert not gguf_cache_dir(tiny_gguf, tmp_path).exists()
    assert not (tmp_path / "gguf").exists() or list((tmp_path / "gguf").iterdir()) == []  # no temp leftovers


def test_a_copy_without_its_marker_is_not_used(tiny_gguf, tmp_path, monkeypatch):
    ct.models.load_model(tiny_gguf, device="cpu", cache_dir=tmp_path)
    (gguf_cache_dir(tiny_gguf, tmp_path) / MARKER).unlink()  # e.g. a copy from an interrupted writer
    reads = CountingReads(monkeypatch)
    ct.models.load_model(tiny_gguf, device="cpu", cache_dir=tmp_path)
    assert reads.calls == 1 and (gguf_cache_dir(tiny_gguf, tmp_path) / MARKER).is_file()


def test_save_pretrained_needs_the_quantizer_marker_dropped(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
    with pytest.raises(ValueError, match="quantized"):
        model.save_pretrained(tmp_path / "refused")
    drop_quantizer(model)
    model.save_pretrained(tmp_path / "saved")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    assert torch.equal(logits(again, [1, 4, 5]), logits(model.eval(), [1, 4, 5]))


def test_find_gguf(tiny_gguf, tmp_path):
    assert find_gguf(tiny_gguf) == tiny_gguf and find_gguf(tiny_gguf.parent) == tiny_gguf
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "x.gguf").write_bytes(b"")
    assert find_gguf(tmp_path) is None  # an HF directory that also holds a GGUF reads as HF
    assert find_gguf("HuggingFaceTB/SmolLM2-135M") is None


# -- clean model ids ---------------------------------------------------------------------------------
def test_clean_model_id(tmp_path, tiny_gguf):
    assert clean_model_id("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert clean_model_id(str(tiny_gguf)) == "tiny-llama.F32"
    assert clean_model_id(str(tiny_gguf.parent)) == "tiny-llama.F32"
    assert clean_model_id(str(tmp_path)) == tmp_path.name
    assert clean_model_id("/elsewhere/models/my-model") == "my-model"  # a path from another machine
    assert clean_model_id("/elsewhere/x/SmolLM2.Q4_1.gguf") == "SmolLM2.Q4_1"


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hf") / "tiny-llama-hf"
    helpers.make_hf_model("llama", seed=3).save_pretrained(root)
    helpers.tokenizer().save_pretrained(root)
    return root


def test_local_directory_gets_its_name_not_its_path(saved_llama, tmp_path):
    loaded = ct.load_model(str(saved_llama), device="cpu")
    assert loaded.model_id == "tiny-llama-hf" == loaded.model.config._name_or_path
    assert loaded.gguf is None and loaded.path == str(saved_llama) and not loaded.model.training
    tc = helpers.make_transcoder(kind="plt", seed=1, input_hook="ln2.hook_normalized")
    rm = ct.load(str(saved_llama), tc, device="cpu")
    assert rm.model_id == "tiny-llama-hf"
    graph = ct.attribute(rm, "w1 w2 w3", max_feature_nodes=8, progress=False)
    out = tmp_path / "g.json"
    graph.to_json(str(out), slug="g")
    scan = json.loads(out.read_text())["metadata"]["scan"]
    assert scan == "tiny-llama-hf" and str(tmp_path.parent) not in out.read_text()


def test_load_model_refuses_bad_arguments(saved_llama):
    with pytest.raises(TypeError, match="model"):
        ct.load_model(3)  # pyright: ignore[reportArgumentType]  # the wrong type is the test
    with pytest.raises(ValueError, match="not a token"):
        ct.load_model(str(saved_llama), device="cpu", bos="<nope>")


# -- BOS ---------------------------------------------------------------------------------------------
def test_bos_choice_reaches_prompts(saved_llama):
    tc = helpers.make_transcoder(kind="plt", seed=1, input_hook="ln2.hook_normalized")
    default = ct.load(str(saved_llama), tc, device="cpu")
    assert default.tokenize("w1 w2").tolist() == [0, 4, 5]  # the tokenizer's own <bos>
    eos = ct.load(str(saved_llama), tc, device="cpu", bos="<eos>")
    assert eos.tokenize("w1 w2").tolist() == [1, 4, 5]
    none = ct.load(str(saved_llama), tc, device="cpu", bos="none")
    assert none.tokenize("w1 w2").tolist() == [4, 5] and none.tokenizer.bos_token_id is None
    shared = helpers.tokenizer()
    by_id = ct.load(helpers.make_hf_model("llama", seed=3), tc, tokenizer=shared, device="cpu", bos=7)
    assert by_id.tokenize("w1 w2").tolist() == [7, 4, 5]
    assert shared.bos_token_id == 0 and by_id.tokenizer is not shared  # the caller's tokenizer is unchanged


def test_bos_switches_a_tokenizer_that_adds_its_own():
    tok = copy.deepcopy(helpers.tokenizer())  # the helper's tokenizer is shared: never change it
    tok.add_bos_token = True  # now tok("w1") itself starts with <bos>
    assert tok("w1")["input_ids"] == [0, 4]
    set_bos(tok, "w3")
    assert tok("w1")["input_ids"] == [6, 4] and tok.bos_token_id == 6
    set_bos(tok, "none")
    assert tok("w1")["input_ids"] == [4] and tok.bos_token_id is None
    with pytest.raises(ValueError, match="outside"):
        set_bos(tok, 10_000)
    with pytest.raises(TypeError):
        set_bos(tok, 1.5)  # pyright: ignore[reportArgumentType]  # the wrong type is the test
