"""Errors raised while building, loading or checking transcoders.

Both derive from `TranscoderError` so callers can catch everything from this package at once;
`TranscoderMismatchError` is also a `ValueError` because it means "these weights do not fit this
model", which is a bad argument rather than a broken file.
"""

from __future__ import annotations

__all__ = ["TranscoderError", "CheckpointError", "TranscoderMismatchError"]


class TranscoderError(Exception):
    """Base class for every error raised by `circuit_trace.transcoders`."""


class CheckpointError(TranscoderError):
    """A checkpoint on disk (or on the hub) cannot be read: a missing or truncated file, a tensor
    with NaN/inf, shapes that disagree between files, an unknown hook name or a bad config.

    `path` and `tensor` name the culprit when known, so tools can point the user at it.
    """

    def __init__(self, message: str, *, path: str | None = None, tensor: str | None = None):
        super().__init__(message)
        self.path = path
        self.tensor = tensor


class TranscoderMismatchError(TranscoderError, ValueError):
    """The transcoders do not fit the model they are used with (d_model, n_layers, hook names)."""
