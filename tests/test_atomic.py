"""`atomic.atomic_directory` / `replace_directory`: a directory is replaced whole or not at all, the
target never goes missing (also on the per-file fallback), and nothing temporary is left behind."""

from __future__ import annotations

import os

import pytest

from circuit_trace import atomic
from circuit_trace.atomic import atomic_directory, replace_directory


def tree(path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}


def write(path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)


OLD = {"config.yaml": "old", "layer_0.safetensors": "0", "sub/a": "a", "stale": "s"}
NEW = {"config.yaml": "new", "layer_0.safetensors": "00", "sub/b": "b", "extra/c": "c"}


@pytest.mark.parametrize("exchange", [True, False], ids=["swap", "per-file fallback"])
def test_replaces_whole_and_leaves_nothing_behind(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:  # a new target
        write(tmp, OLD)
    assert tree(target) == OLD
    with atomic_directory(target) as tmp:  # an existing one
        assert tmp.parent == tmp_path and tmp != target
        write(tmp, NEW)
    assert tree(target) == NEW
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_error_keeps_the_old_directory(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    write(target, OLD)
    with pytest.raises(RuntimeError, match="disk"), atomic_directory(target) as tmp:
        write(tmp, NEW)
        raise RuntimeError("disk full")
    assert tree(target) == OLD
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


@pytest.mark.parametrize("exchange", [True, False], ids=["swap", "per-file fallback"])
def test_target_never_missing_while_replaced(tmp_path, monkeypatch, exchange):
    """After every rename the replacement makes, the target still holds a config (a swap done as
    rename-away + rename-in would fail here between its two renames)."""
    target = tmp_path / "ckpt"
    target.mkdir()
    write(target, OLD)
    checks = []

    def checked(rename):
        def call(src, dst):
            rename(src, dst)
            checks.append((target / "config.yaml").is_file())

        return call

    monkeypatch.setattr(os, "rename", checked(os.rename))
    monkeypatch.setattr(os, "replace", checked(os.replace))
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    with atomic_directory(target) as tmp:
        write(tmp, NEW)
    assert tree(target) == NEW
    assert all(checks) and (exchange or len(checks) >= len(NEW))


def test_refuses_to_replace_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(NotADirectoryError, match="not a directory"):
        replace_directory(src, tmp_path / "f")
    assert (tmp_path / "f").read_text() == "x" and src.is_dir()
