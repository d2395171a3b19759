"""The docs cannot rot: every python/ipython block of docs/tutorial.md runs against the
real cluster, and docs/api.md matches the docstrings."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```(python|ipython)\n(.*?)^```", re.S | re.M)


def blocks(path: Path) -> list[tuple[int, str, str]]:
    """(line number, language, code) of each python or ipython block."""
    text = path.read_text()
    return [(text[:m.start()].count("\n") + 1, m.group(1), m.group(2))
            for m in BLOCK.finditer(text)]


def inputs(language: str, code: str) -> list[str]:
    """The inputs a user would type: a python block is one cell; an ipython block is
    one cell if it is a %% cell magic, else one input per unindented line."""
    if language == "python" or code.startswith("%%"):
        return [code]
    cells: list[str] = []
    for line in code.splitlines(keepends=True):
        if cells and (line[:1].isspace() or not line.strip()):
            cells[-1] += line
        else:
            cells.append(line)
    return cells


def test_tutorial_blocks_run(default_profile, capsys, monkeypatch):
    """The tutorial's ``client.MultiEngineClient()`` finds the session cluster (default_profile)."""
    pytest.importorskip("IPython")
    monkeypatch.chdir(ROOT)
    from IPython.core.interactiveshell import InteractiveShell
    from pympec.client import magics

    found = blocks(TUTORIAL)
    assert len(found) >= 20 and any(lang == "ipython" for _, lang, _ in found)
    shell = InteractiveShell.instance()
    shell.reset(new_session=False)
    try:
        for line, language, code in found:
            for cell in inputs(language, code):
                result = shell.run_cell(cell, store_history=True)
                out = capsys.readouterr()
                assert result.success, (
                    f"docs/tutorial.md block at line {line} failed on:\n{cell}\n"
                    f"{out.out}\n{out.err}\n{result.error_before_exec or result.error_in_exec!r}")
                assert "No Controller is activated" not in out.out
    finally:
        if getattr(shell, "_pympec_magics", None) and shell._pympec_magics.autopx.enabled:
            shell.run_cell("%autopx")
        magics.deactivate()
        shell.reset(new_session=False)


def test_ipython_blocks_split_like_typed_input():
    assert inputs("ipython", "%autopx\nc = 1\nfor i in x:\n    pass\n") == [
        "%autopx\n", "c = 1\n", "for i in x:\n    pass\n"]
    assert inputs("ipython", "%%px\na = 1\nb = 2\n") == ["%%px\na = 1\nb = 2\n"]


def test_api_reference_matches_the_docstrings():
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "make_api.py"), "--stdout"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    current = (ROOT / "docs" / "api.md").read_text()
    assert proc.stdout == current, (
        "docs/api.md is out of date with the docstrings: run `python docs/make_api.py`")
