"""Factories for the training tests: a tiny random Llama (built from a config), an offline word-level
tokenizer and a random word corpus. (Not named conftest so test modules can import it unambiguously.)"""

import torch

WORDS = [
    "the",
    "a",
    "of",
    "in",
    "is",
    "was",
    "capital",
    "state",
    "city",
    "river",
    "north",
    "south",
    "east",
    "west",
    "big",
    "small",
    "old",
    "new",
    "texas",
    "ohio",
    "maine",
    "utah",
    "iowa",
    "idaho",
    "nevada",
    "oregon",
    "austin",
    "columbus",
    "augusta",
    "boise",
    "salem",
    "and",
    "has",
    "its",
    "largest",
    "known",
    "for",
    "one",
    "two",
    "three",
]


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<unk>", "<bos>", "<eos>"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>", eos_token="<eos>")


def make_model(vocab_size, n_layers=2, d=32, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=d,
        intermediate_size=2 * d,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(cfg).eval()


def make_corpus(n_docs=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        " ".join(WORDS[i] for i in torch.randint(len(WORDS), (int(n),), generator=g))
        for n in torch.randint(5, 20, (n_docs,), generator=g)
    ]
