"""`circuit-trace SUBCOMMAND`, thin over the Python API: one `add_<name>_command` and `cmd_<name>` per
subcommand, registered in `COMMANDS` (see `circuit-trace --help`).

Exit codes: 0 success; 2 bad usage or bad input (prompt, target, thresholds, paths);
3 the model or transcoders could not be loaded or do not fit each other; 1 anything unexpected."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import re
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cli_commands.argtypes import port, positive_int, unit_interval
from .graphs.defaults import DESIRED_LOGIT_PROB, EDGE_THRESHOLD, MAX_N_LOGITS, NODE_THRESHOLD

EXIT_OK, EXIT_UNEXPECTED, EXIT_INPUT, EXIT_LOAD = 0, 1, 2, 3


class CLIError(Exception):
    def __init__(self, message: str, code: int = EXIT_INPUT):
        super().__init__(message)
        self.code = code


def _slug(prompt: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60] or "graph"


def _output_path(arg: str | None, default: Path) -> Path:
    """`-o` checked like any output path, or None for `default`: our own location, whose directory
    the atomic writes create, so a run that fails leaves nothing behind."""
    return default if arg is None else _checked_path(arg, ".json", "-o")


def _device(name: str | None) -> str | None:
    """`name` checked against this machine: a device torch cannot parse, or CUDA on a torch build or
    machine without it, is bad input (exit 2) rather than a traceback deep in the model load."""
    if name is None:
        return None
    from .api import check_device

    try:
        check_device(name)
    except ValueError as exc:
        raise CLIError(f"--device {name}: {exc}") from exc
    return name


def _load_model(args):
    from .api import load

    device = _device(args.device)
    try:
        return load(args.model, args.transcoders, device=device, dtype=args.dtype)
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        raise CLIError(f"could not load the model/transcoders: {exc}", EXIT_LOAD) from exc


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="hub id or local directory (default: the embedded states organism)")
    p.add_argument(
        "--transcoders",
        default=None,
        help="hub id, directory in the circuit-tracer layout, or a published set's short name "
        "(`circuit-trace transcoders list`; default: the organism's CLT)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="default: float32")


def _print_trace(graph, pruned, seconds: float, out: Path | None, chosen: bool = False) -> None:
    """The trace summary; `chosen`: the targets were given (`--target`, `--logit-diff`), not the top logits.
    A custom target (e.g. a logit difference) has a value, not a probability."""
    logits = graph.logit_nodes()
    print("targets:" if chosen else "top logits:")
    for _, row in logits.iterrows():
        if row["token_id"] < 0:
            print(f"  {row['token']!r:>16}  value={row['activation']:.4f}")
        else:
            print(f"  {row['token']!r:>16}  p={row['logit_prob']:.4f}")
    scores = graph.scores()
    print(f"nodes: {graph.n_nodes} -> {pruned.graph.n_nodes} after pruning")
    print(f"edges: {graph.n_edges} -> {pruned.graph.n_edges} after pruning")
    print(f"replacement score: {scores.replacement:.4f}   completeness score: {scores.completeness:.4f}")
    print(f"time: {seconds:.2f} s")
    if out is not None:
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


def cmd_trace(args) -> int:
    from .api import attribute
    from .graphs import prune

    out = _output_path(args.output, Path("graphs") / f"{_slug(args.prompt)}.json")
    save = _checked_path(args.save_graph, ".safetensors", "--save") if args.save_graph else None
    for kind in ("node", "edge"):
        export, view = getattr(args, f"export_{kind}_threshold"), getattr(args, f"{kind}_threshold")
        if export is not None and export < view:
            raise CLIError(f"--export-{kind}-threshold {export} is below --{kind}-threshold {view}")
    rm = _load_model(args)
    t0 = time.perf_counter()
    graph = attribute(
        rm,
        args.prompt,
        targets=_trace_targets(rm, args),
        max_feature_nodes=args.max_feature_nodes,
        batch_size=args.batch_size,
        max_n_logits=args.max_n_logits,
        desired_logit_prob=args.desired_logit_prob,
        progress=not args.quiet,
    )
    pruned = prune(graph, node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    graph.to_json(
        out,
        slug=out.stem,
        node_threshold=args.node_threshold,
        edge_threshold=args.edge_threshold,
        pruned=pruned,
        export_node_threshold=args.export_node_threshold,
        export_edge_threshold=args.export_edge_threshold,
    )
    _print_trace(graph, pruned, time.perf_counter() - t0, out, chosen=bool(args.target or args.logit_diff))
    if save is not None:
        graph.save(save)
        print(f"wrote {save} (the full graph: `ct.Graph.load`, `circuit-trace validate --graph`)")
    if args.html:
        from .viz import to_html

        print(f"wrote {to_html(graph, out.with_suffix('.html'))} (standalone interactive view)")
    _print_details(rm, pruned.graph, out)
    return EXIT_OK


def _checked_path(arg: str, suffix: str, flag: str) -> Path:
    """An output path whose directory exists and whose name ends in `suffix` (else bad input)."""
    path = Path(arg)
    if not path.parent.is_dir():
        raise CLIError(f"{flag}: directory {str(path.parent)!r} does not exist (create it first)")
    if path.suffix != suffix:
        raise CLIError(f"{flag} path {arg!r} must end in {suffix}")
    return path


def _trace_targets(rm, args) -> list | None:
    """`--target TOKEN`s (each one token) and `--logit-diff A B`; None: the top logits."""
    from .attribution.targets import logit_difference

    targets: list = list(args.target or [])
    if args.logit_diff:
        targets.append(logit_difference(rm, *args.logit_diff))
    return targets or None


def _print_details(rm, graph, out: Path) -> None:
    """Write the graph's feature details when its transcoders ship dashboards, and say so."""
    from .viz.feature_details import write_graph_details

    n, folder = write_graph_details(rm.transcoders, graph, out)
    print(
        f"wrote {n} feature-detail files to {folder}"
        if folder is not None
        else "no feature dashboards for these transcoders (make them with `circuit-trace features`)"
    )


