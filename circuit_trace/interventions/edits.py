"""Edit specifications: what to change, not how (SPEC §5).

An `Edit` names one transcoder feature (layer, index), an operation and the positions it applies
at. `ErrorAblation` removes the transcoder's error term at some layers/positions. A `Supernode` is a
labelled group of graph nodes (Neuronpedia `qParams.supernodes` format); `swap` turns one supernode
down and another up. Everything here is plain data plus validation, so `intervene`, `generate` and
the CLI can check a whole edit list before touching the model."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Op = Literal["set", "scale", "add"]
OPS: tuple[str, ...] = ("set", "scale", "add")

__all__ = [
    "Edit",
    "EditLike",
    "ErrorAblation",
    "Supernode",
    "ablate_errors",
    "add_feature",
    "aligned_up_edits",
    "check_conflicts",
    "check_edits",
    "ends_aligned_edits",
    "flatten_edits",
    "parse_cli_edits",
    "parse_feature_id",
    "scale_feature",
    "set_feature",
    "swap",
    "up_replaces_down",
]


class EditError(ValueError):
    """An edit cannot be applied (unknown feature, bad position, non-finite value, ...)."""


@dataclass(frozen=True)
class Edit:
    """Change feature `feature` = (layer, index) at `positions` (None: every position after BOS).

    op "set": the activation becomes `value`; "scale": it becomes `value` × its current activation
    (e.g. -2 flips and doubles, 0 ablates); "add": `value` is added to it."""

    feature: tuple[int, int]
    op: Op = "set"
    value: float = 0.0
    positions: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        # Normalise early so that later validation only has to check ranges.
        if self.op not in OPS:
            raise EditError(f"unknown edit op {self.op!r}; expected one of {OPS}")
        try:
            layer, index = (int(v) for v in self.feature)
        except (TypeError, ValueError):
            raise EditError(f"feature must be a (layer, index) pair of integers, got {self.feature!r}") from None
        object.__setattr__(self, "feature", (layer, index))
        try:
            value = float(self.value)
        except (TypeError, ValueError):
            raise EditError(f"edit value must be a number, got {self.value!r}") from None
        if not math.isfinite(value):
            raise EditError(f"edit of feature {layer}_{index} has a non-finite value {value!r}")
        object.__setattr__(self, "value", value)
        if self.positions is not None:
            if isinstance(self.positions, int):
                pos: tuple[int, ...] = (int(self.positions),)
            else:
                pos = tuple(int(p) for p in self.positions)
            if not pos:
                raise EditError(f"edit of feature {layer}_{index} has an empty position list")
            object.__setattr__(self, "positions", tuple(sorted(set(pos))))

    @property
    def layer(self) -> int:
        return self.feature[0]

    @property
    def index(self) -> int:
        return self.feature[1]

    def new_value(self, old):
        """The activation after the edit, given the activation before it (float or tensor)."""
        if self.op == "set":
            return old * 0 + self.value
        if self.op == "scale":
            return old * self.value
        return old + self.value


@dataclass(frozen=True)
class ErrorAblation:
    """Remove the MLP reconstruction error (y - ŷ) at `layers` × `positions` (None: all)."""

    layers: tuple[int, ...] | None = None
    positions: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("layers", "positions"):
            v = getattr(self, name)
            if v is not None:
                v = (int(v),) if isinstance(v, int) else tuple(sorted({int(x) for x in v}))
                if not v:
                    raise EditError(f"ablate_errors got an empty {name} list")
                object.__setattr__(self, name, v)


EditLike = Edit | ErrorAblation


def set_feature(layer: int, index: int, value: float, positions: Sequence[int] | int | None = None) -> Edit:
    return Edit((layer, index), "set", value, positions)  # pyright: ignore[reportArgumentType]  # __post_init__ makes a tuple


def scale_feature(layer: int, index: int, factor: float, positions: Sequence[int] | int | None = None) -> Edit:
    return Edit((layer, index), "scale", factor, positions)  # pyright: ignore[reportArgumentType]  # __post_init__ makes a tuple


def add_feature(layer: int, index: int, amount: float, positions: Sequence[int] | int | None = None) -> Edit:
    return Edit((layer, index), "add", amount, positions)  # pyright: ignore[reportArgumentType]  # __post_init__ makes a tuple


def ablate_errors(
    layers: Sequence[int] | int | None = None, positions: Sequence[int] | int | None = None
) -> ErrorAblation:
    return ErrorAblation(layers, positions)  # pyright: ignore[reportArgumentType]  # __post_init__ makes tuples


# ---------------------------------------------------------------------------------- node ids
def parse_feature_id(node_id: str) -> tuple[int, int, int | None]:
    """`layer_index` or Neuronpedia `layer_index_pos` -> (layer, index, pos or None)."""
    parts = str(node_id).strip().split("_")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) not in (2, 3) or nums[0] < 0 or nums[1] < 0 or (len(nums) == 3 and nums[2] < 0):
        raise EditError(
            f"bad feature id {node_id!r}: expected 'layer_index' or 'layer_index_pos' with non-negative integers"
        )
    return nums[0], nums[1], (nums[2] if len(nums) == 3 else None)


@dataclass(frozen=True)
class Supernode:
    """A labelled group of graph nodes, e.g. ("Texas", ["3_812_5", "4_101_5"])."""

    label: str
    node_ids: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        ids = (self.node_ids,) if isinstance(self.node_ids, str) else tuple(str(i) for i in self.node_ids)
        ids = tuple(dict.fromkeys(ids))  # a node listed twice is one node (and one edit)
        if not ids:
            raise EditError(f"supernode {self.label!r} has no nodes")
        object.__setattr__(self, "node_ids", ids)

    @classmethod
    def from_qparams(cls, supernodes: Iterable[Sequence[str]], graph=None) -> list[Supernode]:
        """Parse Neuronpedia `qParams.supernodes` ([[label, id, ...], ...]); with `graph`, check
        every id is one of its nodes."""
        out = []
        for entry in supernodes:
            if isinstance(entry, str) or len(entry) < 2:
                raise EditError(f"a supernode entry must be [label, node_id, ...], got {entry!r}")
            sn = cls(str(entry[0]), tuple(entry[1:]))
            if graph is not None:
                sn.validate(graph)
            out.append(sn)
        return out

    def validate(self, graph) -> Supernode:
        """Raise EditError naming the ids that are not nodes of `graph`."""
        known = set(graph.nodes["node_id"].tolist())
        missing = [i for i in self.node_ids if i not in known]
        if missing:
            raise EditError(
                f"supernode {self.label!r} references node ids not in the graph of {graph.prompt!r}: {missing}"
            )
        return self

    def features(self, graph=None) -> list[tuple[int, int, int]]:
        """(layer, index, pos) of its feature nodes. Errors/embeddings/logits cannot be edited as
        features and raise, naming them. With `graph`, kinds come from its node table."""
        if graph is not None:
            self.validate(graph)
            table = graph.nodes.set_index("node_id")
            out, bad = [], []
            for nid in self.node_ids:
                row = table.loc[nid]
                if row["kind"] != "feature":
                    bad.append(f"{nid} ({row['kind']})")
                else:
                    out.append((int(row["layer"]), int(row["feature"]), int(row["pos"])))
        else:
            out, bad = [], []
            for nid in self.node_ids:
                try:
                    layer, index, pos = parse_feature_id(nid)
                except EditError:
                    bad.append(nid)
                    continue
                if pos is None:
                    bad.append(f"{nid} (no position)")
                else:
                    out.append((layer, index, pos))
        if bad:
            raise EditError(f"supernode {self.label!r} holds nodes that are not features: {bad}")
        return out

    def edits(self, op: Op, value: float, graph=None) -> list[Edit]:
        """One edit per feature node, at that node's position."""
        return [Edit((l, i), op, value, (p,)) for l, i, p in self.features(graph)]


