"""Small models the project trains itself (a US-states fact world), shipped with their tokenizer,
weights and transcoders as package data: the embedded default model."""