def cmd_intervene(args) -> int:
    """Edits from the options (checked before the model loads), then the next-token table, or the
    edited and unedited continuations with --generate; --html writes the result's figure."""
    from .cli_commands.intervene import (
        generation_kwargs,
        prepared_edits,
        reported_supernodes,
        strongest_supernode,
        swap_edits,
    )
    from .interventions import EditError, generate, intervene

    html_out = _checked_path(args.html, ".html", "--html") if args.html else None
    try:
        if args.strongest is None:  # else the edits name a supernode found in the model, below
            prepared_edits(args)
        gen = generation_kwargs(args)
        if gen is not None and (args.mode != "free" or html_out is not None):
            raise EditError("--generate runs the real model (free mode) and has no figure: drop --mode/--html")
    except EditError as exc:
        raise CLIError(str(exc)) from exc
    rm = _load_model(args)
    try:
        edits, groups = prepared_edits(args, strongest_supernode(rm, args))
        edits += swap_edits(rm, args, groups)
        if gen is not None:
            with warnings.catch_warnings():  # a context-limit stop is said in the printed result
                warnings.simplefilter("ignore")
                print(generate(rm, args.prompt, edits, **gen))
            return EXIT_OK
        result = intervene(rm, args.prompt, edits, mode=args.mode, top_k=args.top_k)
    except (EditError, ValueError) as exc:  # ValueError: a sampling setting generate refuses
        raise CLIError(str(exc)) from exc
    print(result)
    _print_supernodes(result, reported_supernodes(rm, args, groups), html_out)
    return EXIT_OK


def _print_supernodes(result, groups: dict[str, tuple[str, ...]], html_out: Path | None) -> None:
    """Each named supernode's activation after the edits as a fraction of before (those whose ids
    all carry a position), and the figure of both when asked."""
    from .cli_commands.intervene import positioned_supernodes

    sns = positioned_supernodes(groups)
    fractions = result.supernode_fractions(sns) if sns else None
    if fractions is not None and len(fractions):
        print("supernode activation after the edits (sum over its features, % of before):")
        for _, r in fractions.iterrows():
            frac = f"{r['fraction']:.0%}" if r["before"] else "was 0"
            print(f"  {r['label']!r:>16}  {r['before']:.4g} => {r['after']:.4g}  ({frac})")
    if html_out is not None:
        from .atomic import atomic_write_text

        fig = result.figure(supernodes=sns or None)
        atomic_write_text(html_out, fig.to_html(include_plotlyjs=True, full_html=True))
        print(f"wrote {html_out} (top tokens before/after and the supernodes' activation fractions)")


def _validation_graph(rm, args):
    """The graph to validate: read from `--graph` (`trace --save` .safetensors or a graph JSON), or
    traced from PROMPT; exactly one of the two."""
    from .api import attribute
    from .graphs import Graph

    if (args.prompt is None) == (args.graph is None):
        raise CLIError("give a PROMPT to trace or --graph FILE (from `trace --save`), not both and not neither")
    if args.prompt is not None:
        return attribute(rm, args.prompt, max_feature_nodes=args.max_feature_nodes, progress=not args.quiet)
    path = Path(args.graph)
    try:
        return Graph.from_json(path) if path.suffix == ".json" else Graph.load(path)
    except (OSError, ValueError) as exc:
        raise CLIError(f"--graph {args.graph}: {exc}") from exc


def _print_validation(report) -> None:
    """The Spearman table, the goal and how often one ablation changed the top token."""
    s = report.summary
    print(f"validation of {report.prompt!r}: {report.settings['n_sources_ablated']} source features ablated")
    if report.frozen:
        print(f"held at the clean prompt's values in the real model: {', '.join(report.frozen)} (a diagnosis)")
    print(f"  {'pairs':<18}{'n':>5}  {'Spearman direct':>15}  {'Spearman total':>14}")
    for _, r in s.iterrows():
        print(f"  {r['pairs']:<18}{r['n']:>5}  {r['spearman_direct']:>15.3f}  {r['spearman_total']:>14.3f}")
    rho, passed = s.iloc[0]["spearman_total"], report.passed
    verdict = "cannot be compared with" if passed is None else ("meets" if passed else "is below")
    why = " (it is about the real model, nothing frozen)" if report.frozen else ""
    print(f"feature->feature Spearman (total) {rho:.3f} {verdict} the goal {report.goal} from the literature{why}")
    if passed is False:
        print("why: `--diagnose` validates again with each nonlinearity of the real model frozen in turn")
    n = report.settings["n_sources_ablated"]
    print(f"the top token changed in {report.top_token_changed:.0%} of the {n} single-feature ablations")


def cmd_validate(args) -> int:
    from .interventions import FREEZE_PARTS, EditError, freeze_parts, validate

    try:
        freeze = freeze_parts(args.freeze)
    except ValueError as exc:
        raise CLIError(f"--freeze: {exc}") from exc
    if args.diagnose and (freeze or args.json or args.html):
        raise CLIError("--diagnose runs its own freezes and prints a table: not with --freeze, --json or --html")
    json_out = _checked_path(args.json, ".json", "--json") if args.json else None
    html_out = _checked_path(args.html, ".html", "--html") if args.html else None
    rm = _load_model(args)
    graph = _validation_graph(rm, args)
    if args.diagnose:
        return _diagnose(rm, graph, args)
    try:
        report = validate(rm, graph, n_pairs=args.n_pairs, seed=args.seed, max_sources=args.max_sources, freeze=freeze)
    except (EditError, ValueError) as exc:  # a graph of another model/transcoder, or without features
        raise CLIError(str(exc)) from exc
    _print_validation(report)
    _print_graph_notes(graph, everything_frozen=set(report.frozen) == set(FREEZE_PARTS))
    if json_out is not None:
        report.save(json_out)
        print(f"wrote {json_out} (`ValidationReport.load`)")
    if html_out is not None:
        from .atomic import atomic_write_text

        atomic_write_text(html_out, report.figure().to_html(include_plotlyjs=True, full_html=True))
        print(f"wrote {html_out} (predicted vs measured, one point per pair)")
    return EXIT_OK


