"""Shared pieces of the suite: result records, timing, clusters, and /proc CPU times."""
from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
TICK = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Result:
    """One figure: pympec's value, and the same-run baseline it is compared with.

    ``ratio`` is value/baseline for times and baseline/value for rates, so a ratio
    of 1.0 means "as fast as the baseline" and more than 1 means slower, always."""
    topic: str
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    goal: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.value or not self.baseline:
            return None
        rate = self.unit.endswith("/s")
        return self.baseline / self.value if rate else self.value / self.baseline

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ratio"] = self.ratio
        return d


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def p99(xs: list[float]) -> float:
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(round(0.99 * (len(ys) - 1))))]


def timed(f: Callable[[], Any], repeat: int) -> list[float]:
    """Wall times of ``repeat`` calls of ``f``, in seconds."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        out.append(time.perf_counter() - t0)
    return out


def best(f: Callable[[], Any], repeat: int) -> float:
    """The fastest of ``repeat`` calls: for bandwidth, where noise only ever slows."""
    return min(timed(f, repeat))


def workdir() -> Path:
    """The suite's PYMPEC_DIR (set by __main__), so nothing touches ~/.pympec."""
    return Path(os.environ["PYMPEC_DIR"])


_clusters = [0]


def cluster(n: int, **kwargs: Any):
    """A ``pympec.Cluster`` of ``n`` engines on a fresh connection file under workdir."""
    import pympec
    _clusters[0] += 1
    path = workdir() / f"bench-{_clusters[0]}.json"
    return pympec.Cluster(n=n, connection_file=path, timeout=600, **kwargs)


def mpi_command(nranks: int, *program: str) -> tuple[list[str], dict]:
    """This Python's mpiexec running ``program`` on ``nranks`` ranks, with what Open MPI needs
    (``--oversubscribe``, the run-as-root variables): the command and its environment."""
    from pympec.cluster.mpi import local_command
    command, env = local_command(MPIEXEC, nranks)
    return [*command, *program], env


def run_mpi(nranks: int, script: str, *args: str, timeout: float = 300,
            pool: bool = False) -> str:
    """Run ``python benchmarks/<script>`` under this Python's mpiexec (with ``pool``, as
    ``python -m mpi4py.futures <script>``: rank 0 runs it, the others are its pool's
    workers); its stdout."""
    runner = ["-m", "mpi4py.futures"] if pool else []
    cmd, env = mpi_command(nranks, sys.executable, *runner, str(HERE / script), *args)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


# -- CPU time of a process tree, from /proc ---------------------------------------------

def children(pid: int) -> list[int]:
    """All descendants of ``pid`` (mpiexec -> hydra proxy -> ranks), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def rank_pids(cluster: Any) -> list[int]:
    """The pids of a running ``pympec.Cluster``'s ranks (controller and engines)."""
    return [p for p in children(cluster.process.pid) if "pympec.engine" in cmdline(p)]


def cpu_seconds(pid: int) -> float:
    """The CPU time ``pid``'s threads have used so far, in seconds: to the nanosecond
    from their ``schedstat`` (an idle rank uses a few ms in 5 s, and utime + stime
    count whole ticks of 10 ms), else utime + stime."""
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):   # (no schedstat: a kernel without it)
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / TICK


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def load_average() -> list[float]:
    return list(os.getloadavg())
