"""Re-execute the tutorial notebooks and save them in place, outputs included.

    python -m notebooks.execute                  # every notebook (slow ones only with RUN_SLOW=1)
    python -m notebooks.execute dallas_austin    # one notebook (by file stem)
    python -m notebooks.execute --check          # only report which notebooks are stale

Outputs are kept so the notebooks render on a code host. To make them deterministic and portable:
the kernel runs in a scratch folder with this checkout first on PYTHONPATH, plotly emits its JSON
mimetype (interactive in JupyterLab / VS Code, offline) and this script adds a PNG of every figure
(drawn by plotly.js in headless chromium) for renderers that run no JavaScript; cell timings and the
Python version are not saved; outputs that name an absolute path of this machine are refused.
The hash of the code cells is saved in the notebook's metadata, so the tests can tell when code was
edited without re-executing (tests/notebooks).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
META_KEY = "circuit_trace"  # notebook metadata: {"slow": bool, "source_sha256": str}
PLOTLY_MIME = "application/vnd.plotly.v1+json"
KERNEL_ENV = {
    "PLOTLY_RENDERER": "plotly_mimetype",
    "PYTHONHASHSEED": "0",
    "TQDM_DISABLE": "1",  # progress bars print timings: not content, never the same twice
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}
DEFAULT_SIZE = (900, 500)  # px, a figure without its own width / height


def notebook_paths(names: list[str] | None = None) -> list[Path]:
    paths = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    if not names:
        return paths
    by_stem = {p.stem: p for p in paths}
    unknown = [n for n in names if Path(n).stem not in by_stem]
    if unknown:
        raise SystemExit(f"no such notebook: {', '.join(unknown)} (have: {', '.join(by_stem)})")
    return [by_stem[Path(n).stem] for n in names]


def source_hash(nb: Any) -> str:
    """sha256 of the code cells' sources (whitespace at line ends ignored)."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            text = "\n".join(line.rstrip() for line in cell.source.strip().splitlines())
            h.update(text.encode() + b"\0")
    return h.hexdigest()


def is_slow(nb: Any) -> bool:
    return bool(nb.metadata.get(META_KEY, {}).get("slow", False))


def kernel_env() -> dict[str, str]:
    """The environment the kernel inherits: this checkout importable first, deterministic settings."""
    path = os.environ.get("PYTHONPATH", "")
    return {**KERNEL_ENV, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), path) if p)}


def execute(nb: Any, cwd: str | os.PathLike, timeout: int = 1800) -> Any:
    """Run every cell of `nb` in a fresh python3 kernel started in `cwd` (raises on a failing cell)."""
    from nbclient import NotebookClient

    saved = {k: os.environ.get(k) for k in kernel_env()}
    os.environ.update(kernel_env())
    try:
        client = NotebookClient(
            nb, timeout=timeout, kernel_name="python3", record_timing=False, resources={"metadata": {"path": str(cwd)}}
        )
        client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def outputs(nb: Any) -> Iterator[tuple[int, dict]]:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                yield i, out


def machine_paths() -> list[str]:
    """Absolute paths of this machine that must not end up in saved outputs."""
    home = str(Path.home())
    found = {str(ROOT), home, tempfile.gettempdir() + os.sep, sys.prefix}
    return sorted(p for p in found if p and p != os.sep)


def home_to_tilde(nb: Any) -> None:
    """Write the home folder as `~` in text outputs (e.g. a cache path a library prints)."""
    home = str(Path.home())
    for _, out in outputs(nb):
        if "text" in out:
            out["text"] = out["text"].replace(home + os.sep, "~" + os.sep)
        for mime, value in out.get("data", {}).items():
            if mime.startswith("text/") and isinstance(value, str):
                out["data"][mime] = value.replace(home + os.sep, "~" + os.sep)


def check_portable(nb: Any, name: str) -> None:
    for i, out in outputs(nb):
        if out.get("output_type") == "error":
            raise SystemExit(f"{name}: cell {i} failed: {out.get('ename')}: {out.get('evalue')}")
        text = json.dumps({k: v for k, v in out.items() if k != "data"} | {"data": _text_data(out)})
        for p in machine_paths():
            if p in text:
                at = text.index(p)
                raise SystemExit(
                    f"{name}: cell {i} prints a path of this machine ({p}): ...{text[max(0, at - 120) : at + 80]}..."
                )


