"""Freed memory kept for reuse during a CPU run.

glibc serves every allocation over its mmap threshold (128 KiB to 32 MiB) with a fresh mapping and
unmaps it on free, so each training step's batch-sized tensors ([1,024 tokens, 30 layers, 576] is
35 MB in bf16, 71 MB in float32) arrive as untouched pages and the kernel zero-fills them again on first write: on a
30-layer SmolLM2 step that was a third of the CPU time (system time, minor page faults).
`reusing_freed_memory` serves large blocks from the heap and keeps freed ones there for the run,
then restores glibc's defaults and hands the memory back (`malloc_trim`). Elsewhere than glibc
it does nothing."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Iterator

__all__ = ["reusing_freed_memory"]

# mallopt parameters (malloc.h) and glibc's defaults
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def reusing_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Inside: large blocks come from the heap and freed ones stay there (no page faults on reuse;
    the process's resident size stays at its peak until the end). Yields whether it applied."""
    libc = _glibc() if enabled else None
    applied = (
        libc is not None and bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    )
    try:
        yield applied
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)
