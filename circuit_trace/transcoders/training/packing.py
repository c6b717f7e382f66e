"""The token that separates documents packed into one training window, chosen so packing never
injects a chat template's markers (`<|im_end|>`, `<end_of_turn>`, ...) mid-window: an instruct
model's EOS is often such a marker, and features trained on packed text then fire on it."""

from __future__ import annotations

# Plain end-of-text tokens of common tokenizers (GPT-2/SmolLM/Qwen, Llama-3, Llama-2/Mistral, Gemma).
END_OF_TEXT_TOKENS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")
PLAIN_SEPARATOR = "\n\n"  # the last resort: a blank line, as text


def _template_texts(tokenizer) -> list[str]:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):
        return [template]
    if isinstance(template, dict):  # named templates
        return [t for t in template.values() if isinstance(t, str)]
    return []


def template_token_ids(tokenizer) -> set[int]:
    """Ids of the special or added tokens that the tokenizer's chat template writes (empty when it
    has no template)."""
    texts = _template_texts(tokenizer)
    if not texts:
        return set()
    candidates = {*tokenizer.all_special_tokens, *tokenizer.get_added_vocab()}
    vocab = tokenizer.get_vocab()
    return {vocab[t] for t in candidates if t in vocab and any(t in text for text in texts)}


def document_separator(tokenizer) -> list[int]:
    """Token ids put between packed documents: EOS unless the chat template uses it, else the first
    plain end-of-text token of the vocabulary the template does not use, else BOS (same rule), else
    a blank line as text (possibly no token at all, e.g. for a whitespace-splitting tokenizer)."""
    avoid = template_token_ids(tokenizer)
    vocab = tokenizer.get_vocab()
    candidates = [tokenizer.eos_token_id, *(vocab.get(t) for t in END_OF_TEXT_TOKENS), tokenizer.bos_token_id]
    for token_id in candidates:
        if token_id is not None and token_id not in avoid:
            return [int(token_id)]
    return [int(i) for i in tokenizer(PLAIN_SEPARATOR, add_special_tokens=False)["input_ids"]]