def _diagnose(rm, graph, args) -> int:
    """`validate --diagnose`: the part-by-part table and which part the graph misses most."""
    from .interventions import EditError, diagnose_validation

    try:
        diagnosis = diagnose_validation(
            rm, graph, n_pairs=args.n_pairs, seed=args.seed, max_sources=args.max_sources, progress=not args.quiet
        )
    except (EditError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    print(diagnosis)
    _print_graph_notes(graph, everything_frozen=True)  # its last step
    return EXIT_OK


def _print_graph_notes(graph, everything_frozen: bool) -> None:
    """What about the graph itself shapes the figures: with everything frozen the real model is
    linear, and the graph misses only the paths through active features its feature-node cap left
    out; a pruned graph compares only its kept, strongest edges."""
    stats = graph.settings.get("stats")
    left_out = int(stats.get("n_features_left_out", 0)) if isinstance(stats, dict) else 0
    if left_out and everything_frozen:
        print(
            f"note: the graph leaves out {left_out} active features (the feature-node cap); with everything "
            "frozen, the paths through them are what its predictions miss"
        )
    if graph.is_pruned:  # pairs only over the kept, strongest edges: agreement comes out higher
        print(
            "note: a pruned graph (e.g. a JSON export): only its kept edges are compared, which raises the "
            "correlation; validate the full graph (`trace --save`) to compare with the goal"
        )


# `circuit-trace train` options: one per `TrainConfig` field, with the field's type and default, so a
# field added to `TrainConfig` is reachable from the command line with no edit here. The tables below
# only rename an option, give it a help text or choices, or list it among the common options.
TRAIN_OPTION_NAMES = {"n_features": "features", "n_tokens": "tokens", "out_dir": "out"}
TRAIN_COMMON = (
    "cache",
    "kind",
    "n_features",
    "activation",
    "k",
    "steps",
    "n_tokens",
    "batch_size",
    "lr",
    "lambda_s",
    "context_size",
    "seed",
    "checkpoint_every",
    "out_dir",
    "device",
)
TRAIN_HELP = {
    "kind": "clt: cross-layer transcoder; plt: per-layer transcoders",
    "n_features": "features per layer",
    "activation": "feature nonlinearity",
    "k": "TopK: active features per layer",
    "skip": "learn a linear skip connection W_skip",
    "steps": "optimiser steps (default: --tokens / --batch-size, else 2000)",
    "n_tokens": "train on this many tokens instead of --steps",
    "batch_size": "tokens per step",
    "lr": "Adam learning rate (default 2e-4 / sqrt(features / 16384), at most 1e-2)",
    "lr_warmup_steps": "linear warm-up steps (default 1%% of steps)",
    "lr_decay_frac": "final fraction of steps over which the rate decays linearly to 0",
    "lambda_s": "JumpReLU sparsity coefficient, reached after a linear ramp (default d_model / 256)",
    "lambda_s_ramp": "fraction of steps over which the sparsity coefficient ramps up from 0",
    "lambda_p": "pre-activation loss coefficient",
    "tanh_c": "c in the sparsity penalty tanh(c * ||W_dec|| * a)",
    "init_threshold": "initial JumpReLU threshold (normalised units)",
    "init_density": "encoder bias set so each feature fires on this fraction of tokens at initialisation",
    "bandwidth": "JumpReLU straight-through kernel width",
    "aux_k": "TopK AuxK: dead features revived per step (default d_model / 2)",
    "aux_coef": "TopK AuxK loss coefficient",
    "dead_window": "tokens without firing after which a feature counts as dead (default min(1M, tokens / 5))",
    "normalize": "normalise MLP inputs and outputs to mean norm sqrt(d) per layer (folded into the weights)",
    "norm_tokens": "tokens used to estimate the normalisation",
    "context_size": "tokens per window (capped at the model's context)",
    "pack": "pack documents into windows (default: only when one does not fit)",
    "input_hook": "hook the transcoders read (the MLP input, after its norm)",
    "output_hook": "hook the transcoders reconstruct (the MLP output)",
    "outlier_ratio": "drop tokens whose MLP input norm exceeds this multiple of the median ('off': keep them)",
    "buffer_tokens": "tokens read and shuffled together (default 16 batches)",
    "forward_batch_size": "windows per model forward (default about 2048 tokens)",
    "eval_tokens": "held-out tokens for the final metrics (at most 10%% of the windows)",
    "seed": "seed for initialisation and shuffling",
    "checkpoint_every": "steps between checkpoints in OUT/checkpoints",
    "keep_checkpoints": "checkpoints kept",
    "log_every": "steps between progress-bar updates",
    "out_dir": "output directory: checkpoints/, transcoder/ (circuit-tracer layout), report.json",
    "device": "e.g. cpu, cuda (default: cuda when available)",
    "dtype": "transcoder parameter dtype",
    "autocast": "bf16 autocast on CUDA",
    "name": "transcoder set name written to its config",
}


def _field_comments(cls) -> dict[str, str]:
    """{field: its trailing `# comment`} in the source of dataclass `cls` and its bases (a missing
    source gives no comments)."""
    import inspect
    import io
    import tokenize

    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):  # bases first: a subclass's comment wins
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        lines = source.splitlines()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            m = re.match(r"\s+(\w+)\s*:", lines[tok.start[0] - 1]) if tok.type == tokenize.COMMENT else None
            if m:
                comments[m.group(1)] = tok.string.lstrip("#").strip()
    return comments


