"""Runs the engine-side MPI units (tests/mpi, pytest-mpi) under a real mpiexec."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pympec.cluster import mpi
from pympec.cluster.local import find_mpiexec

HERE = Path(__file__).parent


def test_engine_units_under_mpiexec():
    pytest.importorskip("pytest_mpi")
    command, env = mpi.local_command(find_mpiexec(), 3)   # with what Open MPI needs here
    proc = subprocess.run(
        [*command, sys.executable, "-m", "pytest", "-q", "--with-mpi",
         "-p", "no:cacheprovider", str(HERE / "mpi")],
        capture_output=True, text=True, timeout=240, cwd=HERE.parent, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 passed" in proc.stdout
