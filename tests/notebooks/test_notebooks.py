"""The tutorial notebooks: public names only, committed with outputs that belong to their code, and
each runs top to bottom (its cells assert their claims).

Slow notebooks (metadata `circuit_trace.slow`, e.g. the SmolLM2 walkthrough) run only with RUN_SLOW=1.
`python -m notebooks.execute` re-executes and saves them; see notebooks/README.md."""

from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]


def _load_execute_module():
    spec = importlib.util.spec_from_file_location("notebooks_execute", ROOT / "notebooks" / "execute.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


nbexec = _load_execute_module()
NOTEBOOKS = nbexec.notebook_paths()


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def private_names(source: str) -> list[str]:
    """Private names a cell uses: `_x` modules or names imported, `obj._x` attributes (dunders allowed)."""
    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".") + [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            parts = [p for a in node.names for p in a.name.split(".")]
        elif isinstance(node, ast.Attribute):
            parts = [node.attr]
        else:
            continue
        bad += [p for p in parts if p.startswith("_") and not (p.startswith("__") and p.endswith("__"))]
    return bad


def test_private_name_check_catches_private_imports():
    assert private_names("from circuit_trace.viz._data import load") == ["_data"]
    assert private_names("import circuit_trace._x as y") == ["_x"]
    assert private_names("from circuit_trace.api import _organism_paths") == ["_organism_paths"]
    assert private_names("ct._EXPORTS") == ["_EXPORTS"]
    assert private_names("import circuit_trace as ct\nx.__class__\n%time y") == []


def test_stale_check_catches_an_edited_cell(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("# t")])
    nb.metadata[nbexec.META_KEY] = {"source_sha256": nbexec.source_hash(nb)}
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    assert nbexec.stale(path) is None
    nb.cells[1].source = "# markdown edits do not matter"
    nb.cells[0].source = "x = 1   \n"  # nor trailing whitespace
    nbformat.write(nb, path)
    assert nbexec.stale(path) is None
    nb.cells[0].source = "x = 2"
    nbformat.write(nb, path)
    assert nbexec.stale(path) == "code changed since its outputs were saved"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_uses_public_names_only(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(code_cells(nb)):
        assert not private_names(cell.source), f"{path.name} code cell {i + 1} uses private names"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_with_current_outputs(path):
    """Saved by notebooks/execute.py after the last edit of its code, with every cell run in order,
    no failure, outputs present and a PNG beside every plotly figure (so it renders on a code host)."""
    nb = nbformat.read(path, as_version=4)
    why = nbexec.stale(path)
    assert why is None, f"{path.name}: {why}; run `python -m notebooks.execute {path.stem}`"
    cells = code_cells(nb)
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    outs = [out for c in cells for out in c.outputs]
    assert sum(1 for c in cells if c.outputs) >= len(cells) // 2, "most cells should show something"
    assert not [o for o in outs if o.output_type == "error"]
    figures = [o for o in outs if nbexec.PLOTLY_MIME in o.get("data", {})]
    assert all(o.data.get("image/png") for o in figures), "every figure needs its PNG"
    streams = "".join(o.get("text", "") for o in outs if o.output_type == "stream")
    assert "Traceback" not in streams


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    """Execute it afresh (as CI does): every cell passes its asserts, and every cell that shows a
    result in the saved notebook shows one now (stderr-only outputs such as warnings are not counted)."""
    committed = nbformat.read(path, as_version=4)
    if nbexec.is_slow(committed) and os.environ.get("RUN_SLOW") != "1":
        pytest.skip("slow notebook (a real model): set RUN_SLOW=1")
    nb = nbformat.read(path, as_version=4)
    nbexec.execute(nb, tmp_path, timeout=900)  # raises CellExecutionError (with the cell) on a failure

    def shows(cell) -> bool:
        return any(o.output_type != "stream" or o.get("name") == "stdout" for o in cell.outputs)

    for i, (old, new) in enumerate(zip(code_cells(committed), code_cells(nb))):
        if shows(old):
            assert shows(new), f"{path.name} code cell {i + 1} showed a result when saved and shows none now"
