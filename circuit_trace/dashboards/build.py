"""`feature_dashboards`: run a corpus through a model and its transcoders and write, for every
feature, its top-activating contexts in quantile groups, activation frequency and histogram, top and
bottom logit effects and an evidence-based label (see the package docstring for the files)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_bytes, atomic_write_json
from ..models.mlp_hooks import mlp_hooks
from .collect import LayerStats, StatsOptions
from .corpus import TokenDecoder, context_batches, corpus_fingerprint, read_documents
from .identity import default_dashboard_dir, transcoder_fingerprint, transcoder_id
from .labels import ConceptMap, LabelOptions
from .render import render_layer
from .store import write_index, write_labels, write_layer_chunks

__all__ = ["DashboardError", "DashboardOptions", "DashboardResult", "feature_dashboards"]

PARTIAL = ".partial"


class DashboardError(ValueError):
    """Bad options, or a partial run that does not fit this one."""


@dataclass
class DashboardOptions:
    ctx_len: int = 64  # tokens per context, BOS included
    batch_size: int = 32  # contexts per forward pass
    max_contexts: int | None = None  # stop after this many contexts (None: the whole corpus)
    top_k: int = 12  # top-activating contexts per feature
    n_samples: int = 24  # uniformly sampled active contexts per feature, shown in quantile groups
    n_quantiles: int = 3  # groups the samples are split into, by activation
    n_logits: int = 10  # top and bottom logit effects kept
    text_field: str = "text"  # JSONL / hub dataset field
    checkpoint_every: int = 200  # batches between resume checkpoints
    neuronpedia_json: bool = False  # also write one Neuronpedia `<index>.json` per feature under json/
    resume: bool = True  # continue a partial run found in the output folder
    progress: bool = True
    seed: int = 0  # sampling of the quantile groups
    decimals: int = 3  # rounding of stored activations

    def check(self) -> None:
        for name in ("ctx_len", "batch_size", "top_k", "n_samples", "n_quantiles", "n_logits", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise DashboardError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.ctx_len < 2:
            raise DashboardError("ctx_len must be at least 2 (BOS and one token)")


@dataclass
class DashboardResult:
    directory: Path
    transcoder_id: str
    n_contexts: int
    n_tokens: int
    n_features: int
    n_dead: int
    seconds: float
    resumed_from: int  # contexts already done by an earlier, interrupted run
    stream_seconds: float = 0.0  # the corpus pass (forward + encode + statistics) of this run
    state_bytes: int = 0  # memory held by the running statistics (independent of corpus length)
    labels: dict[tuple[int, int], Any] = field(default_factory=dict, repr=False)  # (layer, index) -> FeatureLabel

    def summary(self) -> str:
        rate = (self.n_tokens / self.seconds) if self.seconds > 0 else float("nan")
        return (
            f"{self.n_features} features ({self.n_dead} never active) over {self.n_contexts} contexts / "
            f"{self.n_tokens} tokens in {self.seconds:.1f} s ({rate:,.0f} tokens/s)\n"
            f"wrote {self.directory} (transcoders {self.transcoder_id!r})"
        )


@contextmanager
def _layer_inputs(rm, on_input) -> Iterator[None]:
    """Call on_input(layer, x [B, P, d]) with each layer's transcoder input during a forward pass."""
    tc = rm.transcoders
    with mlp_hooks(rm.adapter, tc.feature_input_hook, tc.feature_output_hook, on_input=on_input):
        yield


class _StopForward(Exception):
    """Raised after the last layer's input is read: the rest of the forward is not needed."""


def _concept_ids(cmap: ConceptMap, token_strings, ids: torch.Tensor) -> torch.Tensor:
    """[B, P] concept index per position (len(concepts) = none)."""
    assert cmap.concepts is not None  # the caller only asks when the map has a closed concept list
    where = {c: i for i, c in enumerate(cmap.concepts)}
    none = len(where)
    rows = []
    for row in ids.tolist():
        toks = [token_strings(i) for i in row]
        per = (
            cmap.context_concepts(toks)  # pyright: ignore[reportAttributeAccessIssue]  # optional batch method, probed by hasattr
            if hasattr(cmap, "context_concepts")
            else [cmap.context_concept(toks, p) for p in range(len(toks))]
        )
        rows.append([where.get(c, none) if c is not None else none for c in per])
    return torch.tensor(rows, dtype=torch.long)


def _save_partial(directory: Path, stats: list[LayerStats], meta: dict) -> None:
    from safetensors.torch import save as safetensors_bytes

    directory.mkdir(parents=True, exist_ok=True)
    for layer, s in enumerate(stats):
        atomic_write_bytes(directory / f"layer_{layer}.safetensors", safetensors_bytes(s.state_dict()))
    atomic_write_json(directory / "progress.json", meta)  # last: it commits the checkpoint


