"""Task throughput of the load-balanced farm (``TaskClient``) on 4 engines, in tasks/s:

* 10,000 tiny tasks, one per task: ``MapTask(identity, (i,))`` each, ``run_many``, then
  ``barrier``, then ``get_task_result`` of every id (timed from making the tasks to
  holding every result);
* ``tc.map(identity, range(N))`` with the automatic chunk size, N calibrated so that one
  map takes about 1 s.

Each is the best of a few runs (5 for one per task, 3 for the others; noise only slows);
results are checked and cleared between runs, so the controller's store stays empty.
The executor's figures are in ``executor.py``, and ``tc.run`` one call at a time in
``pipelined.py``; both use this module's helpers.

Baseline: a raw mpi4py master/worker task farm under the same mpiexec
(``mpi_baseline.py taskfarm``): rank 0 sends each of 4 workers one message, then the next
one to whichever worker answers first (``comm.send``/``comm.recv``, pickled), results in
input order.  One task per message for the one-per-task figure (best of 5 runs of 10,000);
chunks of 100 tasks per message for the batched figures (best of 3 runs of 1,000,000).
Automatic batching makes far bigger chunks (a few per engine), so its ratio can fall
below 1.
"""
from __future__ import annotations

import json
import sys
import time

import cloudpickle

from .common import Result, median, run_mpi
from .context import ENGINES, Context

GOALS = {"one": 20_000, "batched": 500_000}
ONE_TASKS = 10_000
CHUNK = 100                   # the raw batched baseline's chunk size, and the executor's
TARGET_SECONDS = 1.0          # how long one batched run should take
MIN_N, MAX_N = 100_000, 3_000_000
FARM_ONE = "raw mpi4py farm, 1 task/msg"
FARM_BATCHED = f"raw mpi4py farm, {CHUNK} tasks/msg"


def identity(x):
    return x


# The engines cannot import ``benchmarks``: ship this module's functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def farm_rates(ctx: Context) -> dict:
    """Tasks/s of the raw mpi4py farm: {"one": [...], "batched": [...]}, one per run."""
    def make() -> dict:
        repeat = 2 if ctx.quick else 3
        batched_n = 300_000 if ctx.quick else 1_000_000
        out = {}
        for key, n, chunk, runs in (("one", ONE_TASKS, 1, 2 * repeat - 1),   # ~0.1 s each
                                    ("batched", batched_n, CHUNK, repeat)):
            got = json.loads(run_mpi(ENGINES + 1, "mpi_baseline.py", "taskfarm",
                                     str(n), str(chunk), str(runs)))
            out[key] = [n / t for t in got["seconds"]]
        return out
    return ctx.once("mpi_taskfarm", make)


def checked(got: list, n: int) -> None:
    """``got`` holds identity over range(n), in order (spot checks)."""
    assert len(got) == n and got[-1] == n - 1 and got[n // 2] == n // 2


def note(ours: list[float], who: str, theirs: list[float]) -> str:
    """Our best and median, and the baseline's median."""
    return (f"best of {len(ours)}, median {median(ours):,.0f}/s; {who} median "
            f"{median(theirs):,.0f}/s")


def rates(run, n: int, repeat: int) -> list[float]:
    """Tasks/s of ``repeat`` calls of ``run(n)``."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(n)
        out.append(n / (time.perf_counter() - t0))
    return out


def calibrated(run, repeat: int) -> tuple[int, list[float]]:
    """Size N for about TARGET_SECONDS from a warm-up of MIN_N, then the runs at N."""
    warm = rates(run, MIN_N, 1)[0]
    n = int(min(MAX_N, max(MIN_N, warm * TARGET_SECONDS)) // 10_000 * 10_000)
    return n, rates(run, n, repeat)


def run(ctx: Context) -> list[Result]:
    from pympec.client.tasks import MapTask
    repeat = 2 if ctx.quick else 3
    tc = ctx.cluster().task_client()
    try:
        def one_per_task(n: int) -> None:
            ids = tc.run_many([MapTask(identity, (i,)) for i in range(n)])
            tc.barrier(ids)
            checked([tc.get_task_result(t) for t in ids], n)
            tc.clear()

        def auto_map(n: int) -> None:
            checked(tc.map(identity, range(n)), n)
            tc.clear()

        one_per_task(1000)                                   # warm up
        one = rates(one_per_task, ONE_TASKS, 2 * repeat - 1)     # ~0.5 s each
        map_n, mapped = calibrated(auto_map, repeat)
        raw = farm_rates(ctx)
    finally:
        tc.close()

    return [
        Result("tasks", f"{ONE_TASKS:,} tiny tasks, one per task ({ENGINES} engines)",
               max(one), "tasks/s", max(raw["one"]), FARM_ONE,
               f">= {GOALS['one']:,} tasks/s", max(one) >= GOALS["one"],
               note(one, "raw farm", raw["one"])),
        Result("tasks", f"map of {map_n:,} tiny calls, automatic batching",
               max(mapped), "tasks/s", max(raw["batched"]), FARM_BATCHED,
               f">= {GOALS['batched']:,} tasks/s", max(mapped) >= GOALS["batched"],
               note(mapped, "raw farm", raw["batched"])),
    ]
