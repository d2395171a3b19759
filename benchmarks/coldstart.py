"""Cold start: from running ``pympec cluster start -n 4 --daemon`` to the first result of
an ``execute`` on all engines.

Baseline: an empty mpi4py job of the same size under the same mpiexec (start, import
mpi4py and NumPy, exit), the least any MPI-based cluster could take.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

from .common import MPIEXEC, Result, workdir
from .context import ENGINES, Context

PYMPEC = os.path.join(os.path.dirname(sys.executable), "pympec")


def empty_job() -> float:
    t0 = time.perf_counter()
    subprocess.run([MPIEXEC, "-n", str(ENGINES + 1), sys.executable, "-c",
                    "from mpi4py import MPI; import numpy; MPI.COMM_WORLD.Barrier()"],
                   check=True, capture_output=True)
    return time.perf_counter() - t0


def cold_start() -> float:
    from pympec.client.multiengine import MultiEngineClient
    path = workdir() / "coldstart.json"
    t0 = time.perf_counter()
    try:
        subprocess.run([PYMPEC, "cluster", "start", "-n", str(ENGINES), "--daemon",
                        "--connection-file", str(path)], check=True, capture_output=True)
        with MultiEngineClient(path) as mec:
            mec.execute("pass")
        return time.perf_counter() - t0
    finally:
        subprocess.run([PYMPEC, "cluster", "stop", "--connection-file", str(path)],
                       capture_output=True)


def run(ctx: Context) -> list[Result]:
    tries = 1 if ctx.quick else 3
    baseline = min(empty_job() for _ in range(tries))
    value = min(cold_start() for _ in range(tries))
    return [Result("coldstart", f"cold start to first result, {ENGINES} engines", value, "s",
                   baseline, "empty mpi4py job", "<= 1.0 s", value <= 1.0,
                   f"best of {tries}")]
