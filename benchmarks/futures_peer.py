"""The peer: mpi4py.futures' ``MPIPoolExecutor`` under the same mpiexec, run by the suite as

    mpiexec -n 5 python -m mpi4py.futures futures_peer.py rates SUBMIT MAP1 MAP100 REPEAT
        tasks/s, REPEAT times each, of: SUBMIT x ``submit(identity, i)`` then every
        result (the submit loop); ``map(identity, range(MAP1))`` (chunksize 1);
        ``map(identity, range(MAP100), chunksize=100)``
    mpiexec -n 5 python -m mpi4py.futures futures_peer.py coldstart
        the wall clock (``time.time()``) once the first result is in, for cold start

Rank 0 runs this script and ranks 1..4 are the pool's workers, as pympec's controller
and 4 engines.  Prints one JSON value.  After a warm-up map of 1,000 calls, so every
worker has started, as pympec's clusters are warm when measured.
"""
import json
import sys
import time

from mpi4py.futures import MPIPoolExecutor


def identity(x):
    return x


def rate(n: int, run) -> float:
    """Tasks/s of ``run()``, which returns the n results in order (checked)."""
    t0 = time.perf_counter()
    got = run()
    seconds = time.perf_counter() - t0
    assert len(got) == n and got[-1] == n - 1 and got[n // 2] == n // 2
    return n / seconds


def rates(ex: MPIPoolExecutor, submit: int, map1: int, map100: int, repeat: int) -> dict:
    list(ex.map(identity, range(1000)))
    out: dict = {"submit": [], "map1": [], "map100": []}
    for _ in range(repeat):
        out["submit"].append(rate(submit, lambda: [
            f.result() for f in [ex.submit(identity, i) for i in range(submit)]]))
        out["map1"].append(rate(map1, lambda: list(ex.map(identity, range(map1)))))
        out["map100"].append(rate(map100, lambda: list(
            ex.map(identity, range(map100), chunksize=100))))
    return out


if __name__ == "__main__":
    with MPIPoolExecutor() as pool:
        if sys.argv[1] == "coldstart":
            pool.submit(identity, 1).result()
            print(json.dumps(time.time()), flush=True)
        else:
            print(json.dumps(rates(pool, *map(int, sys.argv[2:6]))), flush=True)
