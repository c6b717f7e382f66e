"""Shared factories for tests: tiny random HF models of every supported family (built from configs,
no downloads), an offline word-level tokenizer, random transcoders and `ReplacementModel`s.

Importable from any test folder as `helpers` (tests/conftest.py puts tests/ on sys.path)."""

from __future__ import annotations

import functools
import os
import random
from pathlib import Path

import torch
from hypothesis import HealthCheck, settings

import circuit_trace as ct
from circuit_trace.transcoders import Transcoder

FAMILIES = ("gpt2", "llama", "qwen3", "gemma2", "gemma3")
GEMMA = ("gemma2", "gemma3")
VOCAB = 100
N_CTX = 16  # short context so "prompt longer than the context" is cheap to build
WORDS = ["<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(VOCAB - 3)]
PROMPT = "w1 w5 w7 w9 w11 w3 w4"  # 8 tokens with BOS (> Gemma's sliding window of 4)


def ct_settings(max_examples: int) -> settings:
    """Hypothesis settings for model-building tests: few examples (each builds a model), no
    deadline, derandomised so CI time is stable. CT_HYPOTHESIS_SCALE=10 explores ten times more."""
    scale = float(os.environ.get("CT_HYPOTHESIS_SCALE", "1"))
    return settings(
        max_examples=max(1, int(max_examples * scale)),
        deadline=None,
        derandomize=scale == 1,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


# -- tokenizer -------------------------------------------------------------------------------------
@functools.cache
def tokenizer():
    """Word-level tokenizer over WORDS: "w5" is one token; BOS "<bos>" = 0 (prepended by
    ReplacementModel.tokenize, since the tokenizer itself adds no special tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


def random_prompt(seed: int, n_words: int | None = None) -> str:
    rng = random.Random(seed)
    n = n_words if n_words is not None else rng.randint(4, 7)
    return " ".join(f"w{rng.randrange(VOCAB - 3)}" for _ in range(n))


# -- models ----------------------------------------------------------------------------------------
def make_hf_model(family: str, *, n_layers: int = 3, d_model: int = 32, seed: int = 0, n_ctx: int = N_CTX):
    """A tiny random causal LM of `family` (float32, eval mode, eager attention)."""
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, initializer_range=0.3, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    if family == "gpt2":
        cfg = tf.GPT2Config(n_layer=n_layers, n_embd=d_model, n_head=2, n_positions=n_ctx, **common)
        model = tf.GPT2LMHeadModel(cfg)
    elif family == "llama":  # grouped-query attention: 4 query heads share 2 key/value heads
        cfg = tf.LlamaConfig(
            num_hidden_layers=n_layers,
            hidden_size=d_model,
            intermediate_size=2 * d_model,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=n_ctx,
            **common,
        )
        model = tf.LlamaForCausalLM(cfg)
    elif family == "qwen3":  # q/k norms inside attention, explicit head_dim
        cfg = tf.Qwen3Config(
            num_hidden_layers=n_layers,
            hidden_size=d_model,
            intermediate_size=2 * d_model,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=n_ctx,
            **common,
        )
        model = tf.Qwen3ForCausalLM(cfg)
    elif family == "gemma2":  # soft-capped attention and final logits; sliding window 4 < prompt
        cfg = tf.Gemma2Config(
            num_hidden_layers=n_layers,
            hidden_size=d_model,
            intermediate_size=2 * d_model,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            query_pre_attn_scalar=8,
            max_position_embeddings=n_ctx,
            sliding_window=4,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=8.0,
            **common,
        )
        model = tf.Gemma2ForCausalLM(cfg)
    elif family == "gemma3":  # text-only Gemma-3: q/k norms, local/global layers, sliding window 4
        layer_types = ["sliding_attention" if (i % 2 == 0) else "full_attention" for i in range(n_layers)]
        cfg = tf.Gemma3TextConfig(
            num_hidden_layers=n_layers,
            hidden_size=d_model,
            intermediate_size=2 * d_model,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            query_pre_attn_scalar=8,
            max_position_embeddings=n_ctx,
            sliding_window=4,
            layer_types=layer_types,
            **common,
        )
        model = tf.Gemma3ForCausalLM(cfg)
    else:
        raise ValueError(f"unknown test family {family!r}")
    model.config._attn_implementation = "eager"
    return model.eval()


def save_llama_and_clt(root: Path, *, model_dir: str = "model", clt_dir: str = "clt", name: str = "") -> Path:
    """A tiny Llama + tokenizer and a CLT for it, saved under `root` as a user would have them (the
    CLI tests' fixture)."""
    model = make_hf_model("llama", seed=3)
    model.save_pretrained(root / model_dir)
    tokenizer().save_pretrained(root / model_dir)
    tc = Transcoder.random(3, 32, 64, cross_layer=True, seed=4, input_hook="ln2.hook_normalized", name=name)
    tc.save(str(root / clt_dir))
    return root


def default_hooks(family: str) -> tuple[str, str]:
    return ("ln2.hook_normalized" if family != "gpt2" else "hook_resid_mid"), "hook_mlp_out"


def make_transcoder(
    n_layers=3,
    d_model=32,
    *,
    kind="clt",
    activation="jumprelu",
    skip=False,
    input_hook="hook_resid_mid",
    output_hook="hook_mlp_out",
    seed=0,
    d_features=48,
):
    return Transcoder.random(
        n_layers,
        d_model,
        d_features,
        cross_layer=(kind == "clt"),
        activation=activation,
        skip=skip,
        seed=seed,
        input_hook=input_hook,
        output_hook=output_hook,
        name=f"random-{kind}-{activation}{'-skip' if skip else ''}",
    )


def make_replacement(
    family: str = "llama",
    kind: str = "clt",
    activation: str = "jumprelu",
    skip: bool = False,
    input_hook: str | None = None,
    output_hook: str | None = None,
    seed: int = 0,
    *,
    n_layers: int = 3,
    d_model: int = 32,
    d_features: int = 48,
):
    """A fresh `ReplacementModel` (tiny random `family` model + random PLT/CLT) via `ct.load`."""
    in_default, out_default = default_hooks(family)
    model = make_hf_model(family, n_layers=n_layers, d_model=d_model, seed=seed)
    tc = make_transcoder(
        n_layers,
        d_model,
        kind=kind,
        activation=activation,
        skip=skip,
        input_hook=input_hook or in_default,
        output_hook=output_hook or out_default,
        seed=seed + 1000,
        d_features=d_features,
    )
    return ct.load(model, tc, tokenizer=tokenizer(), device="cpu")


@functools.lru_cache(maxsize=64)
def cached_replacement(
    family,
    kind="clt",
    activation="jumprelu",
    skip=False,
    input_hook=None,
    output_hook=None,
    seed=0,
    n_layers=3,
    d_model=32,
    d_features=48,
):
    """`make_replacement`, memoised: tests must not modify what it returns."""
    return make_replacement(
        family,
        kind,
        activation,
        skip,
        input_hook,
        output_hook,
        seed,
        n_layers=n_layers,
        d_model=d_model,
        d_features=d_features,
    )


# -- independent reference values --------------------------------------------------------------------
@torch.no_grad()
def plain_forward(rm, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The unmodified HF model on `input_ids` [P]: (logits [P, V] after any final softcap,
    raw lm_head outputs [P, V] before it)."""
    raw = []
    h = rm.adapter.lm_head.register_forward_hook(lambda _m, _a, out: raw.append(out))
    try:
        logits = rm.model(input_ids[None]).logits[0]
    finally:
        h.remove()
    return logits, raw[-1][0]


SUPPORTED = ("gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3")


# -- a tiny GGUF file ---------------------------------------------------------------------------------
GGUF_LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
GGUF_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"


def write_tiny_gguf(path, *, n_layers: int = 2, d: int = 16, ff: int = 32, seed: int = 0) -> Path:
    """A random 2-layer Llama in GGUF (float32 tensors) with a byte-level BPE tokenizer of 56 tokens
    whose BOS/EOS are chat markers, like SmolLM2-Instruct's."""
    import gguf  # the `gguf` package (tests that call this skip without it)
    import numpy as np

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "Ġ", *GGUF_LETTERS, *("Ġ" + c for c in GGUF_LETTERS)]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("Tiny Llama")
    w.add_block_count(n_layers)
    w.add_context_length(64)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(d // 2)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_token_merges(["Ġ " + c for c in GGUF_LETTERS])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(GGUF_TEMPLATE)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    w.add_tensor("token_embd.weight", rand(len(tokens), d))
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    w.add_tensor("output.weight", rand(len(tokens), d))
    for i in range(n_layers):
        for name, shape in [("attn_q", (d, d)), ("attn_k", (d // 2, d)), ("attn_v", (d // 2, d))]:
            w.add_tensor(f"blk.{i}.{name}.weight", rand(*shape))
        w.add_tensor(f"blk.{i}.attn_output.weight", rand(d, d))
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(d, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(d, np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", rand(ff, d))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rand(ff, d))
        w.add_tensor(f"blk.{i}.ffn_down.weight", rand(d, ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)
