"""TransformerLens hook names a transcoder may read from / write to.

Checkpoints name their input and output points with TransformerLens names (circuit-tracer
`feature_input_hook` / `feature_output_hook`), sometimes with a `blocks.{l}.` prefix. We store the
bare name; the model adapter maps it to an HF module per layer.
"""

from __future__ import annotations

import re

__all__ = ["INPUT_HOOKS", "OUTPUT_HOOKS", "VALID_HOOKS", "normalize_hook_name"]

# Points where an MLP input can be read (after attention, before/after the MLP's norm).
INPUT_HOOKS: tuple[str, ...] = ("hook_resid_mid", "ln2.hook_normalized", "mlp.hook_in")
# Points where an MLP output can be read / replaced.
OUTPUT_HOOKS: tuple[str, ...] = ("hook_mlp_out", "mlp.hook_out")
VALID_HOOKS: tuple[str, ...] = INPUT_HOOKS + OUTPUT_HOOKS

# `blocks.3.hook_resid_mid`, `blocks.{l}.hook_resid_mid`, `blocks.{layer}.mlp.hook_in`, ...
_PREFIX = re.compile(r"^blocks\.(\d+|\{\w*\})\.")


def normalize_hook_name(name: str) -> str:
    """Return the bare TransformerLens hook name, or raise ValueError for an unknown one."""
    if not isinstance(name, str):
        raise ValueError(f"hook name must be a string, got {type(name).__name__}: {name!r}")
    bare = _PREFIX.sub("", name.strip())
    if bare not in VALID_HOOKS:
        raise ValueError(
            f"unknown hook name {name!r}; expected one of {', '.join(VALID_HOOKS)} "
            "(optionally prefixed with 'blocks.{l}.')"
        )
    return bare
