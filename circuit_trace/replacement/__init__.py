"""ReplacementModel = HF model + transcoders: full replacement for fidelity metrics, and the local
replacement context for one prompt (frozen attention and norms, error terms) that attribution uses."""
