"""The Jupyter path: examples/interactive.ipynb runs headless (nbclient, a real ipykernel)
against the real cluster; magics, HTML reprs, stream output and remote errors show."""
from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "interactive.ipynb"


def texts(cell, output_type=None, mime="text/plain"):
    """All text of a cell's outputs (of one type, if given)."""
    found = []
    for out in cell.outputs:
        if output_type and out.output_type != output_type:
            continue
        if out.output_type == "stream":
            found.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            found.append(out.data.get(mime, ""))
        elif out.output_type == "error":
            found.append("\n".join(out.traceback))
    return "\n".join(found)


def test_notebook_runs(default_profile, tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    by_source = {c.source.splitlines()[0]: c for c in cells}

    assert "[0, 1, 2, 3]" in texts(cells[0])
    px = by_source["%px a = id * 3"]
    assert "Parallel execution on engines: all" in texts(px, "stream")
    html = texts(px, "execute_result", "text/html")
    assert "&lt;Results List&gt;" in html and "[3] In [" in html
    hello = by_source["%%px --targets 0,1"]
    assert "Parallel execution on engines: [0, 1]" in texts(hello, "stream")
    assert "hello from engine 1 a = 3" in texts(hello, "execute_result")

    shown = by_source["mec.execute('b = a + 1; print(b)')"]
    assert "text/html" in shown.outputs[0].data

    waited = by_source["pending = mec.execute('import time; time.sleep(0.1 * id)', block=False)"]
    assert "4/4 done" in texts(waited, "stream")                      # the progress bar
    assert "(done)" in texts(waited, "execute_result", "text/html")   # PendingResult html
    assert "4 engines done in" in texts(by_source["print(pending.progress, 'engines done in', "
                                                  "round(pending.elapsed, 2), 's')"])

    error_html = texts(by_source["try:"], "execute_result", "text/html")
    assert "[2:execute]: ZeroDivisionError: division by zero" in error_html

    failed = by_source["%px 1/0"]
    error = [o for o in failed.outputs if o.output_type == "error"][0]
    assert error.ename == "CompositeError"
    assert "[3:execute]: ZeroDivisionError" in "\n".join(error.traceback)
    assert "Traceback (most recent call last)" in "\n".join(error.traceback)

    autopx = [c for c in cells if c.source == "%autopx"]
    assert "Auto Parallel Enabled" in texts(autopx[0])
    assert "Auto Parallel Disabled" in texts(autopx[1])
    assert "[0, 30, 60, 90]" in texts(cells[-1])
