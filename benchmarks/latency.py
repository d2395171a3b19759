"""No-op ``execute`` latency on one engine and on all engines (median and p99).

Baseline: the transport floor measured in this run, one TCP loopback round trip from
Python plus one raw mpi4py round trip (a Send/Recv pair for one engine, Bcast + Gather
for all), since a pympec call crosses exactly those two.  Goals (issue 13): the median at
most 3x that floor on one engine, 4x on all 4.

Also the overhead of a call that works for WORK seconds, longer than any spin, so that
the controller sleeps, and returns BIG bytes, past MPI's eager size (a few KB): its reply
must still wake the controller at once.  Baseline: the same call returning a few bytes.
"""
from __future__ import annotations

from .common import Result, median, p99, timed
from .context import ENGINES, Context

GOALS = {"one": 3.0, "all": 4.0}   # times the same-run floor
WORK, BIG = 0.2, 20_000


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
        out.append(after_work(mec, 5 if ctx.quick else 15))
        return out
    finally:
        mec.close()


def after_work(mec, repeat: int) -> Result:
    """Median overhead beyond WORK of a call returning BIG bytes, against a few bytes."""
    mec.execute("import time", targets=0)
    overhead = {}
    for size in (10, BIG):
        code = f"time.sleep({WORK}); x = 'a' * {size}; x"
        overhead[size] = median([t - WORK for t in timed(lambda: mec.execute(code, targets=0),
                                                         repeat)])
    return Result("latency", f"a {WORK:g} s call returning {BIG // 1000} KB, time past the "
                  f"{WORK:g} s, median", overhead[BIG], "s", overhead[10],
                  "the same call returning 10 bytes", note=f"{repeat} calls each")
