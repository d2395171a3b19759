"""The suite's own infrastructure: ``wait_for``, and the session's private PYMPEC_DIR."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import wait_for

TESTS = Path(__file__).resolve().parent


def test_wait_for_returns_the_predicates_value():
    values = iter([0, None, "ready"])
    assert wait_for(lambda: next(values), "the third value") == "ready"


def test_wait_for_fails_saying_what_and_how_long():
    with pytest.raises(AssertionError, match=r"^waited 0.05 s for the moon$"):
        wait_for(lambda: False, "the moon", timeout=0.05)
    with pytest.raises(AssertionError, match=r"^waited 0.05 s for the sun \(at 3\)$"):
        wait_for(lambda: False, lambda: "the sun (at 3)", timeout=0.05)   # said at the end


def test_session_leaves_the_users_pympec_dir_alone(tmp_path):
    """A session run with the user's PYMPEC_DIR set writes nothing there: here, one test that
    starts a cluster of its own (which writes its mpiexec log into the pympec directory). The
    session's own directory, in TMPDIR, is gone afterwards."""
    user, tmp = tmp_path / "user-pympec", tmp_path / "tmp"
    user.mkdir()
    tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{TESTS / 'test_cli.py'}::test_kill_engines"],
        env=dict(os.environ, PYMPEC_DIR=str(user), TMPDIR=str(tmp)), cwd=TESTS.parent,
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(user.iterdir()) == []
    assert list(tmp.glob("pympec-tests-*")) == []
