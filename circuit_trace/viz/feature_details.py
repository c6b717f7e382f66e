"""Feature-details files in the Neuronpedia / Anthropic feature format: one `<index>.json` per feature
with `index`, `examples_quantiles` (named groups of top-activating examples: tokens and per-token
activations) and optional `top_logits` / `bottom_logits`.

`index` is the graph node's `feature` field (SPEC §4: the Cantor pairing of layer and feature index
for transcoder features), so a viewer finds a node's details at `<base>/<node.feature>.json`; the
static viewer's base is the graph's relative `metadata.feature_details.feature_json_base_url`, which
is `features/<transcoder folder>` (one folder per transcoder set: a PLT graph never reads a CLT's
details), served from DIR/features/ by `circuit-trace serve`. `write_graph_details` fills that folder
from the transcoders' dashboards (`circuit_trace.dashboards`).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..graphs.ids import cantor_pair as cantor_index  # the node's `feature` id

__all__ = [
    "FeatureDetailsError",
    "cantor_index",
    "feature_details_from_examples",
    "validate_feature_details",
    "write_feature_details",
    "write_graph_details",
]


class FeatureDetailsError(ValueError):
    """A feature-details dict does not follow the Neuronpedia feature-details schema."""


def _plain(x: Any) -> Any:
    """numpy / torch scalars and arrays to plain Python (json-able) values."""
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return x.tolist()
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        return x.item()
    return x


def _is_num(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def validate_feature_details(d: Mapping[str, Any]) -> dict:
    """Check `d` against the feature-details schema (plus: finite numbers, and each example's
    `tokens` and `tokens_acts_list` of equal length). Returns a normalised plain-Python copy."""
    where = f"feature {d.get('index')!r}" if isinstance(d, Mapping) else "feature"
    if not isinstance(d, Mapping):
        raise FeatureDetailsError(f"{where}: expected a dict, got {type(d).__name__}")
    d = {k: _plain(v) for k, v in d.items()}
    if "index" not in d or not _is_num(d["index"]):
        raise FeatureDetailsError(f"{where}: 'index' must be a number")
    if float(d["index"]) == int(d["index"]):
        d["index"] = int(d["index"])
    if "examples_quantiles" not in d or not isinstance(d["examples_quantiles"], list):
        raise FeatureDetailsError(f"{where}: 'examples_quantiles' must be a list")
    quantiles = []
    for qi, q in enumerate(d["examples_quantiles"]):
        if not isinstance(q, Mapping):
            raise FeatureDetailsError(f"{where}: examples_quantiles[{qi}] must be an object")
        q = dict(q)
        if not isinstance(q.get("quantile_name"), str):
            raise FeatureDetailsError(f"{where}: examples_quantiles[{qi}].quantile_name must be a string")
        exs = _plain(q.get("examples"))
        if not isinstance(exs, list):
            raise FeatureDetailsError(f"{where}: examples_quantiles[{qi}].examples must be a list")
        out_exs = []
        for ei, ex in enumerate(exs):
            at = f"{where}: examples_quantiles[{qi}].examples[{ei}]"
            if not isinstance(ex, Mapping):
                raise FeatureDetailsError(f"{at} must be an object")
            ex = {k: _plain(v) for k, v in ex.items()}
            toks, acts = ex.get("tokens"), ex.get("tokens_acts_list")
            if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks):
                raise FeatureDetailsError(f"{at}.tokens must be a list of strings")
            if not isinstance(acts, list) or not all(_is_num(a) for a in acts):
                raise FeatureDetailsError(f"{at}.tokens_acts_list must be a list of finite numbers")
            if len(toks) != len(acts):
                raise FeatureDetailsError(f"{at}: {len(toks)} tokens but {len(acts)} activations")
            ex["tokens_acts_list"] = [float(a) for a in acts]
            out_exs.append(ex)
        q["examples"] = out_exs
        quantiles.append(q)
    d["examples_quantiles"] = quantiles
    for key in ("top_logits", "bottom_logits"):
        if key in d and (not isinstance(d[key], list) or not all(isinstance(t, str) for t in d[key])):
            raise FeatureDetailsError(f"{where}: {key!r} must be a list of strings")
    return d


def feature_details_from_examples(
    index: int,
    examples: Sequence[tuple[Sequence[str], Sequence[float]]],
    *,
    quantile_name: str = "Top activations",
    top_logits: Sequence[str] | None = None,
    bottom_logits: Sequence[str] | None = None,
) -> dict:
    """Convenience builder: one quantile group from `(tokens, activations)` pairs."""
    d: dict[str, Any] = {
        "index": index,
        "examples_quantiles": [
            {
                "quantile_name": quantile_name,
                "examples": [
                    {"tokens": list(t), "tokens_acts_list": [float(a) for a in _plain(a_)]} for t, a_ in examples
                ],
            }
        ],
    }
    if top_logits is not None:
        d["top_logits"] = list(top_logits)
    if bottom_logits is not None:
        d["bottom_logits"] = list(bottom_logits)
    return validate_feature_details(d)


def write_feature_details(directory: str | os.PathLike, features: Iterable[Mapping[str, Any]]) -> list[Path]:
    """Validate each feature-details dict and write it to `directory/<index>.json` (atomically;
    the directory is created). All features are validated before anything is written. Returns the
    written paths in input order. Duplicate indices are an error."""
    directory = Path(directory)
    docs = [validate_feature_details(f) for f in features]
    seen: set = set()
    for d in docs:
        if d["index"] in seen:
            raise FeatureDetailsError(f"duplicate feature index {d['index']!r}")
        seen.add(d["index"])
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for d in docs:
        p = directory / f"{d['index']}.json"
        atomic_write_json(p, d, compact=True)
        paths.append(p)
    return paths


def write_graph_details(transcoders, graph, graph_json: str | os.PathLike) -> tuple[int, Path | None]:
    """Copy the details of the feature nodes of the exported graph JSON `graph_json` (which may hold
    more nodes than `graph`: the viewer prunes a wider export in the browser) from the dashboards of
    `transcoders` (the set that traced it: `find_dashboards` checks the weights' fingerprint) to the
    folder its `metadata.feature_details` points at, `<graph dir>/features/<transcoder folder>/`.
    Returns (files written, folder); (0, None) when the transcoders ship no dashboards. Details
    made for other weights are never copied."""
    import json

    from ..dashboards.identity import find_dashboards, transcoder_fingerprint
    from ..dashboards.store import CompactDashboards
    from ..graphs.ids import cantor_unpair
    from ..graphs.neuronpedia import feature_details_base

    source = find_dashboards(transcoders)
    if source is None:
        return 0, None
    with open(graph_json, encoding="utf-8") as fh:
        data = json.load(fh)
    base = (data.get("metadata", {}).get("feature_details") or {}).get("feature_json_base_url") or feature_details_base(
        graph.transcoder_id
    )
    if not base.startswith("features/") or ".." in Path(base).parts:
        raise FeatureDetailsError(f"{graph_json}: feature_details base {base!r} is not a folder under features/")
    wanted = sorted(
        {
            int(n["feature"])
            for n in data.get("nodes", [])
            if n.get("feature_type") == "cross layer transcoder" and n.get("feature") is not None
        }
    )
    reader = CompactDashboards(source)
    fp = transcoder_fingerprint(transcoders)
    details = []
    for index in wanted:
        d = reader.feature(*cantor_unpair(index))
        if d.get("transcoder_fingerprint") not in (None, fp):
            raise FeatureDetailsError(f"{source}: feature {index} was made from other weights")
        d.setdefault("transcoder_id", graph.transcoder_id)
        d.setdefault("index", index)
        details.append(d)
    folder = Path(graph_json).parent / base
    write_feature_details(folder, details)  # creates the folder even for an empty list
    return len(details), folder