def _load_partial(directory: Path, stats: list[LayerStats], meta: dict) -> int:
    """Contexts done by the partial run in `directory` (0 when there is none)."""
    from safetensors.torch import load_file

    path = directory / "progress.json"
    if not path.is_file():
        return 0
    saved = json.loads(path.read_text())
    if {k: v for k, v in saved.items() if k != "done"} != {k: v for k, v in meta.items() if k != "done"}:
        raise DashboardError(
            f"{directory.parent} holds a partial run with another corpus, transcoder or "
            "options; run again with resume off (--restart) to discard it"
        )
    for layer, s in enumerate(stats):
        s.load_state_dict(load_file(str(directory / f"layer_{layer}.safetensors")))
    return int(saved["done"])


def _count_contexts(rm, corpus, o: DashboardOptions) -> int | None:
    """Number of contexts for the progress bar's ETA (local corpora only: tokenizing is cheap)."""
    if isinstance(corpus, (str, os.PathLike)) and not Path(corpus).is_file():
        return o.max_contexts
    n = sum(
        len(b.ids)
        for b in context_batches(
            rm.tokenizer,
            read_documents(corpus, text_field=o.text_field),
            ctx_len=o.ctx_len,
            batch_size=4096,
            max_contexts=o.max_contexts,
        )
    )
    return n


def _run(rm, corpus, o: DashboardOptions, stats: list[LayerStats], cmap, done: int, partial: Path, meta: dict) -> int:
    """Stream the corpus from context `done` on; returns the number of contexts seen in total."""
    from tqdm.auto import tqdm

    tc, tokens = rm.transcoders, TokenDecoder(rm.tokenizer)
    total = _count_contexts(rm, corpus, o) if o.progress else None
    bar = tqdm(total=total, initial=done, unit="ctx", desc="dashboards", disable=not o.progress, dynamic_ncols=True)
    has_bos = rm.tokenizer.bos_token_id is not None
    pad = rm.tokenizer.pad_token_id if rm.tokenizer.pad_token_id is not None else 0
    current: dict[str, Any] = {}

    def on_input(layer: int, x: torch.Tensor) -> None:
        acts = tc.encode(x.to(tc.dtype), layer)  # [B, P, F]
        stats[layer].update(acts, current["mask"], current["first"], current.get("concepts"))
        if layer == tc.n_layers - 1:
            raise _StopForward

    docs = read_documents(corpus, text_field=o.text_field)
    n_batches = 0
    with _layer_inputs(rm, on_input), torch.inference_mode():
        for batch in context_batches(
            rm.tokenizer,
            docs,
            ctx_len=o.ctx_len,
            batch_size=o.batch_size,
            skip=done,
            max_contexts=o.max_contexts,
            pad_id=pad,
        ):
            mask = batch.mask.clone()
            if has_bos:
                mask[:, 0] = False
            current.update(mask=mask.to(rm.device), first=batch.first)
            if cmap is not None and cmap.concepts:
                current["concepts"] = _concept_ids(cmap, tokens, batch.ids).to(rm.device)
            try:
                rm.model(input_ids=batch.ids.to(rm.device), use_cache=False)
            except _StopForward:
                pass
            done = batch.first + len(batch.ids)
            bar.update(len(batch.ids))
            n_batches += 1
            if n_batches % o.checkpoint_every == 0:
                _save_partial(partial, stats, {**meta, "done": done})
    bar.close()
    return done


def _options(options: DashboardOptions | None, overrides: dict[str, Any]) -> DashboardOptions:
    o = options or DashboardOptions()
    if overrides:
        unknown = set(overrides) - set(asdict(o))
        if unknown:
            raise DashboardError(f"unknown dashboard option(s): {', '.join(sorted(unknown))}")
        o = DashboardOptions(**{**asdict(o), **overrides})
    o.check()
    return o


def _run_meta(corpus, o: DashboardOptions, fingerprint: str, n_concepts: int) -> dict:
    """What a partial run must share with this one to be resumed."""
    return {
        "corpus": corpus_fingerprint(corpus),
        "transcoder_fingerprint": fingerprint,
        "ctx_len": o.ctx_len,
        "batch_size": o.batch_size,
        "max_contexts": o.max_contexts,
        "top_k": o.top_k,
        "n_samples": o.n_samples,
        "seed": o.seed,
        "n_concepts": n_concepts,
        "text_field": o.text_field,
    }


@dataclass
class _Written:
    entries: dict[int, dict] = field(default_factory=dict)  # layer -> index entry of its chunk file
    label_rows: dict[tuple[int, int], dict] = field(default_factory=dict)  # what labels.json holds
    labels: dict[tuple[int, int], Any] = field(default_factory=dict)  # (layer, index) -> FeatureLabel
    n_dead: int = 0


