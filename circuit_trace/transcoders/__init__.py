"""Per-layer and cross-layer transcoders (JumpReLU, ReLU, TopK, optional skip), their on-disk
formats (circuit-tracer layout), and the trainer that fits them to a model's MLPs."""
