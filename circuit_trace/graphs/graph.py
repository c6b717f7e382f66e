"""The Graph dataclass (docs/ARCHITECTURE.md, "graphs/"): node table + adjacency + metadata.

Attribution constructs it; everything else (pruning, scores, exporters, save/load) reads it.
Rows of `adjacency` are targets and columns sources: A[t, s] is the edge weight from s to t.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast, overload

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..atomic import atomic_write_bytes
from .defaults import EDGE_THRESHOLD, NODE_THRESHOLD
from .ids import node_ids
from .influence import as_csr, row_of_entries

if TYPE_CHECKING:
    import networkx as nx
    from typing_extensions import Unpack

    from .prune import PruneResult
    from .scores import GraphScores

__all__ = ["Graph", "INFLUENCE_COLUMNS", "JsonExportOptions", "NODE_COLUMNS", "NODE_KINDS", "json_default"]

NODE_KINDS = ("feature", "error", "embedding", "logit")
# Contract columns of `Graph.nodes`, in order.
NODE_COLUMNS = (
    "node_id", "kind", "layer", "pos", "feature", "token_id", "token",
    "activation", "logit_prob", "target_weight", "label",
)  # fmt: skip

# Node-table columns added by `add_influence` (attribution output and pruned graphs carry them):
# influence = wᵀB + w (SPEC §4 node score, higher = more important); cumulative_influence = share of
# the total held by the nodes ranked at or above this one (Neuronpedia's `influence`, lower = more).
INFLUENCE_COLUMNS = ("influence", "cumulative_influence")


class JsonExportOptions(TypedDict, total=False):
    """Keyword options of `Graph.to_json` / `Graph.neuronpedia_dict` besides slug and thresholds."""

    scan: str | None  # Neuronpedia scan name; default `model_id`
    info: dict | None  # extra `metadata.info` entries
    supernodes: Iterable[Sequence[Any]] | None  # [name, member ids...] groups; default: the graph's qParams
    pinned_ids: Iterable[str] | None  # node ids pinned in the viewer; default: the graph's qParams
    pruned: PruneResult | None  # this graph's prune result at the export thresholds, when computed
    prune: bool | None  # False: write every node and edge; None: prune unless already pruned
    export_node_threshold: float | None  # widest node threshold exported (default max(node, 0.9))
    export_edge_threshold: float | None  # widest edge threshold exported (default max(edge, 0.99))


_FORMAT = "circuit_trace.graph"
_FORMAT_VERSION = "1"
# Graph fields stored as JSON in the saved file's header (the arrays are tensors beside it).
_HEADER_FIELDS = (
    "prompt",
    "input_ids",
    "tokens",
    "n_layers",
    "model_id",
    "transcoder_id",
    "settings",
    "is_cross_layer",
)


def json_default(obj: Any) -> Any:
    """`json.dumps(default=...)` for graph settings and headers."""
    # settings may hold numpy scalars/arrays or paths; store them as plain JSON values.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    raise TypeError(f"settings value of type {type(obj).__name__} is not JSON-serialisable")


def _read_graph_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Tensors and metadata of a file written by `Graph.save`; ValueError in one sentence else."""
    from safetensors import SafetensorError, safe_open

    with open(path, "rb") as fh:  # FileNotFoundError passes through unchanged
        head = fh.read(64).lstrip()
    if head.startswith(b"{"):
        raise ValueError(f"{path} is a JSON file, not a saved graph: use Graph.from_json for Neuronpedia graph JSON")
    try:
        with safe_open(os.fspath(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != _FORMAT:
                raise ValueError(f"{path} is a safetensors file but not a circuit_trace graph")
            if metadata.get("version") != _FORMAT_VERSION:
                raise ValueError(f"{path}: unsupported graph format version {metadata.get('version')}")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as exc:
        raise ValueError(f"{path} is not a circuit_trace graph file (not safetensors: {exc})") from None
    return tensors, metadata


class _KindIndices:
    """`graph.<kind>_indices`: the node indices of one kind, read like an attribute."""

    def __init__(self, kind: str):
        self.kind = kind
        self.__doc__ = f"Adjacency indices of the {kind} nodes (`graph.indices({kind!r})`)."

    @overload
    def __get__(self, graph: None, owner: type | None = None) -> _KindIndices: ...
    @overload
    def __get__(self, graph: Graph, owner: type | None = None) -> np.ndarray: ...
    def __get__(self, graph: Graph | None, owner: type | None = None) -> np.ndarray | _KindIndices:
        return self if graph is None else graph.indices(self.kind)  # on the class: the descriptor


@dataclass(eq=False)
class Graph:
    """One prompt's attribution graph. Field names and meanings are fixed by the contract.

    nodes: one row per node in adjacency order (features, errors, embeddings, logits), columns
    NODE_COLUMNS. adjacency: float32 ndarray [N, N] or scipy CSR, A[t, s] = weight s -> t.
    bias_terms [N] / target_values [N]: h_t = Σ_s A[t, s] + bias_terms[t] for features and logits.
    """

    prompt: str
    input_ids: list[int]  # [P]
    tokens: list[str]  # [P]
    nodes: pd.DataFrame  # [N rows]
    adjacency: np.ndarray | sp.csr_array  # [N, N]
    n_layers: int
    model_id: str
    transcoder_id: str
    settings: dict = field(default_factory=dict)
    is_cross_layer: bool = False
    bias_terms: np.ndarray = None  # type: ignore[assignment]  # [N]; None -> zeros
    target_values: np.ndarray = None  # type: ignore[assignment]  # [N]; None -> zeros

    def __post_init__(self) -> None:
        if "node_id" not in self.nodes.columns:
            # Attribution leaves naming to this layer: Neuronpedia ids, unique by construction.
            self.nodes = self.nodes.copy()
            self.nodes.insert(0, "node_id", self._default_node_ids())
        missing = [c for c in NODE_COLUMNS if c not in self.nodes.columns]
        if missing:
            raise ValueError(f"Graph.nodes is missing columns {missing}")
        if not isinstance(self.nodes.index, pd.RangeIndex) or self.nodes.index.start != 0:
            # Row i must be node i of the adjacency; a leftover filtered index would break .loc.
            self.nodes = self.nodes.reset_index(drop=True)
        n = len(self.nodes)
        if sp.issparse(self.adjacency):
            if not isinstance(self.adjacency, sp.csr_array):
                self.adjacency = sp.csr_array(self.adjacency)
        else:
            self.adjacency = np.asarray(self.adjacency)
        if self.adjacency.shape != (n, n):
            raise ValueError(f"adjacency shape {self.adjacency.shape} != ({n}, {n}) from the node table")
        bad = set(self.nodes["kind"].unique()) - set(NODE_KINDS)
        if bad:
            raise ValueError(f"unknown node kinds {sorted(bad)}; expected {NODE_KINDS}")
        for name in ("bias_terms", "target_values"):
            value = getattr(self, name)
            value = np.zeros(n, dtype=np.float32) if value is None else np.asarray(value)
            if value.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {value.shape}")
            setattr(self, name, value)
        self.input_ids = [int(t) for t in self.input_ids]
        self.tokens = [str(t) for t in self.tokens]
        if len(self.input_ids) != len(self.tokens):
            raise ValueError("input_ids and tokens must have the same length")

    def _default_node_ids(self) -> list[str]:
        nodes = self.nodes
        return node_ids(
            nodes["kind"].tolist(),
            nodes["layer"].tolist(),
            nodes["feature"].tolist(),
            nodes["pos"].tolist(),
            nodes["token_id"].tolist(),
            int(self.n_layers),
        )

    @classmethod
    def from_attribution(cls, result: Any) -> Graph:
        """Build a Graph from any object with the contract's field names (e.g. attribution's
        AttributionResult), without importing it. A missing node_id column is filled in."""
        from dataclasses import fields

        graph = cls(**{f.name: getattr(result, f.name) for f in fields(cls)})
        return graph.add_influence()

    # ------------------------------------------------------------------ sizes and indices
    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def n_pos(self) -> int:
        return len(self.input_ids)

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.adjacency)

    @property
    def n_edges(self) -> int:
        """Number of nonzero entries of the adjacency."""
        if self.is_sparse:
            return int(np.count_nonzero(self.adjacency.data))
        return int(np.count_nonzero(cast(np.ndarray, self.adjacency)))

    @property
    def kinds(self) -> np.ndarray:
        """Node kind per row [N] (object array of str)."""
        return self.nodes["kind"].to_numpy(dtype=object)

    def indices(self, kind: str) -> np.ndarray:
        """Row indices [k] of the nodes of one kind, ascending."""
        if kind not in NODE_KINDS:
            raise ValueError(f"unknown node kind {kind!r}; expected one of {NODE_KINDS}")
        return np.flatnonzero(self.kinds == kind)

    feature_indices = _KindIndices("feature")
    error_indices = _KindIndices("error")
    embedding_indices = _KindIndices("embedding")
    logit_indices = _KindIndices("logit")

    def feature_nodes(self) -> pd.DataFrame:
        """Node-table rows of the features (index = adjacency row)."""
        return self.nodes[self.nodes["kind"] == "feature"]  # pyright: ignore[reportReturnType]  # a boolean mask selects rows

    def error_nodes(self) -> pd.DataFrame:
        return self.nodes[self.nodes["kind"] == "error"]  # pyright: ignore[reportReturnType]  # a boolean mask selects rows

    def embedding_nodes(self) -> pd.DataFrame:
        return self.nodes[self.nodes["kind"] == "embedding"]  # pyright: ignore[reportReturnType]  # a boolean mask selects rows

    def logit_nodes(self) -> pd.DataFrame:
        return self.nodes[self.nodes["kind"] == "logit"]  # pyright: ignore[reportReturnType]  # a boolean mask selects rows

    def logit_weights(self) -> np.ndarray:
        """Influence weight per node [N] float64: target_weight (logit probability by default)."""
        w = self.nodes["target_weight"].to_numpy(dtype=np.float64).copy()
        w[self.kinds != "logit"] = 0.0  # only targets seed influence, whatever the column holds
        return w

    def index_of(self, node_id: str) -> int:
        """Row index of a node id (linear scan; build a dict yourself for many look-ups)."""
        hits = np.flatnonzero(self.nodes["node_id"].to_numpy(dtype=object) == node_id)
        if hits.size == 0:
            raise KeyError(node_id)
        return int(hits[0])

    # ------------------------------------------------------------------ analysis
    def scores(self) -> GraphScores:
        """Replacement and completeness scores (SPEC §4) of this graph."""
        from .scores import graph_scores

        kinds = self.kinds
        return graph_scores(self.adjacency, self.logit_weights(), kinds == "embedding", kinds == "error")

    def node_influence(self) -> np.ndarray:
        """Node score [N] = wᵀB + w (logit influence; logits their own weight)."""
        from .influence import node_scores

        return node_scores(self.adjacency, self.logit_weights())

    def add_influence(self, score: np.ndarray | None = None, cumulative: np.ndarray | None = None) -> Graph:
        """Fill the INFLUENCE_COLUMNS of `nodes` in place and return self.

        score [N]: node scores (default: `node_influence()` of this graph); cumulative [N]: their
        cumulative shares (default: computed from `score` over this graph's nodes)."""
        from .prune import cumulative_share

        score = self.node_influence() if score is None else np.asarray(score, dtype=np.float64)
        cumulative = cumulative_share(score) if cumulative is None else np.asarray(cumulative)
        self.nodes = self.nodes.copy()
        self.nodes["influence"] = score
        self.nodes["cumulative_influence"] = np.asarray(cumulative, dtype=np.float64)
        return self

    def influence_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """(influence [N], cumulative_influence [N]) from the node table, computed when absent."""
        if not all(c in self.nodes.columns for c in INFLUENCE_COLUMNS):
            from .prune import cumulative_share

            score = self.node_influence()
            return score, cumulative_share(score)
        return (
            self.nodes["influence"].to_numpy(dtype=np.float64),
            self.nodes["cumulative_influence"].to_numpy(dtype=np.float64),
        )

    @property
    def pruning(self) -> dict | None:
        """The thresholds this graph was pruned at (`settings["pruned"]`), None when unpruned."""
        value = self.settings.get("pruned")
        return value if isinstance(value, dict) else None

    @property
    def is_pruned(self) -> bool:
        return self.pruning is not None

    def mark_pruned(self, node_threshold: float, edge_threshold: float, **extra: float) -> Graph:
        """Record that this graph is a pruning result (exporters then never prune it again)."""
        self.settings = {
            **self.settings,
            "pruned": {
                "node_threshold": float(node_threshold),
                "edge_threshold": float(edge_threshold),
                **{k: float(v) for k, v in extra.items()},
            },
        }
        return self

    def prune(self, node_threshold: float = NODE_THRESHOLD, edge_threshold: float = EDGE_THRESHOLD) -> PruneResult:
        """`prune.prune(self, ...)`: masks, influences and the pruned, re-indexed Graph."""
        from .prune import prune

        return prune(self, node_threshold=node_threshold, edge_threshold=edge_threshold)

    def subgraph(self, index: Sequence[int] | np.ndarray, adjacency: np.ndarray | sp.csr_array | None = None) -> Graph:
        """Graph over the rows `index` (kept in the given order) [k].

        adjacency [k, k] replaces the induced submatrix when given (pruning passes its kept edges);
        the result keeps this graph's storage kind (dense float32 stays dense).
        """
        index = np.asarray(index, dtype=np.int64)
        if adjacency is None:
            adjacency = self.adjacency[index][:, index] if self.is_sparse else self.adjacency[np.ix_(index, index)]
        if self.is_sparse:
            adjacency = sp.csr_array(adjacency, dtype=self.adjacency.dtype)
        elif sp.issparse(adjacency):
            adjacency = adjacency.toarray().astype(self.adjacency.dtype, copy=False)  # pyright: ignore[reportAttributeAccessIssue]  # issparse narrowed
        else:
            adjacency = np.asarray(adjacency, dtype=self.adjacency.dtype)
        return Graph(
            prompt=self.prompt,
            input_ids=list(self.input_ids),
            tokens=list(self.tokens),
            nodes=self.nodes.iloc[index].reset_index(drop=True),
            adjacency=adjacency,  # pyright: ignore[reportArgumentType]  # never None: set above
            n_layers=self.n_layers,
            model_id=self.model_id,
            transcoder_id=self.transcoder_id,
            settings=dict(self.settings),
            is_cross_layer=self.is_cross_layer,
            bias_terms=self.bias_terms[index],
            target_values=self.target_values[index],
        )

    # ------------------------------------------------------------------ exporters
    def _edge_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(target [E], source [E], weight [E] float64) of every nonzero edge, row-major."""
        csr = as_csr(self.adjacency)
        return row_of_entries(csr), csr.indices.astype(np.int64), csr.data

    def edges_frame(self) -> pd.DataFrame:
        """One row per nonzero edge: source, target (node ids), weight = A[t, s], kinds."""
        tgt, src, weight = self._edge_arrays()
        ids = self.nodes["node_id"].to_numpy(dtype=object)
        kinds = self.kinds
        return pd.DataFrame(
            {
                "source": ids[src],
                "target": ids[tgt],
                "weight": weight,
                "source_kind": kinds[src],
                "target_kind": kinds[tgt],
            }
        )

    def to_networkx(self) -> nx.DiGraph:
        """DiGraph source -> target keyed by node_id; node attrs from the table, edge weight."""
        import networkx as nx

        g = nx.DiGraph(prompt=self.prompt, model_id=self.model_id, n_layers=self.n_layers)
        records = self.nodes.to_dict(orient="records")
        g.add_nodes_from(
            (rec["node_id"], {**{k: v for k, v in rec.items() if k != "node_id"}, "index": i})
            for i, rec in enumerate(records)
        )
        tgt, src, weight = self._edge_arrays()
        ids = self.nodes["node_id"].to_numpy(dtype=object)
        g.add_weighted_edges_from(zip(ids[src], ids[tgt], weight.tolist()))
        return g

    def show(self, **kwargs):
        """Interactive plotly view (notebooks). A convenience delegate: the view lives in `viz`,
        which sits on top of this package, so it is imported only when called."""
        from ..viz import show

        return show(self, **kwargs)

    def to_html(self, path: str | os.PathLike, **kwargs):
        """Self-contained interactive HTML view (see `circuit_trace.viz.to_html`)."""
        from ..viz import to_html

        return to_html(self, path, **kwargs)

    def to_json(
        self,
        path: str | os.PathLike,
        slug: str | None = None,
        node_threshold: float = NODE_THRESHOLD,
        edge_threshold: float = EDGE_THRESHOLD,
        **options: Unpack[JsonExportOptions],
    ) -> dict:
        """Write Neuronpedia JSON atomically; returns the written dict.

        A graph that is already pruned (`is_pruned`, e.g. `ct.prune(g).graph`) or prune=False is
        written as it is: every node and edge. Otherwise the file holds the graph pruned at the
        export thresholds (default max(node_threshold, 0.9) / max(edge_threshold, 0.99)) and says
        that a viewer opens at node_threshold / edge_threshold (`metadata.node_threshold`,
        `pruning_settings`); the viewer re-prunes in the browser between the two.
        slug defaults to the file stem, scan to `model_id`. pinned_ids / supernode members may be
        Neuronpedia ids or this table's node ids; unknown or pruned ids raise ValueError.
        `pruned`: this graph's prune result at the export (or view) thresholds, when computed.
        Without pinned_ids / supernodes, a graph read by `from_json` keeps its own qParams.
        The other options are those of `JsonExportOptions`.
        """
        from .neuronpedia import write_json

        path = Path(path)
        data = self.neuronpedia_dict(slug if slug is not None else path.stem, node_threshold, edge_threshold, **options)
        write_json(data, path)
        return data

    def neuronpedia_dict(
        self,
        slug: str,
        node_threshold: float = NODE_THRESHOLD,
        edge_threshold: float = EDGE_THRESHOLD,
        **options: Unpack[JsonExportOptions],
    ) -> dict:
        """The Neuronpedia JSON dict `to_json` writes (see there), without writing it."""
        from .neuronpedia import to_neuronpedia

        q = cast(dict[str, Any], self.settings.get("qParams") if isinstance(self.settings.get("qParams"), dict) else {})
        pinned_ids = options.get("pinned_ids")
        supernodes = options.get("supernodes")
        prune, pruned = options.get("prune"), options.get("pruned")
        common: dict[str, Any] = dict(
            slug=slug, scan=options.get("scan"), info=options.get("info"),
            supernodes=(q.get("supernodes") or []) if supernodes is None else supernodes,
            pinned_ids=(q.get("pinnedIds") or []) if pinned_ids is None else pinned_ids,
            clicked_id=str(q.get("clickedId") or ""), sg_pos=str(q.get("sg_pos") or ""),
        )  # fmt: skip
        if prune is False or (prune is None and self.is_pruned):
            done = self.pruning or {}
            view = (
                done.get("view_node_threshold", done.get("node_threshold", 1.0)),
                done.get("view_edge_threshold", done.get("edge_threshold", 1.0)),
            )
            data = to_neuronpedia(self, prune=False, view_thresholds=view, **common)
        else:
            export = self._export_thresholds(
                node_threshold,
                edge_threshold,
                options.get("export_node_threshold"),
                options.get("export_edge_threshold"),
            )
            if pruned is None or (pruned.node_threshold, pruned.edge_threshold) != export:
                pruned = self.prune(*export)
            data = to_neuronpedia(self, pruned, view_thresholds=(node_threshold, edge_threshold), **common)
        return data

    @staticmethod
    def _export_thresholds(
        node: float, edge: float, export_node: float | None, export_edge: float | None
    ) -> tuple[float, float]:
        from .neuronpedia import EXPORT_EDGE_THRESHOLD, EXPORT_NODE_THRESHOLD

        en = max(node, EXPORT_NODE_THRESHOLD) if export_node is None else float(export_node)
        ee = max(edge, EXPORT_EDGE_THRESHOLD) if export_edge is None else float(export_edge)
        if en < node or ee < edge:
            raise ValueError(f"export thresholds ({en}, {ee}) must be at least the view thresholds ({node}, {edge})")
        return float(en), float(ee)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Graph:
        """Read a Neuronpedia graph JSON (ours or circuit-tracer's) back into a pruned Graph.

        Nodes, links (A[t, s] = weight), qParams (kept in `settings["qParams"]` and written back by
        `to_json`) and the pruning thresholds round-trip. The file holds no bias terms or target
        values, so `bias_terms` / `target_values` are zeros. Raises ValueError with one sentence when
        the file is not a graph JSON.
        """
        from .neuronpedia import graph_from_dict, load_json

        try:
            data = load_json(path)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a Neuronpedia graph JSON file: {exc}") from None
        except OSError:  # a missing file stays a FileNotFoundError
            raise
        except Exception as exc:  # schema / structure errors from validate
            msg = str(exc).splitlines()[0]
            raise ValueError(f"{path} is not a valid Neuronpedia graph JSON file: {msg}") from None
        try:
            return graph_from_dict(data, cls)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(
                f"{path} is a Neuronpedia graph JSON this reader cannot rebuild a Graph from "
                f"({type(exc).__name__}: {exc})"
            ) from None

    # ------------------------------------------------------------------ persistence
    def _header(self) -> dict:
        nodes = self.nodes
        fields = {f: getattr(self, f) for f in _HEADER_FIELDS}
        return fields | {
            "n_layers": int(self.n_layers),
            "is_cross_layer": bool(self.is_cross_layer),
            "adjacency_format": "csr" if self.is_sparse else "dense",
            "n_nodes": self.n_nodes,
            # dtypes travel with the records so load() restores e.g. float32 columns exactly.
            "node_dtypes": {c: str(nodes[c].dtype) for c in nodes.columns},
            "nodes": nodes.to_dict(orient="records"),
        }

    def save(self, path: str | os.PathLike) -> None:
        """One safetensors file: tensors (adjacency dense or CSR parts, bias_terms, target_values)
        plus this graph's JSON (node records, metadata) in the safetensors header. No pickle;
        written to a temp file and renamed, so an interrupted save never leaves a broken file.
        A ``.json`` name raises ValueError: Neuronpedia JSON is `to_json`'s."""
        from safetensors.numpy import save as st_save

        if Path(path).suffix.lower() == ".json":
            raise ValueError(
                f"{path}: Graph.save writes the safetensors format, not JSON; use graph.to_json(path) "
                "for Neuronpedia JSON, or a .safetensors name"
            )

        tensors: dict[str, np.ndarray] = {
            "bias_terms": np.ascontiguousarray(self.bias_terms),
            "target_values": np.ascontiguousarray(self.target_values),
        }
        if self.is_sparse:
            a = cast(sp.csr_array, self.adjacency)
            tensors["adjacency.data"] = np.ascontiguousarray(a.data)
            tensors["adjacency.indices"] = np.ascontiguousarray(a.indices)
            tensors["adjacency.indptr"] = np.ascontiguousarray(a.indptr)
        else:
            tensors["adjacency"] = np.ascontiguousarray(self.adjacency)
        header = json.dumps(self._header(), default=json_default)
        metadata = {"format": _FORMAT, "version": _FORMAT_VERSION, "graph": header}
        atomic_write_bytes(path, st_save(tensors, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Graph:
        """Read a file written by `save` (a Neuronpedia JSON needs `Graph.from_json`; any other
        file raises ValueError saying what it is)."""
        tensors, metadata = _read_graph_file(path)
        h = json.loads(metadata["graph"])
        n = h["n_nodes"]
        nodes = pd.DataFrame.from_records(h["nodes"], columns=list(h["node_dtypes"]))
        nodes = nodes.astype(h["node_dtypes"]) if n else nodes
        if h["adjacency_format"] == "csr":
            adjacency = sp.csr_array(
                (
                    tensors["adjacency.data"],
                    tensors["adjacency.indices"],
                    tensors["adjacency.indptr"],
                ),
                shape=(n, n),
            )
        else:
            adjacency = tensors["adjacency"]
        return cls(
            **{f: h[f] for f in _HEADER_FIELDS},
            nodes=nodes,
            adjacency=adjacency,
            bias_terms=tensors["bias_terms"],
            target_values=tensors["target_values"],
        )

    def equals(self, other: Graph) -> bool:
        """Exact equality of every field (dataclass == is ill-defined for frames and arrays)."""
        if not isinstance(other, Graph):
            return False
        if self.is_sparse != other.is_sparse:
            return False
        if self.is_sparse:
            a, b = cast(sp.csr_array, self.adjacency), cast(sp.csr_array, other.adjacency)
            same_adj = (
                a.shape == b.shape
                and a.dtype == b.dtype
                and np.array_equal(a.indptr, b.indptr)
                and np.array_equal(a.indices, b.indices)
                and np.array_equal(a.data, b.data)
            )
        else:
            same_adj = self.adjacency.dtype == other.adjacency.dtype and np.array_equal(
                cast(np.ndarray, self.adjacency), cast(np.ndarray, other.adjacency)
            )
        return (
            same_adj
            and self.prompt == other.prompt
            and self.input_ids == other.input_ids
            and self.tokens == other.tokens
            and self.n_layers == other.n_layers
            and self.model_id == other.model_id
            and self.transcoder_id == other.transcoder_id
            and self.settings == other.settings
            and self.is_cross_layer == other.is_cross_layer
            and self.bias_terms.dtype == other.bias_terms.dtype
            and np.array_equal(self.bias_terms, other.bias_terms)
            and self.target_values.dtype == other.target_values.dtype
            and np.array_equal(self.target_values, other.target_values)
            and self.nodes.equals(other.nodes)
            and list(self.nodes.dtypes.astype(str)) == list(other.nodes.dtypes.astype(str))
        )

    def __repr__(self) -> str:
        counts = self.nodes["kind"].value_counts().to_dict()
        parts = ", ".join(f"{counts.get(k, 0)} {k}" for k in NODE_KINDS)
        store = "csr" if self.is_sparse else "dense"
        return (
            f"Graph({self.prompt!r}, {self.n_nodes} nodes [{parts}], "
            f"{self.n_edges} edges ({store}), model={self.model_id!r}, transcoders={self.transcoder_id!r})"
        )
