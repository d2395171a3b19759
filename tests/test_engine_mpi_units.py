"""Runs the engine-side MPI units (tests/mpi, pytest-mpi) under a real mpiexec."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pympec.cluster import mpi
from pympec.cluster.local import find_mpiexec

HERE = Path(__file__).parent


def test_engine_units_under_mpiexec():
    pytest.importorskip("pytest_mpi")
    mpiexec = find_mpiexec()
    launch = mpi.local_launch(mpiexec, 3)   # what Open MPI needs here; nothing for MPICH
    proc = subprocess.run(
        [mpiexec, *launch.args, "-n", "3", sys.executable, "-m", "pytest", "-q", "--with-mpi",
         "-p", "no:cacheprovider", str(HERE / "mpi")],
        capture_output=True, text=True, timeout=240, cwd=HERE.parent,
        env={**os.environ, **launch.env})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 passed" in proc.stdout
