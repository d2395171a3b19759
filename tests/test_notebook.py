"""The Jupyter path: examples/interactive.ipynb runs headless (nbclient, a real ipykernel)
against the real cluster; magics, HTML reprs, streamed output, remote errors, TaskResults
and the asyncclient in the kernel's own event loop show."""
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
    work = tmp_path / "work"    # not tmp_path: its pympec/ directory would shadow the package
    work.mkdir()
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}}).execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    by_source = {c.source.splitlines()[0]: c for c in cells}

    assert "[0, 1, 2, 3]" in texts(cells[0])
    # creating the client gave the magics: no %load_ext, no activate()
    px = by_source["%px a = id * 3"]
    assert "Parallel execution on engines: all" in texts(px, "stream")
    html = texts(px, "execute_result", "text/html")
    assert "<table" in html and html.count("<tr>") == 1 + 4 and "In [" in html
    hello = by_source["%%px --targets 0,1"]
    assert "Parallel execution on engines: [0, 1]" in texts(hello, "stream")
    assert "[stdout:1] hello from engine 1 a = 3" in texts(hello, "stream")   # live
    assert "hello from engine 1" not in texts(hello, "execute_result")        # once

    shown = by_source["mec.execute(\"import sys; b = a + 1; print('<b>', b, '</b>'); "
                      "print('careful', file=sys.stderr); b\")"]
    html = shown.outputs[0].data["text/html"]
    assert "&lt;b&gt; 10 &lt;/b&gt;" in html and "<b>" not in html   # escaped
    assert "color:#cf222e\">careful" in html                          # stderr in red

    waited = by_source["pending = mec.execute('import time; time.sleep(0.1 * id)', block=False)"]
    assert "4/4 done" in texts(waited, "stream")                      # the progress bar
    assert "(done)" in texts(waited, "execute_result", "text/html")   # PendingResult html
    assert "4 engines done in" in texts(by_source["print(pending.progress, 'engines done in', "
                                                  "round(pending.elapsed, 2), 's')"])

    error_html = texts(by_source["try:"], "execute_result", "text/html")
    assert "engines 0, 2" in error_html and "ZeroDivisionError: division by zero" in error_html
    assert error_html.count("Traceback (most recent call last)") == 1

    failed = by_source["%px 1/0"]
    error = [o for o in failed.outputs if o.output_type == "error"][0]
    shown = "\n".join(error.traceback)
    assert error.ename == "CompositeError"
    assert shown.count("engines 0-3: ZeroDivisionError: division by zero") == 1
    assert shown.count("Traceback (most recent call last)") == 1

    task = by_source["tc = client.TaskClient()"]
    assert "y = 42" in texts(task, "execute_result", "text/html")
    task_error = texts(by_source["tc.run(client.StringTask('y = 1 / 0', pull='y'), block=True)"],
                       "execute_result", "text/html")
    assert "ZeroDivisionError: division by zero" in task_error and "#cf222e" in task_error

    awaited = by_source["import asyncio"]
    assert "[100, 101, 202, 203]" in texts(awaited, "execute_result")

    autopx = [c for c in cells if c.source == "%autopx"]
    assert "Auto Parallel Enabled" in texts(autopx[0])
    assert "[stdout:3] c = 90" in texts(cells[cells.index(autopx[0]) + 1], "stream")
    assert "Auto Parallel Disabled" in texts(autopx[1])
    assert "[0, 30, 60, 90]" in texts(cells[-1])