def _train_help(f: dataclasses.Field, comments: dict[str, str], default) -> str:
    """A field's help: its metadata["help"], else TRAIN_HELP, else its source comment."""
    text = f.metadata.get("help") or TRAIN_HELP.get(f.name)
    if text is None:
        text = comments.get(f.name, f"TrainConfig.{f.name}").replace("%", "%%")
    if default not in (None, "") and "default" not in text:
        text += f" (default {default})"
    return text


def _or_none(kind: type) -> Callable[[str], Any]:
    """argparse type of an optional number: `kind`, or None for 'off' / 'none' (so a field whose
    default is on, e.g. --outlier-ratio, can be switched off)."""

    def parse(text: str):
        return None if text.lower() in ("off", "none") else kind(text)

    parse.__name__ = kind.__name__  # argparse names it in "invalid float value: 'x'"
    return parse


def _option_type(hint) -> dict:
    """argparse keywords for a field of type `hint`: bool -> --x/--no-x, Literal -> choices,
    list/tuple[T] -> one or more T, int/float/str (or Optional of one) -> that type, else str."""
    import types
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        kw = _option_type(args[0])
        return {**kw, "type": _or_none(kw["type"])} if kw.get("type") in (int, float) else kw
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is typing.Literal:
        return {"type": type(args[0]), "choices": args}
    if origin in (list, tuple) and args:
        return {"type": args[0] if args[0] in (int, float, str) else str, "nargs": "+"}
    return {"type": hint if hint in (int, float, str) else str}


def _train_option(group, f: dataclasses.Field, hint, default, comments: dict[str, str] | None = None) -> None:
    """Add the option of `TrainConfig` field `f` (type `hint`) to `group`."""
    from .transcoders.training.trainer import KINDS, TRAINABLE_ACTIVATIONS

    flag = "--" + TRAIN_OPTION_NAMES.get(f.name, f.name).replace("_", "-")
    kw: dict = {"dest": f.name, "default": default, "help": _train_help(f, comments or {}, default)}
    kw.update(_option_type(hint))
    choices = f.metadata.get("choices") or {"kind": KINDS, "activation": TRAINABLE_ACTIVATIONS}.get(f.name)
    if choices is not None and "action" not in kw:
        kw["choices"] = tuple(choices)
    group.add_argument(flag, **kw)


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `circuit-trace train` options: the run's (model, corpus, resume) and every `TrainConfig` field."""
    import typing

    from .transcoders.training import TrainConfig

    parser.add_argument(
        "--model",
        default=None,
        help="HF hub id, local model directory, or a .gguf file / directory holding one "
        "(converted once to a cached safetensors copy under $CIRCUIT_TRACE_CACHE, default ~/.cache/circuit_trace). "
        "Optional with --cache: then only for the replacement KL / top-1, and it must be the cache's model",
    )
    parser.add_argument(
        "--corpus", default=None, help="text file, .jsonl file or directory of them (not needed with --cache)"
    )
    parser.add_argument(
        "--bos",
        default=None,
        help="token each training window starts with: a token string (e.g. '<|endoftext|>'), or 'none' "
        "(default: the tokenizer's own BOS)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    hints, defaults = typing.get_type_hints(TrainConfig), TrainConfig()
    fields = {f.name: f for f in dataclasses.fields(TrainConfig) if f.init}
    comments = _field_comments(TrainConfig)
    advanced = parser.add_argument_group("advanced options (TrainConfig fields)")
    for name in [*(n for n in TRAIN_COMMON if n in fields), *sorted(set(fields) - set(TRAIN_COMMON))]:
        group = parser if name in TRAIN_COMMON else advanced
        _train_option(group, fields[name], hints[name], getattr(defaults, name), comments)
    return parser


def config_from_args(args: argparse.Namespace):
    """The checked `TrainConfig` of parsed `circuit-trace train` arguments (ValueError if invalid)."""
    from .transcoders.training import TrainConfig

    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.init})
    config.validate()
    return config


def _load_train_model(model: str, device: str | None, bos: str | None):
    """(model, tokenizer) for `train`: a load failure is exit 3, a BOS not in the vocabulary exit 2."""
    from .models import load_model, set_bos

    try:
        loaded = load_model(model, device=device)
    except (OSError, ValueError) as exc:  # load_model's OSError already names the model
        raise CLIError(str(exc) if isinstance(exc, OSError) else f"could not load the model: {exc}", EXIT_LOAD) from exc
    try:
        set_bos(loaded.tokenizer, bos)
    except ValueError as exc:
        raise CLIError(f"--bos: {exc}") from exc
    return loaded.model, loaded.tokenizer


def _train_cache_model(args: argparse.Namespace, config):
    """(model, tokenizer), both None without --model, for `train --cache DIR`: the cache is opened
    and checked first (missing, incomplete or corrupt: exit 2, before any model loads), then --model
    loaded (exit 3); `train` itself refuses a model the cache was not harvested from (exit 2)."""
    from .transcoders.training import ActivationCache, CacheError

    try:
        info = ActivationCache(config.cache).info
    except CacheError as exc:
        raise CLIError(str(exc)) from exc
    for option in ("corpus", "bos"):
        if getattr(args, option, None) is not None:
            print(f"note: --{option} is not used with --cache (the windows were tokenised at harvest)", file=sys.stderr)
    print(f"training from the cache {config.cache}: {info.describe()}")
    if args.model is None:
        return None, None
    return _load_train_model(args.model, _device(config.device), None)


def _remove_if_new_and_empty(directory: Path, existed: bool) -> None:
    """A failed run must not leave behind an empty output directory it created itself."""
    if not existed and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()