def _text_data(out: dict) -> dict:
    return {k: v for k, v in out.get("data", {}).items() if not k.startswith("image/")}


def scrub(nb: Any) -> None:
    """Drop what changes from run to run or machine to machine without being content."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)
    nb.metadata.pop("widgets", None)
    lang = nb.metadata.get("language_info")
    if lang is not None:
        nb.metadata["language_info"] = {"name": lang.get("name", "python")}


def chromium_path() -> str | None:
    env = os.environ.get("CIRCUIT_TRACE_CHROMIUM")
    for cand in (env, "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def add_pngs(nb: Any) -> int:
    """Add an image/png beside every plotly figure output (plotly.js in headless chromium, offline)."""
    figs = [out for _, out in outputs(nb) if PLOTLY_MIME in out.get("data", {})]
    if not figs:
        return 0
    exe = chromium_path()
    if exe is None:
        raise SystemExit("chromium is needed to draw the figures' PNGs (run .ci/install-browser)")
    import plotly
    from playwright.sync_api import sync_playwright

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.set_content("<html><body><div id='fig'></div></body></html>")
        page.add_script_tag(path=str(plotly_js))
        for out in figs:
            out["data"]["image/png"] = render_png(page, out["data"][PLOTLY_MIME])
        browser.close()
    return len(figs)


def render_png(page: Any, fig: dict) -> str:
    layout = fig.get("layout", {})
    width, height = int(layout.get("width") or DEFAULT_SIZE[0]), int(layout.get("height") or DEFAULT_SIZE[1])
    url = page.evaluate(
        """async ([fig, w, h]) => {
             const el = document.getElementById('fig');
             await Plotly.newPlot(el, fig.data, fig.layout, {staticPlot: true});
             const png = await Plotly.toImage(el, {format: 'png', width: w, height: h, scale: 1});
             Plotly.purge(el);
             return png;
           }""",
        [fig, width, height],
    )
    prefix = "data:image/png;base64,"
    if not url.startswith(prefix):
        raise RuntimeError(f"plotly.js returned no PNG (got {url[:40]!r})")
    png = url[len(prefix) :]
    base64.b64decode(png, validate=True)  # a broken image fails here, not on the code host
    return png


def refresh(path: Path, *, timeout: int = 1800) -> str:
    """Execute one notebook and save it in place with its outputs. Returns a one-line summary."""
    import nbformat

    from circuit_trace.atomic import atomic_write_text

    nb = nbformat.read(path, as_version=4)
    if is_slow(nb) and os.environ.get("RUN_SLOW") != "1":
        return f"{path.name}: skipped (a slow notebook: set RUN_SLOW=1)"
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    with tempfile.TemporaryDirectory(prefix="ct-notebook-") as cwd:
        execute(nb, cwd, timeout)
    scrub(nb)
    home_to_tilde(nb)
    n_png = add_pngs(nb)
    try:
        check_portable(nb, path.name)
    except SystemExit:
        failed = Path(tempfile.gettempdir()) / f"{path.stem}.failed.ipynb"
        nbformat.write(nb, failed)
        print(f"{path.name}: the executed notebook is in {failed}", file=sys.stderr)
        raise
    nb.metadata.setdefault(META_KEY, {})["source_sha256"] = source_hash(nb)
    nbformat.validate(nb)
    atomic_write_text(path, nbformat.writes(nb) + "\n")
    return f"{path.name}: executed, {sum(1 for _ in outputs(nb))} outputs, {n_png} figures"


def stale(path: Path) -> str | None:
    """Why the saved outputs of `path` do not belong to its code, or None when they do."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    saved = nb.metadata.get(META_KEY, {}).get("source_sha256")
    if saved is None:
        return "never executed by notebooks/execute.py"
    if saved != source_hash(nb):
        return "code changed since its outputs were saved"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m notebooks.execute", description="Re-execute the notebooks and save them with outputs."
    )
    ap.add_argument("names", nargs="*", help="notebook file stems (default: all)")
    ap.add_argument("--check", action="store_true", help="only report stale notebooks (exit 1 if any)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    args = ap.parse_args(argv)
    paths = notebook_paths(args.names)
    if args.check:
        bad = [(p.name, why) for p in paths if (why := stale(p))]
        for name, why in bad:
            print(f"{name}: stale ({why})")
        return 1 if bad else 0
    for p in paths:
        print(refresh(p, timeout=args.timeout), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