def swap(
    down: Supernode,
    up: Supernode,
    up_activations: Mapping[tuple[int, int], float] | None = None,
    *,
    down_op: Op = "set",
    down_value: float = 0.0,
    up_scale: float = 1.0,
    positions: Sequence[int] | None = None,
    graph=None,
    up_graph=None,
) -> list[Edit]:
    """Turn `down` off (set to `down_value`, or `down_op="scale"`) and `up` on.

    `up`'s ids usually come from another prompt's graph (e.g. California features of an Oakland
    prompt). Two ways to place them here:

    * with `up_graph` (that other prompt's graph; `graph` is then this prompt's): each up feature is
      set where it was there, the two prompts aligned at their ends (position p of an n-token prompt
      goes to p + n_here - n), so with a shared template the city meets the city and the last token
      the last token; at `up_scale` × its activation there (the graph's clean value). A feature in
      both supernodes at one position takes the up value.
    * otherwise every up feature is set at `positions` (default: the positions of `down`'s nodes) to
      `up_scale` × `up_activations[(layer, index)]`, its activation in the other prompt's clean run
      (see `intervene.activations_from`). Features of different roles (the city's, the last token's)
      then land at each other's positions too."""
    down_feats = down.features(graph)
    edits = [Edit((l, i), down_op, down_value, (p,)) for l, i, p in down_feats]
    if up_graph is not None:
        if graph is None or up_activations is not None or positions is not None:
            raise EditError("swap with up_graph: give graph (this prompt's), and neither up_activations nor positions")
        return up_replaces_down(edits, aligned_up_edits(up, up_graph, graph.n_pos, up_scale))
    if up_activations is None:
        raise EditError(f"swap: give up_activations or up_graph for supernode {up.label!r}")
    pos = tuple(positions) if positions is not None else tuple(sorted({p for _, _, p in down_feats}))
    seen: set[tuple[int, int]] = set()
    for l, i, _ in up.features():
        if (l, i) in seen:
            continue
        seen.add((l, i))
        if (l, i) not in up_activations:
            raise EditError(f"swap: no activation given for up feature {l}_{i} of supernode {up.label!r}")
        edits.append(Edit((l, i), "set", float(up_activations[(l, i)]) * float(up_scale), pos))
    return edits


