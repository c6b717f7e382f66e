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


def boundary_token_ids(tokenizer) -> list[int]:
    """Ids of the tokens that open or separate documents in a window: BOS and the packing separator
    when it is a token (`separator_token`; a blank line is text). Training and evaluation skip their
    positions as they skip position 0: models write attention-sink activations there (SmolLM2-135M's
    layer-11 MLP: up to ~530x its median output norm, 98.8 % of the layer's output energy on a packed
    corpus), which a dictionary of the text's features should not spend its capacity on, and which
    would dominate a held-out FVU."""
    ids = {tokenizer.bos_token_id, separator_token(tokenizer)}
    return sorted(int(i) for i in ids if i is not None)


def separator_token(tokenizer) -> int | None:
    """The token put between packed documents: EOS unless the chat template uses it, else the first
    plain end-of-text token of the vocabulary the template does not use, else BOS (same rule);
    None when every candidate is a template marker (then `document_separator` is a blank line)."""
    avoid = template_token_ids(tokenizer)
    vocab = tokenizer.get_vocab()
    candidates = [tokenizer.eos_token_id, *(vocab.get(t) for t in END_OF_TEXT_TOKENS), tokenizer.bos_token_id]
    return next((int(i) for i in candidates if i is not None and i not in avoid), None)


def document_separator(tokenizer) -> list[int]:
    """Token ids put between packed documents: `separator_token`, else a blank line as text
    (possibly no token at all, e.g. for a whitespace-splitting tokenizer)."""
    token = separator_token(tokenizer)
    if token is not None:
        return [token]
    return [int(i) for i in tokenizer(PLAIN_SEPARATOR, add_special_tokens=False)["input_ids"]]
