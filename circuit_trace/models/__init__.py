"""Loading HF causal LMs and the per-family adapters that say where MLP inputs/outputs, norms,
attention and the unembedding live, and how to freeze them. Only this package knows architectures."""