def _write_layers(
    model,
    out_dir: Path,
    stats: list[LayerStats],
    token_ids,
    o: DashboardOptions,
    concepts,
    label_options,
    tid: str,
    fp: str,
) -> _Written:
    """Render and write every layer's dashboards (one layer in memory at a time)."""
    w = _Written()
    for layer in range(model.transcoders.n_layers):
        feats, layer_labels = render_layer(
            model, layer, stats[layer], token_ids, o, concepts, label_options, transcoder_id=tid, fingerprint=fp
        )
        w.n_dead += sum(1 for d in feats if d["activation_frequency"] == 0)
        w.entries[layer] = write_layer_chunks(out_dir, layer, feats)
        if o.neuronpedia_json:
            from ..viz.feature_details import write_feature_details

            write_feature_details(out_dir / "json", feats)
        for f, lab in enumerate(layer_labels):
            w.labels[(layer, f)] = lab
            w.label_rows[(layer, f)] = {
                "label": lab.label,
                "score": lab.score,
                "kind": lab.kind,
                "concept": lab.concept,
            }
        del feats
    return w


def feature_dashboards(
    model,
    corpus: str | os.PathLike | Sequence[str],
    out: str | os.PathLike | None = None,
    *,
    options: DashboardOptions | None = None,
    concepts: ConceptMap | None = None,
    label_options: LabelOptions | None = None,
    **overrides: Any,
) -> DashboardResult:
    """Dashboards of every feature of `model.transcoders` (a `ReplacementModel`) over `corpus` (a text
    file with one document per line, a JSONL file, a list of strings, or a hub dataset id when online),
    written to `out` (default: `features/` beside the transcoders, else a per-transcoder cache folder).
    `concepts` maps tokens and contexts to concepts for the labels (default: tokens themselves; the
    organism passes its US states). `overrides` set `DashboardOptions` fields by name."""
    o = _options(options, overrides)
    t0 = time.perf_counter()
    tc = model.transcoders
    out_dir = Path(out) if out is not None else default_dashboard_dir(tc)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / PARTIAL
    s_opts = StatsOptions(top_k=o.top_k, n_samples=o.n_samples, seed=o.seed)
    n_concepts = len(concepts.concepts) if concepts is not None and concepts.concepts else 0
    stats = [
        LayerStats(tc.d_features, o.ctx_len, s_opts, n_concepts=n_concepts, device=model.device)
        for _ in range(tc.n_layers)
    ]
    tid, fp = transcoder_id(tc), transcoder_fingerprint(tc)
    meta = _run_meta(corpus, o, fp, n_concepts)
    if not o.resume:
        shutil.rmtree(partial, ignore_errors=True)
    resumed = _load_partial(partial, stats, meta)
    t_stream = time.perf_counter()
    n_ctx = _run(model, corpus, o, stats, concepts, resumed, partial, meta)
    t_stream = time.perf_counter() - t_stream
    state_bytes = sum(t.numel() * t.element_size() for s in stats for t in s.state_dict().values())
    if n_ctx == 0:
        raise DashboardError("the corpus has no text: no context to run")
    token_ids = _context_tokens(model, corpus, o, stats)
    w = _write_layers(model, out_dir, stats, token_ids, o, concepts, label_options, tid, fp)
    n_tokens = int(sum(int(s.n_tokens) for s in stats) // max(1, tc.n_layers))
    extra = {"transcoder_fingerprint": fp, "n_contexts": n_ctx, "n_tokens": n_tokens, "ctx_len": o.ctx_len}
    write_index(out_dir, tid, w.entries, extra | {"generator": "circuit_trace.dashboards"})
    write_labels(out_dir, tid, w.label_rows)
    shutil.rmtree(partial, ignore_errors=True)
    n_features = tc.n_layers * tc.d_features
    seconds = time.perf_counter() - t0
    return DashboardResult(
        out_dir, tid, n_ctx, n_tokens, n_features, w.n_dead, seconds, resumed, t_stream, state_bytes, w.labels
    )


def _context_tokens(rm, corpus, o: DashboardOptions, stats: list[LayerStats]) -> dict[int, list[int]]:
    """Token ids of every context some feature kept (one more tokenizing pass over the corpus)."""
    wanted = set()
    for s in stats:
        wanted.update(s.top_ctx[s.top_ctx >= 0].tolist())
        wanted.update(s.smp_ctx[s.smp_ctx >= 0].tolist())
    out: dict[int, list[int]] = {}
    if not wanted:
        return out
    last = max(wanted)
    for batch in context_batches(
        rm.tokenizer,
        read_documents(corpus, text_field=o.text_field),
        ctx_len=o.ctx_len,
        batch_size=256,
        max_contexts=last + 1,
    ):
        for i, (row, m) in enumerate(zip(batch.ids.tolist(), batch.mask.tolist())):
            if batch.first + i in wanted:
                out[batch.first + i] = [t for t, keep in zip(row, m) if keep]
    return out
