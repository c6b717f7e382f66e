"""The sweep-wide tables: one summary row per prompt, and which features recur across graphs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from ..atomic import atomic_write_bytes, atomic_write_text
from .prompts import PromptSpec
from .trace import row_path

SUMMARY_COLUMNS = [
    "index",
    "key",
    "prompt",
    "targets",
    "error",
    "top_token",
    "top_prob",
    "replacement",
    "completeness",
    "n_tokens",
    "n_nodes",
    "n_edges",
    "n_nodes_pruned",
    "n_edges_pruned",
    "seconds",
    "graph_file",
    "json_file",
    "graph_bytes",
    "json_bytes",
    "worker",
]
# counts stay integers even where a failed prompt leaves them empty
INT_COLUMNS = [
    "index",
    "n_tokens",
    "n_nodes",
    "n_edges",
    "n_nodes_pruned",
    "n_edges_pruned",
    "graph_bytes",
    "json_bytes",
]
FEATURE_COLUMNS = ["layer", "feature", "n_graphs", "mean_influence", "max_influence", "label"]


def read_rows(out: Path, specs: list[PromptSpec]) -> list[dict]:
    """The finished rows of these prompts (rows of prompts no longer in the file are ignored)."""
    rows = []
    for spec in specs:
        path = row_path(out, spec)
        if path.is_file():
            rows.append(json.loads(path.read_text(encoding="utf-8")))
    return rows


def summary_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows).reindex(columns=SUMMARY_COLUMNS)
    frame["error"] = frame["error"].fillna("")
    frame[INT_COLUMNS] = frame[INT_COLUMNS].astype("Int64")
    return frame.sort_values("index", kind="stable").reset_index(drop=True)


def feature_frame(rows: list[dict]) -> pd.DataFrame:
    """Per (layer, feature): in how many pruned graphs it appears and its logit influence there
    (summed over positions within a graph; mean and max over the graphs it appears in)."""
    records = [(f[0], f[1], f[2], f[3]) for row in rows if not row.get("error") for f in row.get("features", [])]
    if not records:
        return pd.DataFrame(columns=FEATURE_COLUMNS)
    per = pd.DataFrame.from_records(records, columns=["layer", "feature", "influence", "label"])
    table = per.groupby(["layer", "feature"], as_index=False).agg(
        n_graphs=("influence", "size"),
        mean_influence=("influence", "mean"),
        max_influence=("influence", "max"),
        label=("label", "first"),
    )
    table = table.sort_values(["n_graphs", "mean_influence"], ascending=False, kind="stable")
    return table.reindex(columns=FEATURE_COLUMNS).reset_index(drop=True)


def table_format() -> str:
    """parquet when pyarrow is installed, else csv."""
    try:
        import pyarrow  # noqa: F401  # pyright: ignore[reportMissingImports]  # optional dependency
    except ImportError:
        return "csv"
    return "parquet"


def write_table(frame: pd.DataFrame, stem: Path, fmt: str | None = None) -> Path:
    """Write `stem`.parquet or `stem`.csv atomically; returns the path."""
    fmt = fmt or table_format()
    path = stem.with_suffix(f".{fmt}")
    if fmt == "parquet":
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        return atomic_write_bytes(path, buf.getvalue())
    return atomic_write_text(path, frame.to_csv(index=False))


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by `write_table` (text columns come back as "" where empty)."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    frame = pd.read_csv(path)
    text = [
        c
        for c in ("prompt", "targets", "error", "top_token", "label", "graph_file", "json_file", "worker")
        if c in frame.columns
    ]
    frame[text] = frame[text].fillna("").astype(str)
    ints = [c for c in INT_COLUMNS if c in frame.columns]
    frame[ints] = frame[ints].astype("Int64")
    return frame
