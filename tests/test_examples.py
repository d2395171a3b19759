"""The examples run, at small sizes, as scripts against the real cluster, and write
valid PNGs of the expected size."""
from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, cluster, *args: str, cwd: Path) -> str:
    """Run examples/<name> with the session cluster; its stdout (fails on non-zero)."""
    cmd = [sys.executable, str(EXAMPLES / name), "--cluster", str(cluster.connection_file),
           *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd,
                          env=os.environ.copy())
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; asserts the signature and chunk type."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def check_png(path: Path, width: int, height: int) -> None:
    """A PNG that decodes to ``width`` x ``height`` pixels with something drawn on it."""
    assert png_size(path) == (width, height)
    image = pytest.importorskip("matplotlib.image").imread(str(path))
    assert image.shape[:2] == (height, width)
    assert image[..., :3].std() > 0.05          # not a blank canvas


def test_random_matrices(cluster, tmp_path):
    pytest.importorskip("matplotlib")
    out = run_example("random_matrices.py", cluster, "--num", "400", "--N", "24", "--png",
                      "goe.png", cwd=tmp_path)
    assert re.search(r"serial: +400 matrices of 24x24 in [\d.]+ s", out)
    assert re.search(r"parallel: 400 matrices on 4 engines in [\d.]+ s \(speedup [\d.]+\)",
                     out)
    distance = float(re.search(r"Wigner surmise\| = ([\d.]+)", out).group(1))
    assert distance < 0.15        # 400 spacings follow the surmise, roughly
    check_png(tmp_path / "goe.png", 640, 480)


def test_mc_pricer(cluster, tmp_path):
    pytest.importorskip("matplotlib")
    out = run_example("mc_pricer.py", cluster, "--grid", "3", "--paths", "4000", "--days",
                      "50", "--png", "prices.png", cwd=tmp_path)
    assert "9 tasks of 4000 paths" in out
    found = re.search(r"vanilla call ([\d.]+) \(Black-Scholes ([\d.]+)\)", out)
    mc, exact = map(float, found.groups())
    assert abs(mc - exact) < 1.5, out       # ~0.25 standard error at 4000 paths
    check_png(tmp_path / "prices.png", 800, 600)


def test_wordfreq(cluster, tmp_path):
    out = run_example("wordfreq.py", cluster, "--top", "3", cwd=tmp_path)
    assert "in 4 files, counted on 4 engines" in out
    assert re.search(r"^  the +\d+$", out, re.M)
    # the user's own files; more engines than files
    (tmp_path / "a.txt").write_text("spam spam eggs")
    (tmp_path / "b.txt").write_text("Spam, ham!")
    out = run_example("wordfreq.py", cluster, "a.txt", "b.txt", "--top", "3", cwd=tmp_path)
    assert "5 words (3 distinct) in 2 files" in out
    assert re.search(r"^  spam +3$", out, re.M)
