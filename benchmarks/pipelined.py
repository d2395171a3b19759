"""Calls made one at a time, as the tutorial writes them, on 4 engines.  Each of these
calls returns before its work is done, so a client could keep many in flight:

* 10,000 x ``tc.run(MapTask(identity, (i,)))``, then ``tc.barrier(ids)`` and
  ``get_task_result`` of each (the tutorial's own idiom); goal 25,000 tasks/s and 5x
  mpi4py.futures' submit loop;
* 10,000 x ``executor().submit(identity, i)``, then ``result()`` of each; goal 25,000
  tasks/s.  Both beside mpi4py.futures' submit loop (10,000 x ``submit``, then every
  ``result()``, 4 workers under the same mpiexec, ``futures_peer.py``);
* 1,000 x ``mec.execute("pass", block=False)`` on all engines, then ``get_result()`` of
  each; goal 10,000 calls/s, beside 1,000 blocking ``mec.execute("pass")`` on the same
  cluster (so a ratio under 1 is what pipelining gains over a round trip per call).

Each is the best of 3 runs (2 with ``--quick``), timed from the first call to holding
every result, which is checked.  The ``execute`` row's note also says where one more
burst of 1,000 spends CPU (``/proc`` of every rank, ``os.times()`` of this client): on
a machine with fewer cores than processes, that cost over the cores bounds the rate.
"""
from __future__ import annotations

import os
import time

from .common import Result, cpu_seconds, rank_pids
from .context import CALLS, Context
from .tasks import checked, identity, note, rates

GOALS = {"run": 25_000, "run_peer": 5.0, "submit": 25_000, "execute": 10_000}
EXECUTES = 1_000
PEER = "mpi4py.futures submit loop"


def run(ctx: Context) -> list[Result]:
    from pympec.client.tasks import MapTask
    repeat = 2 if ctx.quick else 3
    cluster = ctx.cluster()
    tc, mec = cluster.task_client(), cluster.client()
    try:
        def run_loop(n: int) -> None:
            ids = [tc.run(MapTask(identity, (i,))) for i in range(n)]
            tc.barrier(ids, timeout=300)
            checked([tc.get_task_result(t) for t in ids], n)
            tc.clear()

        def executes(n: int, block: bool) -> None:
            calls = [mec.execute("pass", block=block) for _ in range(n)]
            if not block:
                calls = [pending.get_result() for pending in calls]
            assert len(calls) == n and all(len(records) == len(calls[0]) for records in calls)

        run_loop(1000)                                                   # warm up
        ran = rates(run_loop, CALLS, repeat)
        with tc.executor() as ex:
            def submit_loop(n: int) -> None:
                futures = [ex.submit(identity, i) for i in range(n)]
                checked([f.result(timeout=300) for f in futures], n)
            submit_loop(1000)                                            # warm up
            submitted = rates(submit_loop, CALLS, repeat)
        executes(100, False)                                             # warm up
        pipelined = rates(lambda n: executes(n, False), EXECUTES, repeat)
        spent = cpu_per_call(cluster, mec, lambda: executes(EXECUTES, False), EXECUTES)
        blocking = rates(lambda n: executes(n, True), EXECUTES, repeat)
    finally:
        tc.close()
        mec.close()
    peer = ctx.futures()["submit"]
    run_ratio = max(peer) / max(ran)
    return [
        Result("pipelined", f"{CALLS:,} x tc.run, then barrier and get_task_result",
               max(ran), "tasks/s", max(peer), PEER,
               f">= {GOALS['run']:,} tasks/s and <= {1 / GOALS['run_peer']:.2f}x "
               f"({GOALS['run_peer']:g}x the peer)",
               max(ran) >= GOALS["run"] and run_ratio <= 1 / GOALS["run_peer"],
               note(ran, "peer", peer)),
        Result("pipelined", f"{CALLS:,} x executor().submit, then every result",
               max(submitted), "tasks/s", max(peer), PEER, f">= {GOALS['submit']:,} tasks/s",
               max(submitted) >= GOALS["submit"], note(submitted, "peer", peer)),
        Result("pipelined", f"{EXECUTES:,} x mec.execute('pass', block=False) on all, "
               "then every result", max(pipelined), "calls/s", max(blocking),
               "the same, block=True", f">= {GOALS['execute']:,} calls/s",
               max(pipelined) >= GOALS["execute"],
               f"{note(pipelined, 'blocking', blocking)}; {spent}"),
    ]


def cpu_per_call(cluster, mec, burst, calls: int) -> str:
    """CPU time one ``burst`` of ``calls`` takes, per call, in all processes and by
    process: the client (this one), the controller, the engines (mean)."""
    controller = mec._session.welcome["pid"]
    ranks = rank_pids(cluster)
    before, mine = {p: cpu_seconds(p) for p in ranks}, os.times()
    t0 = time.perf_counter()
    burst()
    wall = time.perf_counter() - t0
    used = {p: cpu_seconds(p) - before[p] for p in ranks}
    after = os.times()
    client = after.user - mine.user + after.system - mine.system
    engines = [v for p, v in used.items() if p != controller]
    total = client + sum(used.values())
    us = 1e6 / calls
    return (f"CPU per call {total * us:.0f} us in all (client {client * us:.0f}, controller "
            f"{used.get(controller, 0) * us:.0f}, each of {len(engines)} engines "
            f"{sum(engines) / max(1, len(engines)) * us:.0f}), {total / wall:.2f} of "
            f"{os.cpu_count()} cores busy")