def up_replaces_down(down_edits: list[Edit], up_edits: list[Edit]) -> list[Edit]:
    """A swap's edits: `down_edits` less those of a feature and position that an up edit sets (a
    feature in both supernodes at one position takes the up value), then `up_edits`."""
    taken = {(e.feature, e.positions) for e in up_edits}
    return [e for e in down_edits if (e.feature, e.positions) not in taken] + up_edits


def aligned_up_edits(up: Supernode, up_graph, n_pos_here: int, up_scale: float = 1.0) -> list[Edit]:
    """`up`'s features set at their own positions in `up_graph`'s prompt, shifted so that both prompts
    end together, each to `up_scale` × its clean activation there (the graph's node table)."""
    acts = up_graph.nodes.set_index("node_id")["activation"]
    values = [float(acts[nid]) for nid in up.node_ids]
    return ends_aligned_edits(up, up.features(up_graph), values, int(up_graph.n_pos), n_pos_here, up_scale)


def ends_aligned_edits(
    up: Supernode,
    feats: Sequence[tuple[int, int, int]],
    values: Sequence[float],
    n_pos_there: int,
    n_pos_here: int,
    up_scale: float = 1.0,
) -> list[Edit]:
    """Set each of `up`'s features (`feats` [(layer, index, pos)], one per node id, positions in an
    `n_pos_there`-token prompt) to `up_scale` × its value there, at its position shifted so that the
    two prompts end together (p -> p + n_pos_here - n_pos_there)."""
    shift = n_pos_here - n_pos_there
    edits = []
    for (l, i, p), nid, value in zip(feats, up.node_ids, values, strict=True):
        if p + shift < 0:
            raise EditError(
                f"swap: up node {nid} sits at position {p} of a {n_pos_there}-token prompt, before the start "
                f"of this {n_pos_here}-token one when the two are aligned at their ends"
            )
        edits.append(Edit((l, i), "set", float(value) * float(up_scale), (p + shift,)))
    return edits


# ---------------------------------------------------------------------------------- checks
def flatten_edits(edits) -> list[EditLike]:
    """Accept one edit, a list, or nested lists (e.g. the output of `swap`)."""
    if isinstance(edits, (Edit, ErrorAblation)):
        return [edits]
    out: list[EditLike] = []
    for e in edits or []:
        if isinstance(e, (Edit, ErrorAblation)):
            out.append(e)
        elif isinstance(e, (list, tuple)):
            out.extend(flatten_edits(e))
        else:
            raise EditError(f"not an edit: {e!r} (use set_feature, scale_feature, add_feature, ablate_errors, swap)")
    return out


def _describe(e: Edit) -> str:
    where = "every position" if e.positions is None else f"positions {list(e.positions)}"
    return f"{e.op} {e.value:g} at {where}"


