"""Corpus packing never puts a chat template's markers mid-window: documents are separated by EOS
only when the template does not use it, else by a plain end-of-text token (or a blank line)."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from circuit_trace.transcoders.training import make_windows, tokenize_windows
from circuit_trace.transcoders.training.packing import boundary_token_ids, document_separator, template_token_ids

CHAT = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
WORDS = [f"w{i}" for i in range(40)]


def chat_tokenizer(*, template: str | None = CHAT, eos: str = "<|im_end|>", plain: bool = True):
    """Word-level tokenizer shaped like SmolLM2-Instruct's: BOS <|im_start|>, EOS <|im_end|> (both
    chat markers), and a plain <|endoftext|> (dropped with plain=False)."""
    special = SPECIAL if plain else SPECIAL[1:]
    vocab = {t: i for i, t in enumerate([*special, *WORDS])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token=eos, unk_token="<unk>")
    if template is not None:
        tok.chat_template = template
    return tok


DOCS = [" ".join(WORDS[i : i + 5]) for i in range(0, 35, 5)]  # 7 documents of 5 words


def test_template_tokens_are_the_markers_the_template_writes():
    tok = chat_tokenizer()
    vocab = tok.get_vocab()
    assert template_token_ids(tok) == {vocab["<|im_start|>"], vocab["<|im_end|>"]}
    assert template_token_ids(chat_tokenizer(template=None)) == set()


def test_packing_never_injects_template_markers_mid_window():
    tok = chat_tokenizer()
    vocab = tok.get_vocab()
    windows = tokenize_windows(tok, DOCS, context_size=8)
    assert (windows[:, 0] == vocab["<|im_start|>"]).all()  # the BOS each window starts with
    body = windows[:, 1:]
    for marker in ("<|im_start|>", "<|im_end|>"):
        assert not (body == vocab[marker]).any(), f"{marker} packed mid-window"
    # documents are separated by <|endoftext|>: one after each document, in order
    stream = body.flatten().tolist()
    n_seps = stream.count(vocab["<|endoftext|>"])
    assert n_seps >= len(stream) // 6 - 1 and stream[5] == vocab["<|endoftext|>"]
    ids, lengths = make_windows(tok, DOCS, 8, pack=True)
    assert torch.equal(ids, windows) and (lengths == 8).all()


def test_eos_is_kept_when_the_template_does_not_use_it():
    tok = chat_tokenizer(template="{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert document_separator(tok) == [tok.eos_token_id]  # today's behaviour for base models
    assert document_separator(chat_tokenizer(template=None)) == [tok.eos_token_id]


def test_without_a_plain_end_of_text_token_documents_are_separated_by_text():
    tok = chat_tokenizer(plain=False)
    assert document_separator(tok) == []  # a blank line: no token for a whitespace-splitting tokenizer
    windows = tokenize_windows(tok, DOCS, context_size=8)
    assert not torch.isin(windows[:, 1:], torch.tensor(sorted(template_token_ids(tok)))).any()


@pytest.mark.parametrize("bos", [None, "<|endoftext|>"])
def test_windows_start_with_the_chosen_bos(bos):
    from circuit_trace.models import set_bos

    tok = chat_tokenizer()
    set_bos(tok, bos)
    ids, _ = make_windows(tok, DOCS, 8, pack=True)
    assert ids[:, 0].tolist() == [tok.bos_token_id] * ids.shape[0]
    set_bos(tok, "none")
    ids, _ = make_windows(tok, DOCS, 8, pack=True)
    assert tok.bos_token_id is None and ids[0, :5].tolist() == tok(DOCS[0], add_special_tokens=False)["input_ids"]


def test_boundary_tokens_are_bos_and_a_special_separator():
    tok = chat_tokenizer()
    vocab = tok.get_vocab()
    assert boundary_token_ids(tok) == sorted([vocab["<|im_start|>"], vocab["<|endoftext|>"]])
    # a blank-line separator is text, not a boundary token: only BOS is skipped
    no_plain = chat_tokenizer(plain=False)
    assert boundary_token_ids(no_plain) == [no_plain.get_vocab()["<|im_start|>"]]
