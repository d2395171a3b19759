"""``tc.executor()``, pympec's ``concurrent.futures`` Executor, mapping over 4 engines,
in tasks/s, beside its peer: mpi4py.futures' ``MPIPoolExecutor`` making the same calls
with 4 workers under the same mpiexec, in the same run (``futures_peer.py``).

* ``ex.map(identity, range(10,000), chunksize=1)``: one task per call;
* ``ex.map(identity, range(N), chunksize=100)``, N calibrated to about 1 s (the peer maps
  300,000); goal: at least twice the peer's rate;
* ``ex.map(identity, range(10**6))``, chunk size picked automatically; goal 500,000
  tasks/s, beside the raw mpi4py farm at 100 tasks per message (as ``tc.map`` in
  ``tasks.py``).

Each is the best of 3 runs (2 with ``--quick``), and so are the peer's.
"""
from __future__ import annotations

from .common import Result
from .context import CALLS, Context
from .tasks import CHUNK, FARM_BATCHED, calibrated, checked, farm_rates, identity, note, rates

GOALS = {"auto": 500_000, "chunked": 2.0}   # tasks/s; times the peer's rate
AUTO_CALLS = 10 ** 6
PEER = "mpi4py.futures"


def run(ctx: Context) -> list[Result]:
    repeat = 2 if ctx.quick else 3
    tc = ctx.cluster().task_client()
    try:
        with tc.executor() as ex:
            def mapped(n: int, **chunks: int) -> None:
                checked(list(ex.map(identity, range(n), timeout=300, **chunks)), n)

            mapped(1000, chunksize=1)                                  # warm up
            one = rates(lambda n: mapped(n, chunksize=1), CALLS, repeat)
            chunked_n, chunked = calibrated(lambda n: mapped(n, chunksize=CHUNK), repeat)
            auto = rates(mapped, AUTO_CALLS, repeat)
    finally:
        tc.close()
    peer, raw = ctx.futures(), farm_rates(ctx)
    chunked_ratio = max(peer["map100"]) / max(chunked)
    return [
        Result("executor", f"executor().map of {CALLS:,} tiny calls, chunksize 1",
               max(one), "tasks/s", max(peer["map1"]), f"{PEER}, same call",
               note=note(one, PEER, peer["map1"])),
        Result("executor", f"executor().map of {chunked_n:,} tiny calls, chunksize {CHUNK}",
               max(chunked), "tasks/s", max(peer["map100"]), f"{PEER}, same call",
               f"<= {1 / GOALS['chunked']:.2f}x ({GOALS['chunked']:g}x {PEER})",
               chunked_ratio <= 1 / GOALS["chunked"], note(chunked, PEER, peer["map100"])),
        Result("executor", f"executor().map of {AUTO_CALLS:,} tiny calls, automatic chunks",
               max(auto), "tasks/s", max(raw["batched"]), FARM_BATCHED,
               f">= {GOALS['auto']:,} tasks/s", max(auto) >= GOALS["auto"],
               note(auto, "raw farm", raw["batched"])),
    ]