def train_from_args(args: argparse.Namespace | list[str] | None = None):
    """Parse (or take parsed) `circuit-trace train` arguments, load the model and train; the
    `TrainingReport`. Errors are raised as `CLIError` with their exit code."""
    from .models import UnsupportedArchitectureError
    from .transcoders.training import CorpusError, OutputDirError, train

    if not isinstance(args, argparse.Namespace):
        args = add_train_arguments(argparse.ArgumentParser(prog="circuit-trace train")).parse_args(args)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        raise CLIError(f"bad training option: {exc}") from exc
    if config.cache:
        model, tokenizer = _train_cache_model(args, config)
    elif args.model is None or args.corpus is None:
        raise CLIError("train needs --model and --corpus, or --cache DIR holding a harvest (`circuit-trace harvest`)")
    else:
        model, tokenizer = _load_train_model(args.model, _device(config.device), getattr(args, "bos", None))
    out = Path(config.out_dir)
    existed = out.exists()
    try:
        report = train(model, tokenizer, args.corpus, config, resume=args.resume, progress=not args.no_progress)
    except UnsupportedArchitectureError as exc:
        raise CLIError(str(exc), EXIT_LOAD) from exc
    except (CorpusError, OutputDirError, FileExistsError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    finally:
        _remove_if_new_and_empty(out, existed)
    print(report.summary())
    return report


def cmd_train(args) -> int:
    train_from_args(args)
    return EXIT_OK


def cmd_serve(args) -> int:
    from .viz.server import serve

    directory = Path(args.directory)
    if not directory.is_dir():
        raise CLIError(f"{str(directory)!r} is not a directory of graph JSON files")
    try:
        serve(str(directory), host=args.host, port=args.port, open_browser=args.open)
    except OSError as exc:  # bind failed: port taken, address not on this machine, no permission
        if exc.errno == errno.EADDRINUSE:
            raise CLIError(
                f"port {args.port} is already in use on {args.host} "
                "(choose another with --port, or --port 0 for a free one)"
            ) from exc
        raise CLIError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    return EXIT_OK


def cmd_demo(args) -> int:
    from .organisms.demo import DEMO_OUTPUT, run_demo

    out = _output_path(None if args.output == DEMO_OUTPUT else args.output, Path(DEMO_OUTPUT))
    result = run_demo(out, device=_device(args.device), progress=not args.quiet)
    _print_trace(result.graph, result.pruned, result.seconds, out)
    print(f"wrote {result.html_path} (interactive view; `circuit-trace serve {out.parent}` for the full viewer)")
    if result.details_dir is not None:
        print(f"wrote {result.n_details} feature-detail files to {result.details_dir}")
    print("\n".join(result.paths))
    return EXIT_OK


def add_trace_command(sub) -> None:
    p = sub.add_parser("trace", help="attribute a prompt, prune the graph and write Neuronpedia JSON")
    p.add_argument("prompt", help="the text to trace (BOS is prepended)")
    _add_model_args(p)
    p.add_argument(
        "-o", "--output", default=None, help="graph JSON path; its directory must exist (default: graphs/<slug>.json)"
    )
    _add_graph_args(p)
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="targets per backward pass (default: as many as fit in memory, at most 256)",
    )
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="TOKEN",
        help="attribute this next token (exactly one token, e.g. ' Austin') instead of the top logits; repeatable",
    )
    p.add_argument(
        "--logit-diff",
        nargs=2,
        default=None,
        metavar=("A", "B"),
        help="attribute the logit difference logit(A) - logit(B) (each one token), with any --target",
    )
    p.add_argument(
        "--export-node-threshold",
        type=unit_interval,
        default=None,
        metavar="T",
        help="widest node threshold the JSON holds, so the viewer can loosen the view up to it (default "
        "max(--node-threshold, 0.9)); equal to --node-threshold gives the smallest file",
    )
    p.add_argument(
        "--export-edge-threshold",
        type=unit_interval,
        default=None,
        metavar="T",
        help="widest edge threshold the JSON holds (default max(--edge-threshold, 0.99)); on real models the "
        "edges between 0.98 and 0.99 can be most of the file",
    )
    p.add_argument("--html", action="store_true", help="also write a standalone interactive view beside the JSON")
    p.add_argument(
        "--save",
        dest="save_graph",  # not `save`: nnsight gives every object (argparse.Namespace too) a .save method
        default=None,
        metavar="FILE",
        help="also save the full graph (.safetensors; `ct.Graph.load`)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_trace)


def _add_graph_args(p) -> None:
    """Pruning thresholds, feature cap and logit-target selection (`trace`, `sweep`); SPEC defaults."""
    p.add_argument(
        "--node-threshold",
        type=unit_interval,
        default=NODE_THRESHOLD,
        help="cumulative node influence kept (default %(default)s)",
    )
    p.add_argument(
        "--edge-threshold",
        type=unit_interval,
        default=EDGE_THRESHOLD,
        help="cumulative edge influence kept (default %(default)s)",
    )
    p.add_argument("--max-feature-nodes", type=positive_int, default=None, help="cap on feature nodes (default 7500)")
    p.add_argument(
        "--max-n-logits", type=positive_int, default=MAX_N_LOGITS, help="most logit targets (default %(default)s)"
    )
    p.add_argument(
        "--desired-logit-prob",
        type=unit_interval,
        default=DESIRED_LOGIT_PROB,
        help="cumulative probability of logit targets (default %(default)s)",
    )


def add_demo_command(sub) -> None:
    from .organisms.demo import DEMO_OUTPUT, DEMO_PROMPT

    p = sub.add_parser("demo", help=f"trace {DEMO_PROMPT!r} on the embedded organism")
    p.add_argument(
        "-o",
        "--output",
        default=DEMO_OUTPUT,
        help=f"graph JSON path (default {DEMO_OUTPUT}, git-ignored; an .html view and a features/ "
        "folder of feature details are written beside it)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)


def add_intervene_command(sub) -> None:
    from .cli_commands.intervene_options import add_intervene_options

    p = sub.add_parser(
        "intervene", help="edit features in the real model: top tokens before/after, or continuations with --generate"
    )
    p.add_argument("prompt", help="the text to run (BOS is prepended)")
    _add_model_args(p)
    add_intervene_options(p)
    p.add_argument("--html", default=None, metavar="FILE", help="also write the result's figure (.html)")
    p.add_argument(
        "--mode",
        choices=["free", "constrained"],
        default="free",
        help="free: everything downstream recomputed (default); constrained: attention, norms and "
        "MLP outputs frozen (the local replacement model)",
    )
    p.add_argument("--top-k", type=positive_int, default=5, help="top tokens shown (default 5)")
    p.set_defaults(func=cmd_intervene)


def add_validate_command(sub) -> None:
    p = sub.add_parser(
        "validate", help="check a graph's predicted ablation effects against ablations in the real model (Spearman)"
    )
    p.add_argument("prompt", nargs="?", default=None, help="the text to trace and validate (or --graph)")
    p.add_argument("--graph", default=None, help="validate this graph instead: `trace --save` .safetensors or a JSON")
    _add_model_args(p)
    p.add_argument("--n-pairs", type=positive_int, default=200, help="feature->feature pairs sampled (default 200)")
    p.add_argument("--max-sources", type=positive_int, default=64, help="source features ablated (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed for the sample of sources and pairs (default 0)")
    p.add_argument("--max-feature-nodes", type=positive_int, default=None, help="cap on feature nodes when tracing")
    p.add_argument(
        "--freeze",
        default=None,
        metavar="PARTS",
        help="diagnosis: hold these parts of the real model at the clean prompt's values while measuring, "
        "'all' or a comma list of norms, attention, errors, choice (choice needs errors)",
    )
    p.add_argument(
        "--diagnose",
        action="store_true",
        help="validate with nothing frozen, then with norms, attention, errors and choice frozen one more at a "
        "time, and say which part of the real model the graph misses most",
    )
    p.add_argument("--json", default=None, metavar="FILE", help="also save the report (.json; `ValidationReport.load`)")
    p.add_argument("--html", default=None, metavar="FILE", help="also write its figure (.html, plotly inlined)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_validate)


# Subcommands whose options come from the training package's config dataclasses (it imports torch):
# when another command runs, `build_parser` registers them by name and help only.
TRAINING_COMMANDS = {
    "train": "train a PLT or CLT on a model's MLPs from a text corpus",
    "harvest": "run a model once over a corpus and cache its MLP activations for training",
}


def add_train_command(sub) -> None:
    p = sub.add_parser("train", help=TRAINING_COMMANDS["train"])
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)


def add_serve_command(sub) -> None:
    p = sub.add_parser("serve", help="serve a directory of graph JSON files to the local viewer")
    p.add_argument("directory", nargs="?", default="graphs", help="directory of graph JSON files (default: graphs)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port, default=8050, help="port (default 8050; 0 picks a free one)")
    p.add_argument("--open", action="store_true", help="open a browser tab")
    p.set_defaults(func=cmd_serve)


def cmd_sweep(args) -> int:
    from .sweeps import SweepInputError, SweepLoadError, SweepOptions, sweep

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {str(out)!r} is a file, not a directory")
    options = SweepOptions(
        max_feature_nodes=args.max_feature_nodes,
        max_n_logits=args.max_n_logits,
        desired_logit_prob=args.desired_logit_prob,
        batch_size=args.batch_size,
        node_threshold=args.node_threshold,
        edge_threshold=args.edge_threshold,
        save_full_graph=args.full_graphs,
        gzip_json=args.gzip_json,
    )
    try:
        result = sweep(
            args.prompts,
            out,
            model=args.model,
            transcoders=args.transcoders,
            device=_device(args.device),
            dtype=args.dtype,
            options=options,
            workers=args.workers,
            address=args.address,
            retry_failed=args.retry_failed,
            progress=not args.quiet,
        )
    except SweepInputError as exc:
        raise CLIError(str(exc)) from exc
    except SweepLoadError as exc:
        raise CLIError(str(exc), EXIT_LOAD) from exc
    n = len(result.summary)
    print(
        f"{n} prompts: {result.n_traced} traced, {result.n_skipped} already done, {result.n_failed} failed "
        f"({result.seconds:.1f} s)"
    )
    for _, row in result.summary[result.summary["error"] != ""].head(10).iterrows():
        print(f"  failed: line {row['index']}: {row['error']}")
    print(f"wrote {result.summary_path} and {result.features_path}")
    return EXIT_OK


def add_sweep_command(sub) -> None:
    p = sub.add_parser(
        "sweep", help="trace every prompt of a file: graphs, Neuronpedia JSON, summary and feature tables"
    )
    p.add_argument("prompts", help='text file, one prompt a line, or .jsonl with {"prompt": ..., "targets": [...]}')
    p.add_argument("--out", required=True, help="output directory (created; rerunning skips finished prompts)")
    _add_model_args(p)
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="run on Ray with N actors (one GPU each where the cluster has GPUs)",
    )
    p.add_argument(
        "--address", default=None, help="join this Ray cluster (e.g. auto or HOST:6379) instead of running locally"
    )
    _add_graph_args(p)
    p.add_argument("--batch-size", type=positive_int, default=None, help="targets per backward pass (default: auto)")
    p.add_argument(
        "--full-graphs",
        action="store_true",
        help="save the unpruned graphs (default: the pruned ones, 35-1000x smaller)",
    )
    p.add_argument("--gzip-json", action="store_true", help="write json/<key>.json.gz (about 4x smaller)")
    p.add_argument("--retry-failed", action="store_true", help="trace again the prompts that failed last time")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def cmd_transcoders(args) -> int:
    """`transcoders list`: the published sets (name, model, kind, width, size on disk / estimated);
    `transcoders show NAME`: one set's catalogue entry."""
    from .transcoders.catalogue import get_transcoder_set, list_transcoder_sets

    if args.action == "show":
        if not args.name:
            raise CLIError("transcoders show needs a set name (see `circuit-trace transcoders list`)")
        try:
            info = get_transcoder_set(args.name)
        except ValueError as exc:  # an unknown name is bad input here
            raise CLIError(str(exc)) from exc
        for key, value in info.__dict__.items():
            print(f"{key:12} {value}")
        print(f"{'hub_ref':12} {info.hub_ref}")
        return EXIT_OK
    sets = list_transcoder_sets()
    if args.model:
        sets = [s for s in sets if s.model.lower() == args.model.lower()]
    rows = [
        (
            s.name,
            s.model,
            s.kind.upper(),
            f"{s.width:,}" if s.width else "?",
            _gib(s.cached_bytes()) if s.cached_bytes() else "not downloaded",
            ("~" + _gib(s.estimated_bytes())) if s.estimated_bytes() else "?",
            "" if s.verified else "unverified",
        )
        for s in sets
    ]
    head = ("name", "model", "kind", "width", "on disk", "download", "")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    print(
        f"{len(rows)} sets; use one with --transcoders NAME (or ct.load(model, NAME)); "
        "`circuit-trace transcoders show NAME` for details"
    )
    return EXIT_OK


def add_transcoders_command(sub) -> None:
    p = sub.add_parser("transcoders", help="list the published transcoder sets known by short name")
    p.add_argument("action", choices=["list", "show"], nargs="?", default="list")
    p.add_argument("name", nargs="?", default=None, help="the set to show")
    p.add_argument("--model", default=None, help="only the sets for this model id")
    p.set_defaults(func=cmd_transcoders)


def cmd_features(args) -> int:
    from .dashboards import CorpusError, DashboardError, DashboardStoreError, feature_dashboards

    out = Path(args.out) if args.out else None
    if out is not None and not out.parent.is_dir():
        raise CLIError(f"output directory {str(out.parent)!r} does not exist (create it first)")
    rm = _load_model(args)
    concepts = None
    if args.model is None:  # the organism: its world's facts say which state a text is about
        from .organisms.labels import StateConcepts

        concepts = StateConcepts()
    try:
        result = feature_dashboards(
            rm,
            args.corpus,
            out,
            concepts=concepts,  # pyright: ignore[reportArgumentType]  # read-only tuple fits ConceptMap
            ctx_len=args.ctx_len,
            batch_size=args.batch_size,
            max_contexts=args.max_contexts,
            top_k=args.top_k,
            text_field=args.text_field,
            neuronpedia_json=args.json,
            resume=not args.restart,
            progress=not args.quiet,
        )
    except (CorpusError, DashboardError, DashboardStoreError) as exc:
        raise CLIError(str(exc)) from exc
    print(result.summary())
    return EXIT_OK


def add_features_command(sub) -> None:
    p = sub.add_parser("features", help="build feature dashboards (top contexts, density, logit effects, labels)")
    p.add_argument(
        "corpus", help="text file (one document per line), JSONL file (`text` field), or a hub dataset id (online only)"
    )
    _add_model_args(p)
    p.add_argument(
        "-o",
        "--out",
        default=None,
        help="output folder (default: features/ beside the transcoders, else a per-transcoder cache)",
    )
    p.add_argument("--ctx-len", type=positive_int, default=64, help="tokens per context, BOS included (default 64)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="contexts per forward pass (default 32)")
    p.add_argument("--max-contexts", type=positive_int, default=None, help="stop after this many contexts")
    p.add_argument("--top-k", type=positive_int, default=12, help="top-activating contexts per feature (default 12)")
    p.add_argument("--text-field", default="text", help="JSONL / dataset field holding the text (default text)")
    p.add_argument(
        "--json",
        action="store_true",
        help="also write one Neuronpedia feature-detail <index>.json per feature under OUT/json/",
    )
    p.add_argument("--restart", action="store_true", help="discard a partial run instead of resuming it")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_features)


def add_harvest_command(sub) -> None:
    """`circuit-trace harvest`: one option per `HarvestConfig` field, like `train`'s."""
    import typing

    from .transcoders.training import HarvestConfig

    p = sub.add_parser("harvest", help=TRAINING_COMMANDS["harvest"])
    p.add_argument("--model", required=True, help="HF hub id, local model directory, or a .gguf file / directory")
    p.add_argument("--corpus", required=True, help="text file, .jsonl file or directory of them")
    p.add_argument("--bos", default=None, help="token each window starts with, or 'none' (default: the tokenizer's)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    hints, defaults = typing.get_type_hints(HarvestConfig), HarvestConfig()
    for f in dataclasses.fields(HarvestConfig):
        _train_option(p, f, hints[f.name], getattr(defaults, f.name))
    p.set_defaults(func=cmd_harvest)


def cmd_harvest(args) -> int:
    from .models import UnsupportedArchitectureError
    from .transcoders.training import CacheError, CorpusError, HarvestConfig, harvest

    config = HarvestConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(HarvestConfig)})
    try:
        config.validate()
    except ValueError as exc:
        raise CLIError(f"bad harvest option: {exc}") from exc
    model, tokenizer = _load_train_model(args.model, _device(args.device), args.bos)
    start = time.perf_counter()
    try:
        info = harvest(model, tokenizer, args.corpus, config, progress=not args.no_progress)
    except UnsupportedArchitectureError as exc:
        raise CLIError(str(exc), EXIT_LOAD) from exc
    except (CorpusError, CacheError, OSError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    seconds = time.perf_counter() - start
    print(
        f"cache {config.out_dir}: {info.n_tokens} tokens, layers {len(info.layers)}, {info.dtype}, "
        f"{len(info.shards)} shard(s), {seconds:.0f}s; train from it with `circuit-trace train --cache {config.out_dir}`"
    )
    return EXIT_OK


def add_merge_transcoders_command(sub) -> None:
    p = sub.add_parser(
        "merge-transcoders", help="merge training runs on layer subsets (--layers) into one transcoder set"
    )
    p.add_argument(
        "runs", nargs="+", help="training output directories (or their transcoder/ directories); whole sets too"
    )
    p.add_argument("--out", required=True, help="directory for the merged set (circuit-tracer layout)")
    p.add_argument(
        "--replace",
        action="store_true",
        help="a layer held by several runs comes from the last of them (splice retrained layers into a set)",
    )
    p.add_argument(
        "--pad",
        action="store_true",
        help="runs may differ in width: the set takes the widest, narrower layers get features that never fire",
    )
    p.add_argument(
        "--eval-cache",
        default=None,
        help="score the merged set on this activation cache's held-out windows, as `train --cache` scores a run "
        "(FVU and L0 per layer; with --model, replacement KL and top-1); written to OUT/eval.json",
    )
    p.add_argument("--model", default=None, help="with --eval-cache: the model the cache was harvested from")
    p.add_argument(
        "--eval-tokens",
        type=positive_int,
        default=None,
        help="held-out tokens (default: train's --eval-tokens default)",
    )
    p.set_defaults(func=cmd_merge_transcoders)


def cmd_merge_transcoders(args) -> int:
    from .transcoders import TranscoderError
    from .transcoders.training import ActivationCache, CacheError, MergeError, merge_transcoders

    if (args.model or args.eval_tokens) and not args.eval_cache:
        raise CLIError("--model and --eval-tokens are only used with --eval-cache")
    try:
        if args.eval_cache:
            ActivationCache(args.eval_cache)  # missing or corrupt: fail before merging
        tc = merge_transcoders(args.runs, args.out, replace=args.replace, pad=args.pad)
    except (MergeError, TranscoderError, CacheError, FileExistsError) as exc:
        raise CLIError(str(exc)) from exc
    kind = "CLT" if tc.is_cross_layer else "PLT"
    print(f"merged {len(args.runs)} run(s) into {args.out}: {kind}, {tc.n_layers} layers, {tc.d_features} features")
    if args.eval_cache:
        _score_merged(tc, args)
    return EXIT_OK


def _score_merged(tc, args) -> None:
    """`merge-transcoders --eval-cache`: the held-out scores, printed and written to OUT/eval.json."""
    import json
    import statistics

    from .atomic import atomic_write_text
    from .transcoders.training import CacheError, TrainConfig, evaluate_cached

    model = None if args.model is None else _load_train_model(args.model, None, None)[0]
    n_tokens = args.eval_tokens or TrainConfig().eval_tokens
    try:
        ev = evaluate_cached(model, tc, args.eval_cache, n_tokens, progress=sys.stderr.isatty())
    except CacheError as exc:
        raise CLIError(str(exc)) from exc
    fvu = [float(v) for v in ev["fvu"]]
    worst = max(range(len(fvu)), key=fvu.__getitem__)
    line = f"held-out ({ev['tokens']} tokens of {args.eval_cache}): FVU total {ev['fvu_total']:.3f}, "
    line += f"median layer {statistics.median(fvu):.3f}, worst layer {worst} ({fvu[worst]:.3f}), "
    line += f"{sum(v > 1 for v in fvu)} layer(s) above 1"
    if ev["kl"] is not None:
        line += f"; replacement KL {ev['kl']:.3f} nats, top-1 {100 * ev['top1_agreement']:.1f} %"
    print(line)
    report = {"cache": str(args.eval_cache), "eval_tokens": n_tokens, **ev}
    atomic_write_text(Path(args.out) / "eval.json", json.dumps(report, indent=1, default=float))


# One registration function per subcommand, in the order `--help` lists them. A new subcommand is a
# `cmd_<name>(args) -> int` plus an `add_<name>_command(sub)` appended here.
COMMANDS = [
    add_trace_command,
    add_demo_command,
    add_intervene_command,
    add_validate_command,
    add_train_command,
    add_harvest_command,
    add_merge_transcoders_command,
    add_serve_command,
    add_sweep_command,
    add_transcoders_command,
    add_features_command,
]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser with every subcommand's options; given the `command` about to run (or "" for
    none, e.g. `--help`), the training commands other than it get their name and help only, so that
    `--help`, `serve` and the rest start without importing torch for their option defaults."""
    parser = argparse.ArgumentParser(
        prog="circuit-trace",
        description="Attribution graphs for transformer language models (see README.md).",
        epilog="exit codes: 0 ok, 1 unexpected error, 2 bad input or usage, 3 model/transcoders failed to load",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add_command in COMMANDS:
        name = add_command.__name__.removeprefix("add_").removesuffix("_command")
        if command is not None and name in TRAINING_COMMANDS and name != command:
            sub.add_parser(name, help=TRAINING_COMMANDS[name])
        else:
            add_command(sub)
    return parser


def _exit_code_of(exc: Exception) -> int | None:
    """The documented exit code of a library error (None: not one of ours, a bug to show whole).
    Imported here, not at the top, so that bad arguments are answered before the model stack
    loads; an error of these kinds means its module is loaded already."""
    from .attribution.targets import TargetError
    from .replacement.model import PromptError
    from .transcoders import TranscoderError

    if isinstance(exc, (PromptError, TargetError)):
        return EXIT_INPUT
    if isinstance(exc, TranscoderError):
        return EXIT_LOAD
    return None


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """`warnings.formatwarning` for the shell: `warning: <message>`, without the source path and line
    Python shows by default (a CLI user did not write that code)."""
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(command=next((a for a in argv if not a.startswith("-")), ""))
    args = parser.parse_args(argv)
    shown_as = warnings.formatwarning
    warnings.formatwarning = one_line_warning
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        code = _exit_code_of(exc)
        if code is None:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return code
    finally:
        warnings.formatwarning = shown_as


if __name__ == "__main__":
    sys.exit(main())
