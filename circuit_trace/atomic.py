"""Atomic file writes shared by every stage: write a temp file beside the target, fsync, rename.
Readers never see half a file, and a failed write leaves the old file untouched."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, *, compact: bool = False) -> Path:
    """UTF-8 JSON; NaN and infinities are refused (they are not JSON)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":") if compact else None, indent=None if compact else 1)
    return atomic_write_text(path, text)
