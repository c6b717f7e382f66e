"""`sweep()`: trace every prompt of a file, skip finished ones, write the sweep-wide tables."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..atomic import atomic_write_json
from .prompts import PromptSpec, SweepInputError, SweepLoadError, read_prompts
from .tables import feature_frame, read_rows, summary_frame, write_table
from .trace import SweepOptions, row_path, trace_prompt, write_result

MANIFEST = "sweep.json"


@dataclass
class SweepResult:
    """What a sweep left in `out`: the summary (one row per prompt, `error` "" when it worked) and
    the feature table, with their paths; `n_traced` prompts this run, `n_skipped` already done."""

    out: Path
    summary: pd.DataFrame
    features: pd.DataFrame
    summary_path: Path
    features_path: Path
    n_traced: int
    n_skipped: int
    seconds: float

    @property
    def n_failed(self) -> int:
        return int((self.summary["error"] != "").sum())


def _check_manifest(out: Path, manifest: dict) -> None:
    """A resumed sweep must use the model, transcoders and options the finished rows were made with."""
    path = out / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != manifest:
            changed = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise SweepInputError(
                f"{out} holds a sweep made with other settings ({', '.join(changed)} differ): "
                "use a new output directory"
            )
    atomic_write_json(path, manifest)


def _pending(out: Path, specs: list[PromptSpec], retry_failed: bool) -> list[PromptSpec]:
    todo = []
    for spec in specs:
        path = row_path(out, spec)
        if path.is_file() and not (retry_failed and json.loads(path.read_text(encoding="utf-8")).get("error")):
            continue
        todo.append(spec)
    return todo


def _load_kwargs(model, transcoders, device, dtype) -> dict:
    """`ct.load` arguments, which Ray workers need as plain values (they load the model themselves)."""
    for name, value in (("model", model), ("transcoders", transcoders)):
        if value is not None and not isinstance(value, (str, Path)):
            raise TypeError(
                f"a sweep on Ray workers needs {name} as a hub id or path, not a "
                f"{type(value).__name__} (each worker loads it)"
            )
    return {
        "model": None if model is None else str(model),
        "transcoders": None if transcoders is None else str(transcoders),
        "device": None if device is None else str(device),
        "dtype": None if dtype is None else str(dtype),
    }


def _run_local(specs, rm_or_kwargs, options, on_result) -> None:
    from ..api import load
    from ..replacement.model import ReplacementModel

    if isinstance(rm_or_kwargs, ReplacementModel):
        rm = rm_or_kwargs
    else:
        try:
            rm = load(**rm_or_kwargs)
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise SweepLoadError(f"could not load the model/transcoders: {exc}") from exc
    for spec in specs:
        row, files = trace_prompt(rm, spec, options)
        on_result(spec, row, files)


def _model_ids(model, transcoders) -> dict:
    from ..replacement.model import ReplacementModel

    if isinstance(model, ReplacementModel):
        return {"model": model.model_id, "transcoders": getattr(model.transcoders, "name", "")}
    return {
        "model": None if model is None else str(model),
        "transcoders": None if transcoders is None else str(transcoders),
    }


def sweep(
    prompts: str | Path | list[str],
    out: str | Path,
    *,
    model=None,
    transcoders: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    options: SweepOptions | None = None,
    workers: int | None = None,
    address: str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
) -> SweepResult:
    """Trace every prompt into `out`: graphs/<key>.safetensors (the pruned graph unless
    `options.save_full_graph`), json/<key>.json (Neuronpedia), rows/<key>.json, summary and features
    tables (parquet with pyarrow, else csv). `prompts`: a file (text or .jsonl) or a list of strings.
    `model`: as for `ct.load` (None: the organism), or a loaded ReplacementModel (in-process only).
    `workers`/`address`: run on Ray (`address` joins a running cluster). Finished prompts are skipped
    (failed ones too unless `retry_failed`)."""
    t0 = time.perf_counter()
    options = options or SweepOptions()
    specs = (
        read_prompts(prompts)
        if isinstance(prompts, (str, Path))
        else [PromptSpec(i + 1, p) for i, p in enumerate(prompts)]
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    use_ray = workers is not None or address is not None
    target = (
        _load_kwargs(model, transcoders, device, dtype)
        if use_ray or model is None or isinstance(model, (str, Path))
        else model
    )
    _check_manifest(
        out,
        {**_model_ids(model, transcoders), "dtype": None if dtype is None else str(dtype), "options": asdict(options)},
    )
    todo = _pending(out, specs, retry_failed)
    bar = tqdm(total=len(todo), desc="sweep", unit="prompt", disable=not progress or not todo, dynamic_ncols=True)
    failed = 0

    def on_result(spec: PromptSpec, row: dict, files: dict[str, bytes]) -> None:
        nonlocal failed
        write_result(out, spec, row, files)
        failed += bool(row.get("error"))
        bar.update(1)
        bar.set_postfix(failed=failed)

    try:
        if todo and use_ray:
            from .ray_pool import run_ray

            run_ray(todo, target, options, workers=workers, address=address, on_result=on_result)
        elif todo:
            _run_local(todo, target, options, on_result)
    finally:
        bar.close()
    return _finish(out, specs, len(todo), t0)


def _finish(out: Path, specs: list[PromptSpec], n_traced: int, t0: float) -> SweepResult:
    rows = read_rows(out, specs)
    summary, features = summary_frame(rows), feature_frame(rows)
    summary_path, features_path = write_table(summary, out / "summary"), write_table(features, out / "features")
    return SweepResult(
        out=out,
        summary=summary,
        features=features,
        summary_path=summary_path,
        features_path=features_path,
        n_traced=n_traced,
        n_skipped=len(specs) - n_traced,
        seconds=time.perf_counter() - t0,
    )
