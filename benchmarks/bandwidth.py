"""Moving arrays: scatter and gather of 400 MB over 4 engines; push and pull of 100 MB
to one engine; push of 100 MB to all engines; push and pull of 100 MB over TLS.

Each transfer is the best of a few tries (noise only slows) and is reported as a rate
beside its same-run baselines: TCP loopback (the ceiling for bytes that cross the
client's socket), and raw mpi4py doing the same collective under the same mpiexec.
The TLS figures come from a second cluster started with ``--tls``, timed in turns with
the same transfer on the plain one, which is their baseline (so the ratio is what TLS
costs); the note gives TLS loopback, the ceiling with TLS.

Goal for scatter, gather, push and pull (issue 13): at least 75% of the TCP rate.
"""
from __future__ import annotations

import numpy as np

from .common import Result, best, cluster, timed
from .context import ENGINES, Context

SHARE = 0.75   # of the TCP loopback rate
GOAL = f">= {SHARE:.0%} TCP loopback"


def run(ctx: Context) -> list[Result]:
    repeat = 2 if ctx.quick else 3
    big, push = ctx.nbytes(400), ctx.nbytes(100)
    mec = ctx.cluster().client()
    tcp = ctx.tcp_rate()
    mpi = ctx.mpi_bandwidth()
    out: list[Result] = []

    def add(name, nbytes, seconds, mpi_key, goal=GOAL, met=None, note=""):
        if goal == GOAL:
            met = nbytes / seconds >= SHARE * tcp
        out.append(Result("bandwidth", name, nbytes / seconds, "B/s", tcp, "TCP loopback",
                          goal, met, note + f"raw mpi4py {mpi_key}: "
                          f"{nbytes / mpi[mpi_key] / 1e9:.2f} GB/s"))

    try:
        mec.reset()
        data = np.ones(big, np.uint8)
        t = best(lambda: mec.scatter("x", data), repeat)
        add(f"scatter {big / 1e6:.0f} MB over {ENGINES} engines", big, t, "scatter")
        t = best(lambda: mec.gather("x"), repeat)
        back = mec.gather("x")
        assert back.nbytes == big and back.flags.writeable
        add(f"gather {big / 1e6:.0f} MB from {ENGINES} engines", big, t, "gather")
        back = data = None   # (their memory back before the next transfers)
        mec.reset()

        arr = np.ones(push, np.uint8)
        t_one = best(lambda: mec.push({"y": arr}, targets=0), repeat)
        add(f"push {push / 1e6:.0f} MB to 1 engine", push, t_one, "send")
        t = best(lambda: mec.pull("y", targets=0), repeat)
        add(f"pull {push / 1e6:.0f} MB from 1 engine", push, t, "recv")
        t_all = best(lambda: mec.push({"y": arr}, targets="all"), repeat)
        add(f"push {push / 1e6:.0f} MB to all {ENGINES} engines", push, t_all, "bcast",
            "<= 1.3x push to one", t_all <= 1.3 * t_one,
            f"{t_all / t_one:.2f}x the time of a push to one; ")
        mec.reset()
        out += over_tls(ctx, mec, arr, repeat)
        mec.reset()
    finally:
        mec.close()
    return out


def over_tls(ctx: Context, mec, arr: np.ndarray, repeat: int) -> list[Result]:
    """Push and pull of ``arr`` to one engine of a --tls cluster, each try timed right
    after the same transfer on the plain cluster of ``mec``: best of ``repeat`` each."""
    times: dict[str, list[float]] = {}
    with cluster(ENGINES, tls=True) as started:
        secure = started.client()
        try:
            for _ in range(repeat):
                for name, client in (("plain", mec), ("tls", secure)):
                    times.setdefault(f"{name} push", []).extend(
                        timed(lambda: client.push({"y": arr}, targets=0), 1))
                    times.setdefault(f"{name} pull", []).extend(
                        timed(lambda: client.pull("y", targets=0), 1))
        finally:
            secure.close()
    ceiling = ctx.tls_rate()
    return [Result("bandwidth", f"{verb} {arr.nbytes / 1e6:.0f} MB {where} 1 engine, TLS",
                   arr.nbytes / min(times[f"tls {verb}"]), "B/s",
                   arr.nbytes / min(times[f"plain {verb}"]), "plain, in turns", "", None,
                   f"TLS loopback: {ceiling / 1e9:.2f} GB/s")
            for verb, where in (("push", "to"), ("pull", "from"))]
