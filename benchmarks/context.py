"""What the topics share in one run: options, one 4-engine cluster, cached baselines."""
from __future__ import annotations

import json
from typing import Any, Callable

from . import baselines
from .common import cluster, run_mpi

ENGINES = 4
CALLS = 10_000          # the submit loops and the one-task-per-item maps, as in the issue
PEER_MAP = 300_000      # calls in mpi4py.futures' map with chunksize 100 (about 1 s)


class Context:
    """Options of the run, plus lazily made shared things (each made once)."""

    def __init__(self, quick: bool, scale: float) -> None:
        self.quick = quick
        self.scale = scale
        self._cache: dict[str, Any] = {}
        self._cluster = None

    def nbytes(self, megabytes: float) -> int:
        """``megabytes`` (10^6 bytes) scaled by ``--scale``, a multiple of 64 bytes."""
        return max(64, int(megabytes * 1e6 * self.scale) // 64 * 64)

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def cluster(self):
        """The shared cluster of ENGINES engines, started on first use."""
        if self._cluster is None:
            self._cluster = cluster(ENGINES).start()
        return self._cluster

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.stop()
            self._cluster = None

    # -- baselines -----------------------------------------------------------------

    def tcp_rate(self) -> float:
        return self.once("tcp", lambda: baselines.tcp_rate(self.nbytes(400)))

    def tls_rate(self) -> float:
        return self.once("tls", lambda: baselines.tcp_rate(self.nbytes(100), 3,
                                                           baselines.tls_pair))

    def memcpy_rate(self) -> float:
        return self.once("memcpy", lambda: baselines.memcpy_rate(self.nbytes(400)))

    def tcp_round_trip(self) -> tuple[float, float]:
        return self.once("tcp_rtt", baselines.tcp_round_trip)

    def mpi_latency(self) -> dict:
        return self.once("mpi_latency", lambda: json.loads(
            run_mpi(ENGINES + 1, "mpi_baseline.py", "latency", "300")))

    def mpi_bandwidth(self) -> dict:
        return self.once("mpi_bw", lambda: json.loads(run_mpi(
            ENGINES + 1, "mpi_baseline.py", "bandwidth", str(self.nbytes(400)),
            str(self.nbytes(100)), "3")))

    def futures(self) -> dict:
        """mpi4py.futures' tasks/s under the same mpiexec (``futures_peer.py``), one per
        run: {"submit": [...], "map1": [...], "map100": [...]}."""
        runs = 2 if self.quick else 3
        return self.once("futures", lambda: json.loads(run_mpi(
            ENGINES + 1, "futures_peer.py", "rates", str(CALLS), str(CALLS),
            str(PEER_MAP // (3 if self.quick else 1)), str(runs), pool=True)))
