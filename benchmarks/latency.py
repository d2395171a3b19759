"""No-op ``execute`` latency on one engine and on all engines (median and p99).

Baseline: the transport floor measured in this run, one TCP loopback round trip from
Python plus one raw mpi4py round trip (a Send/Recv pair for one engine, Bcast + Gather
for all), since a pympec call crosses exactly those two.  Goals (issue 13): the median at
most 3x that floor on one engine, 4x on all 4.
"""
from __future__ import annotations

from .common import Result, median, p99, timed
from .context import ENGINES, Context

GOALS = {"one": 3.0, "all": 4.0}   # times the same-run floor


def run(ctx: Context) -> list[Result]:
    repeat = 200 if ctx.quick else 1000
    mec = ctx.cluster().client()
    try:
        out = []
        tcp_med, tcp_p99 = ctx.tcp_round_trip()
        mpi = ctx.mpi_latency()
        for label, targets, mpi_key in (("one", 0, "p2p"), ("all", "all", "collective")):
            for _ in range(50):   # warm up: communicators, caches, backoff
                mec.execute("pass", targets=targets)
            times = timed(lambda: mec.execute("pass", targets=targets), repeat)
            floor_med = tcp_med + median(mpi[mpi_key])
            floor_p99 = tcp_p99 + p99(mpi[mpi_key])
            who = "1 engine" if label == "one" else f"all {ENGINES} engines"
            out.append(Result("latency", f"no-op execute, {who}, median", median(times), "s",
                              floor_med, "TCP RTT + MPI RTT", f"<= {GOALS[label]:g}x",
                              median(times) <= GOALS[label] * floor_med))
            out.append(Result("latency", f"no-op execute, {who}, p99", p99(times), "s",
                              floor_p99, "TCP RTT + MPI RTT (p99)"))
        return out
    finally:
        mec.close()
