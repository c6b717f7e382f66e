"""Attribution targets (logits, custom directions), the batched backward engine that fills the
adjacency matrix, and influence-ordered node selection."""
