"""Byte-level BPE tokenizer for the `states` organism, trained on its corpus.

GPT-2 style (byte-level, so any text encodes), with a vocabulary large enough that every word
of the corpus is one token with its leading space (`` Austin``, `` Texas``, `` TX``).  Multi-word
names (`` New York``, `` Los Angeles``, `` Salt Lake City``) are several tokens.
The tokenizer prepends ``<|bos|>`` to every encoded text; ``<|eos|>`` ends training sentences
and ``<|pad|>`` pads batches.
"""

from __future__ import annotations

from collections.abc import Iterable

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"

__all__ = ["BOS", "EOS", "PAD", "train_tokenizer"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """Train the tokenizer on ``texts``; returns a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sorted(set(texts)), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=None,
        padding_side="right",
        model_max_length=64,
    )
