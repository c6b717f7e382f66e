"""`circuit-trace intervene` options -> edits: --scale / --set / --add on feature ids or supernodes
(from --supernode or a Neuronpedia graph JSON / URL), --swap with another prompt's activations,
--ablate-errors; and the --generate options. Every function raises `EditError` (bad input) with a
one-line message; `cli.cmd_intervene` turns it into exit code 2."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..interventions import (
    Edit,
    EditError,
    ErrorAblation,
    Supernode,
    ablate_errors,
    activations_from,
    parse_cli_edits,
    parse_feature_id,
    read_supernodes,
    strongest_inputs,
    swap,
    swap_from,
)
from ..interventions.edits import check_conflicts

__all__ = [
    "generation_kwargs",
    "positioned_supernodes",
    "prepared_edits",
    "reported_supernodes",
    "strongest_supernode",
    "supernodes_of",
    "swap_edits",
]


def _file_supernodes(args) -> dict[str, tuple[str, ...]]:
    """{label: node ids} of every --supernodes-from source, in order (a later label wins)."""
    return {sn.label: sn.node_ids for source in args.supernodes_from for sn in read_supernodes(source)}


def supernodes_of(args, file_groups: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """{name: node ids}: `file_groups` (read with --supernodes-from), then --supernode (which wins)."""
    groups = dict(file_groups)
    for spec in args.supernode:
        name, _, ids = spec.partition("=")
        groups[name.strip()] = tuple(i for i in ids.replace(",", " ").split() if i)
    return groups


def _referenced(args) -> set[str]:
    """Names used as edit targets (a file's other supernodes may hold nodes that are not features)."""
    names = {s.partition("=")[0].strip() for s in [*args.scale, *args.set, *args.add]}
    for s in args.swap:
        down, _, up = s.partition("=")
        names |= {down.strip(), up.strip()}
    return names


def _group_specs(args, file_groups: dict[str, tuple[str, ...]]) -> list[str]:
    """--supernode specs for `parse_cli_edits`: the file supernodes that an edit names (unless a
    --supernode redefines them), then every --supernode as given (checked even when unused)."""
    own = {s.partition("=")[0].strip() for s in args.supernode}
    used = _referenced(args) - own
    return [f"{n}={','.join(ids)}" for n, ids in file_groups.items() if n in used] + list(args.supernode)


def _add_edits(specs: Sequence[str], groups: list[str]) -> list[Edit]:
    """--add ID=V: parsed as a --set of the same target, then made an addition."""
    out: list[Edit] = []
    for spec in specs:
        try:
            edits = parse_cli_edits(None, [spec], groups)
        except EditError as exc:
            raise EditError(str(exc).replace("--set", "--add")) from None
        out += [dataclasses.replace(e, op="add") for e in edits]
    return out


def _error_ablation(spec: str | None) -> list[ErrorAblation]:
    if spec is None:
        return []
    if spec == "all":
        return [ablate_errors()]
    try:
        layers = [int(x) for x in spec.replace(",", " ").split()]
    except ValueError:
        raise EditError(f"--ablate-errors {spec!r}: expected comma-separated layer numbers") from None
    if not layers or min(layers) < 0:
        raise EditError(f"--ablate-errors {spec!r}: expected non-negative layer numbers")
    return [ablate_errors(layers)]


def prepared_edits(args, found: dict[str, tuple[str, ...]] | None = None) -> tuple[list, dict[str, tuple[str, ...]]]:
    """The edits of --scale/--set/--add/--ablate-errors (swaps need the model: `swap_edits`) and
    the named supernodes, checked for conflicts; EditError on bad input. `found`: supernodes found
    in the model (`strongest_supernode`), named like those of --supernodes-from."""
    file_groups = {**_file_supernodes(args), **(found or {})}
    groups, specs = supernodes_of(args, file_groups), _group_specs(args, file_groups)
    edits: list = [*parse_cli_edits(args.scale, args.set, specs), *_add_edits(args.add, specs)]
    edits += _error_ablation(args.ablate_errors)
    if args.swap and not args.swap_from:
        raise EditError("--swap needs --swap-from PROMPT (the prompt whose activations UP takes)")
    if args.swap_from and not args.swap:
        raise EditError("--swap-from is used only with --swap DOWN=UP")
    if args.swap_at_down and not args.swap:
        raise EditError("--swap-at-down is used only with --swap DOWN=UP")
    if not edits and not args.swap:
        raise EditError(
            "no edits given: use --scale/--set/--add ID=V, --swap DOWN=UP or --ablate-errors "
            "(ID = layer_index[_pos] or a --supernode NAME)"
        )
    for spec in args.swap:
        _swap_sides(spec, groups)  # checked here, before the model loads
    check_conflicts(edits)
    return edits, groups


def _swap_sides(spec: str, groups: dict[str, tuple[str, ...]]) -> tuple[Supernode, Supernode]:
    """DOWN and UP of `--swap DOWN=UP`, each a named supernode or one feature id, every id with a
    position (the swap edits DOWN where it is active and reads UP where it is active in --swap-from)."""
    down_name, sep, up_name = (s.strip() for s in spec.partition("="))
    if not sep or not down_name or not up_name:
        raise EditError(f"--swap expects DOWN=UP (supernode names or feature ids), got {spec!r}")
    sides = _supernode(down_name, groups), _supernode(up_name, groups)
    for sn in sides:
        bare = [i for i in sn.node_ids if parse_feature_id(i)[2] is None]
        if bare:
            raise EditError(f"--swap {spec}: {sn.label!r} has ids without a position (use layer_index_pos): {bare}")
    return sides


def _supernode(name: str, groups: dict[str, tuple[str, ...]]) -> Supernode:
    if name in groups:
        return Supernode(name, groups[name])
    parse_feature_id(name)  # a single feature id, else EditError naming it
    return Supernode(name, (name,))


def swap_edits(model, args, groups: dict[str, tuple[str, ...]]) -> list[Edit]:
    """The edits of each --swap DOWN=UP, UP's activations read from --swap-from in `model`: each UP
    feature where it is in --swap-from (the prompts aligned at their ends), or with --swap-at-down
    every UP feature at every position of DOWN."""
    out: list[Edit] = []
    for spec in args.swap:
        down, up = _swap_sides(spec, groups)
        if args.swap_at_down:
            out += swap(down, up, activations_from(model, args.swap_from, up), up_scale=args.swap_scale)
        else:
            out += swap_from(model, args.prompt, down, up, args.swap_from, up_scale=args.swap_scale)
    return out


def reported_supernodes(model, args, groups: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The named supernodes whose activation after the edits is printed: each --swap UP moved to the
    positions the swap set it at in PROMPT (its ids name positions in --swap-from); with
    --swap-at-down, UP (set at DOWN's positions) is left out."""
    if not args.swap:
        return groups
    out = dict(groups)
    shift = model.tokenize(args.prompt).numel() - model.tokenize(args.swap_from).numel()
    for spec in args.swap:
        _, up = _swap_sides(spec, groups)
        if up.label not in groups:  # a single feature id, not a named supernode
            continue
        if args.swap_at_down:
            out.pop(up.label)
        else:
            out[up.label] = tuple(f"{l}_{i}_{p + shift}" for l, i, p in up.features())
    return out


def generation_kwargs(args) -> dict | None:
    """`ct.generate` keyword arguments of --generate and its options (None without --generate)."""
    extra = {"--sample": args.sample, "--temperature": args.temperature, "--top-p": args.top_p}
    extra |= {"--seed": args.seed, "--apply-to": args.apply_to}
    if args.generate is None:
        given = [k for k, v in extra.items() if v not in (None, False)]
        if given:
            raise EditError(f"{', '.join(given)}: only with --generate N")
        return None
    if (args.temperature is not None or args.top_p is not None) and not args.sample:
        raise EditError("--temperature and --top-p apply to sampling: add --sample")
    return {
        "max_new_tokens": args.generate,
        "do_sample": args.sample,
        "temperature": 1.0 if args.temperature is None else args.temperature,
        "top_p": 1.0 if args.top_p is None else args.top_p,
        "seed": args.seed,
        "apply_to": args.apply_to or "prompt",
    }


def strongest_supernode(model, args) -> dict[str, tuple[str, ...]]:
    """{"strongest": ids} of --strongest K, from the prompt's graph (empty without --strongest)."""
    if args.strongest is None:
        return {}
    from ..api import attribute

    graph = attribute(model, args.prompt, progress=False)
    return {"strongest": strongest_inputs(graph, k=args.strongest).node_ids}


def positioned_supernodes(groups: dict[str, tuple[str, ...]]) -> list[Supernode]:
    """The named supernodes whose every id is a feature at a position (layer_index_pos): those an
    activation fraction can be measured for."""

    def positioned(node_id: str) -> bool:
        try:
            return parse_feature_id(node_id)[2] is not None
        except EditError:
            return False

    return [Supernode(n, ids) for n, ids in groups.items() if ids and all(positioned(i) for i in ids)]