def check_conflicts(edits: Sequence[EditLike]) -> None:
    """Raise EditError naming the first two edits of one feature that share a position (None: every
    position after BOS), e.g. `scale` and `set` of 0_364: one edit per feature and position, so the
    result never depends on the order edits were listed in. Exact repeats of an edit also conflict
    (a repeated scale would apply twice)."""
    seen: dict[tuple[int, int], list[Edit]] = {}
    for e in edits:
        if not isinstance(e, Edit):
            continue
        for other in seen.get(e.feature, []):
            shared = _shared_positions(other.positions, e.positions)
            if shared:
                layer, index = e.feature
                raise EditError(
                    f"conflicting edits of feature {layer}_{index} at {shared}: {_describe(other)} and "
                    f"{_describe(e)}; give one edit per feature and position"
                )
        seen.setdefault(e.feature, []).append(e)


def _shared_positions(a: tuple[int, ...] | None, b: tuple[int, ...] | None) -> str:
    """'' when the position sets do not meet, else a short description of where they do."""
    if a is None and b is None:
        return "every position"
    if a is None or b is None:
        explicit = [p for p in (a if a is not None else b or ()) if p >= 1]  # None starts after BOS
        return f"positions {explicit}" if explicit else ""
    both = sorted(set(a) & set(b))
    return f"positions {both}" if both else ""


def check_edits(edits: Sequence[EditLike], *, n_layers: int, d_features: int, n_pos: int | None) -> None:
    """Raise EditError before anything is applied. `n_pos` None skips the position check."""
    check_conflicts(edits)
    for e in edits:
        if isinstance(e, Edit):
            layer, index = e.feature
            if not 0 <= layer < n_layers:
                raise EditError(
                    f"feature {layer}_{index}: layer {layer} out of range (the transcoder has {n_layers} layers)"
                )
            if not 0 <= index < d_features:
                raise EditError(
                    f"feature {layer}_{index}: index {index} out of range (layer {layer} has {d_features} features)"
                )
            positions, what = e.positions, f"feature {layer}_{index}"
        else:
            for layer in e.layers or ():
                if not 0 <= layer < n_layers:
                    raise EditError(f"ablate_errors: layer {layer} out of range (the model has {n_layers} layers)")
            positions, what = e.positions, "ablate_errors"
        if positions is not None and n_pos is not None:
            bad = [p for p in positions if not 0 <= p < n_pos]
            if bad:
                raise EditError(f"{what}: positions {bad} out of range for a prompt of {n_pos} tokens (with BOS)")


# ---------------------------------------------------------------------------------- CLI
def parse_cli_edits(scale: list[str] | None, set_: list[str] | None, supernode: list[str] | None) -> list[Edit]:
    """CLI edit flags -> edits. `--supernode NAME=id,id,...` (or space separated) defines a group;
    `--scale ID=F` / `--set ID=V` take a feature id (`layer_index`: every position;
    `layer_index_pos`: that position) or a supernode NAME, whose ids follow the same two forms."""
    groups: dict[str, list[tuple[int, int, int | None]]] = {}
    for spec in supernode or []:
        name, ids = _split_assignment(spec, "--supernode")
        node_ids = [i for i in ids.replace(",", " ").split() if i]
        if not node_ids:
            raise EditError(f"--supernode {spec!r}: no feature ids after '='")
        try:
            groups[name] = [parse_feature_id(i) for i in node_ids]
        except EditError as exc:
            raise EditError(f"--supernode {name}: {exc}") from None
    edits: list[Edit] = []
    for op, specs in (("scale", scale), ("set", set_)):
        for spec in specs or []:
            target, raw = _split_assignment(spec, f"--{op}")
            try:
                value = float(raw)
            except ValueError:
                raise EditError(f"--{op} {spec!r}: {raw!r} is not a number") from None
            members = groups[target] if target in groups else [parse_feature_id(target)]
            for layer, index, pos in members:
                edits.append(Edit((layer, index), op, value, None if pos is None else (pos,)))  # type: ignore[arg-type]
    return edits


def _split_assignment(spec: str, flag: str) -> tuple[str, str]:
    name, sep, rest = str(spec).partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise EditError(f"{flag} expects NAME=VALUE, got {spec!r}")
    return name.strip(), rest.strip()
