"""Reading a prompts file: plain text (one prompt per line) or JSONL ({"prompt": ..., "targets": [...]})."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path


class SweepInputError(ValueError):
    """The prompts file or the output directory cannot be used (CLI exit code 2)."""


class SweepLoadError(RuntimeError):
    """The model or transcoders could not be loaded, in-process or by a Ray worker (CLI exit code 3)."""


@dataclass(frozen=True)
class PromptSpec:
    """One prompt of a sweep. `key` names its files: line number plus a hash of prompt and targets,
    so a resumed sweep recognises finished work and an edited line is traced again."""

    index: int
    prompt: str
    targets: tuple = field(default=())  # tokens (strings or ids); empty: the top logits

    @property
    def key(self) -> str:
        payload = json.dumps([self.prompt, list(self.targets)], ensure_ascii=False)
        return f"p{self.index:05d}-{hashlib.sha1(payload.encode()).hexdigest()[:10]}"


def _jsonl_spec(index: int, line: str, where: str) -> PromptSpec:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SweepInputError(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        raise SweepInputError(f'{where}: expected an object with a string "prompt"')
    targets = record.get("targets") or []
    if isinstance(targets, (str, int)):
        targets = [targets]
    if not isinstance(targets, list) or not all(isinstance(t, (str, int)) for t in targets):
        raise SweepInputError(f'{where}: "targets" must be a list of tokens (strings or ids)')
    return PromptSpec(index, record["prompt"], tuple(targets))


def read_prompts(path: str | Path) -> list[PromptSpec]:
    """Prompts of a `.jsonl` file (one JSON object a line) or any other text file (one prompt a
    line). Blank lines are skipped; line numbers (from 1) stay the prompts' indices."""
    path = Path(path)
    if not path.is_file():
        raise SweepInputError(f"prompts file {str(path)!r} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise SweepInputError(f"prompts file {str(path)!r} is not UTF-8 text") from exc
    jsonl = path.suffix.lower() == ".jsonl"
    specs = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        specs.append(_jsonl_spec(n, line, f"{path}:{n}") if jsonl else PromptSpec(n, line))
    if not specs:
        raise SweepInputError(f"prompts file {str(path)!r} holds no prompt")
    return specs
