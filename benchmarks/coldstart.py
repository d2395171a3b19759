"""Cold start: from running ``pympec cluster start -n 4 --daemon`` to the first result of
an ``execute`` on all engines.

Baseline: an empty mpi4py job of the same size under the same mpiexec (start, import
mpi4py and NumPy, exit), the least any MPI-based cluster that uses NumPy could take.
Goal: at most 1.2x that.  The note gives the peer's cold start, ``mpiexec -n 5 python -m
mpi4py.futures`` to its first result (``futures_peer.py coldstart``; it never loads
NumPy), and the empty job without NumPy.  Best of 3 each (1 with ``--quick``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from .common import HERE, Result, mpi_command, workdir
from .context import ENGINES, Context

PYMPEC = os.path.join(os.path.dirname(sys.executable), "pympec")
GOAL = 1.2   # times the empty job


def empty_job(imports: str = "import numpy; ") -> float:
    cmd, env = mpi_command(ENGINES + 1, sys.executable, "-c",
                           f"from mpi4py import MPI; {imports}MPI.COMM_WORLD.Barrier()")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, timeout=120, env=env)
    return time.perf_counter() - t0


def cold_start() -> float:
    from pympec.client.multiengine import MultiEngineClient
    path = workdir() / "coldstart.json"
    t0 = time.perf_counter()
    try:
        subprocess.run([PYMPEC, "cluster", "start", "-n", str(ENGINES), "--daemon",
                        "--connection-file", str(path)], check=True, capture_output=True,
                       timeout=120)
        with MultiEngineClient(path) as mec:
            mec.execute("pass")
        return time.perf_counter() - t0
    finally:
        subprocess.run([PYMPEC, "cluster", "stop", "--connection-file", str(path)],
                       capture_output=True, timeout=120)


def peer_cold_start() -> float:
    """mpi4py.futures: from launching its pool to its first result (the wall clock its
    rank 0 prints then, against ours before the launch)."""
    cmd, env = mpi_command(ENGINES + 1, sys.executable, "-m", "mpi4py.futures",
                           str(HERE / "futures_peer.py"), "coldstart")
    t0 = time.time()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120, env=env)
    return json.loads(done.stdout) - t0


def run(ctx: Context) -> list[Result]:
    tries = 1 if ctx.quick else 3
    baseline = min(empty_job() for _ in range(tries))
    value = min(cold_start() for _ in range(tries))
    peer = min(peer_cold_start() for _ in range(tries))
    bare = min(empty_job("") for _ in range(tries))
    return [Result("coldstart", f"cold start to first result, {ENGINES} engines", value, "s",
                   baseline, "empty mpi4py job", f"<= {GOAL:g}x", value <= GOAL * baseline,
                   f"best of {tries}; mpi4py.futures: {peer:.2f} s "
                   f"({peer / baseline:.2f}x the empty job); the empty job without NumPy: "
                   f"{bare:.2f} s")]
