"""All-engine no-op ``execute`` latency as the cluster grows: 2 to 64 engines on this
machine, oversubscribed.

Baseline: the no-op on one engine of the same cluster, so the ratio is the cost of
fanning out to all of them.
"""
from __future__ import annotations

from .common import Result, cluster, median, p99, timed
from .context import Context

SIZES = (2, 4, 8, 16, 32, 64)
QUICK_SIZES = (2, 4, 8)


def run(ctx: Context) -> list[Result]:
    out = []
    for n in QUICK_SIZES if ctx.quick else SIZES:
        repeat = 100 if n <= 16 else 40
        with cluster(n) as running:
            with running.client() as mec:
                for _ in range(10):
                    mec.execute("pass")
                    mec.execute("pass", targets=0)
                one = median(timed(lambda: mec.execute("pass", targets=0), repeat))
                times = timed(lambda: mec.execute("pass"), repeat)
        goal, met = ("<= 20 ms", median(times) <= 0.02) if n == 64 else ("", None)
        out.append(Result("scaling", f"no-op execute on all {n} engines, median",
                          median(times), "s", one, "1 engine, same cluster", goal, met,
                          f"p99 {p99(times) * 1e3:.2f} ms"))
    return out
