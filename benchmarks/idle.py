"""Idle cost: CPU used by each engine and by the controller over 5 s of no requests.

The cluster's ranks are the Python descendants of its mpiexec; the controller is the one
whose pid the controller reports.  Times come from /proc/<pid>/stat.  Baseline: none is
needed (the goal is absolute), so the row names the goal instead.

The window opens once the ranks are in their idle regime: the backoff has reached its
long sleeps, and the warm buffers the last transfers left (pympec.protocol.buffers) have gone
back to the system, which happens PYMPEC_BUFFER_KEEP seconds after their last use and
is a cost of those transfers, not of idling.
"""
from __future__ import annotations

import time

from pympec import settings

from .common import Result, cpu_seconds, rank_pids
from .context import Context

WINDOW = 5.0


def run(ctx: Context) -> list[Result]:
    cluster = ctx.cluster()
    mec = cluster.client()
    try:
        controller = mec._session.welcome["pid"]
        mec.execute("pass")           # then leave it alone
    finally:
        mec.close()
    time.sleep(settings.BUFFER_KEEP.get() + 1.0)   # idle regime: long sleeps, buffers given back
    ranks = rank_pids(cluster)
    before = {p: cpu_seconds(p) for p in ranks}
    t0 = time.monotonic()
    time.sleep(WINDOW)
    elapsed = time.monotonic() - t0
    share = {p: (cpu_seconds(p) - before[p]) / elapsed for p in ranks}
    engines = [v for p, v in share.items() if p != controller]
    out = [Result("idle", f"idle CPU per engine (mean of {len(engines)}, over {WINDOW:g} s)",
                  sum(engines) / max(1, len(engines)), "core", goal="<= 0.3%",
                  met=max(engines, default=0) <= 0.003,   # issue 3 (DESIGN contract 3: < 1%)
                  note=f"worst engine {max(engines, default=0) * 100:.2f}%"),
           Result("idle", f"idle CPU of the controller (over {WINDOW:g} s)",
                  share.get(controller), "core", goal="<= 1%",
                  met=(share.get(controller) or 0) <= 0.01)]
    return out
