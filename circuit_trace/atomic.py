"""Atomic file and directory writes shared by every stage: write a temp file (or directory) beside
the target, then rename (or swap) it in. Readers never see half a file or a half-written directory,
and a failed write leaves the old one untouched."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux /proc)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; the file gets what open() would give
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
    text = json.dumps(
        data,
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":") if compact else None,
        indent=None if compact else 1,
    )
    return atomic_write_text(path, text)


# -------------------------------------------------------------------------------- directories
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the
    system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # no libc symbol (old glibc, musl)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _merge_into(src: Path, dst: Path) -> None:
    """Make the existing directory `dst` hold exactly what `src` holds, one atomic rename per file,
    new entries in before stale ones go, so `dst` itself is never missing (the fallback swap)."""
    names = {entry.name for entry in src.iterdir()}
    for name in sorted(names):
        entry, target = src / name, dst / name
        if _is_real_dir(entry) and _is_real_dir(target):
            _merge_into(entry, target)
            continue
        if _is_real_dir(target):
            shutil.rmtree(target)
        os.replace(entry, target)
    for stale in dst.iterdir():
        if stale.name not in names:
            if _is_real_dir(stale):
                shutil.rmtree(stale)
            else:
                stale.unlink()


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def replace_directory(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Put the directory `src` at `dst`, replacing any directory there; `src` is gone afterwards.

    A new `dst` is one rename. An existing one is swapped with `src` in one step where the system
    can (Linux renameat2), so readers see the old tree or the new one, never a missing or mixed
    one; elsewhere its files are replaced one by one and `dst` never goes missing."""
    src, dst = Path(src), Path(dst)
    if not _is_real_dir(src):
        raise NotADirectoryError(f"{src} is not a directory")
    if not dst.exists() and not dst.is_symlink():
        os.rename(src, dst)
        return dst
    if not _is_real_dir(dst):
        raise NotADirectoryError(f"{dst} exists and is not a directory; refusing to replace it")
    if not _exchange(src, dst):
        _merge_into(src, dst)
    shutil.rmtree(src, ignore_errors=True)  # after the swap: the old tree
    return dst


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory atomically: write into the yielded temporary sibling of `path`; on a clean
    exit it replaces `path` whole (see `replace_directory`); on an error it is removed and `path`
    is left as it was. It gets the mode `mkdir` would give (mkdtemp's 0700 is not kept), and so does
    every file in it the mode `open` would give: some writers (safetensors 0.8, temp-file based
    savers) make their files 0600 whatever the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        mode = 0o666 & ~current_umask()
        for f in tmp.rglob("*"):
            if f.is_file() and not f.is_symlink():
                f.chmod(mode)
        replace_directory(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
