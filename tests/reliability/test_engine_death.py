"""An engine's process dies: SIGKILL, SIGSEGV, os._exit (issue 15, "outlive a dead engine").

Where the MPI lets the other ranks outlive a dead one (Open MPI 5 with ``--with-ft ulfm``,
which ``Cluster(fault_tolerant=True)`` adds), the client gets EngineError within seconds,
naming the engine and how it died; the engine leaves 'all', and the others keep their
namespaces and serve on: execute, push/pull, scatter/gather, tasks.  Where it cannot
(MPICH's hydra; Open MPI without the option), the MPI job ends with the engine, and the
client gets ClusterError within seconds instead of a hang.

Each test runs on a cluster of its own, under the MPI of the venv that runs the suite.
"""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import pympec
from pympec import client
from pympec.cluster import mpi
from pympec.cluster.local import find_mpiexec
from pympec.protocol import lastwords
from pympec.errors import (ClusterError, CollectiveAborted, CompositeError, EngineError,
                           engine_info)

from conftest import running_on, wait_for

pytestmark = pytest.mark.timeout(120)

OPEN_MPI = mpi.kind(find_mpiexec()) == "openmpi"
DETECTED_WITHIN = 5.0   # seconds from the death to the client's error
VICTIM = 2              # of engines 0..3

# What kills the victim, and what its EngineError says about how it died.
FAULTS = {
    "sigkill": ("import time; time.sleep(60)", "without last words"),
    "sigsegv": ("import ctypes; ctypes.string_at(0)", "SIGSEGV"),
    "os_exit": ("import os; os._exit(3)", "exited with code 3"),
}


def survives(fault_tolerant: bool) -> bool:
    return fault_tolerant and OPEN_MPI


@pytest.fixture
def make_cluster(tmp_path):
    """Start a cluster of the test's own: ``make_cluster(n, fault_tolerant)``."""
    started = []

    def make(n: int, fault_tolerant: bool) -> pympec.Cluster:
        cluster = pympec.Cluster(n=n, connection_file=tmp_path / f"c{len(started)}.json",
                                 timeout=120, fault_tolerant=fault_tolerant).start()
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.stop(timeout=10)


def pid_of(mec, engine: int) -> int:
    return next(e["pid"] for e in mec.status()["engine_status"] if e["id"] == engine)


def kill(mec, fault: str, engine: int = VICTIM):
    """Kill ``engine`` by ``fault``; returns the call that was running on it, and when
    the fault struck."""
    code, _ = FAULTS[fault]
    call = mec.execute(code, targets=engine, block=False)
    if fault == "sigkill":   # as a user (or the out-of-memory killer) would, from outside
        wait_for(lambda: running_on(mec, engine), f"engine {engine} to run the call")
        os.kill(pid_of(mec, engine), signal.SIGKILL)
    return call, time.monotonic()


def error_of(call, timeout: float) -> BaseException:
    with pytest.raises((CompositeError, ClusterError)) as caught:
        call.get_result(timeout=timeout)
    if isinstance(caught.value, CompositeError):
        return caught.value.elist[0][1]
    return caught.value


@pytest.mark.parametrize("fault_tolerant", [True, False], ids=["ft", "default"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_dead_engine(make_cluster, fault, fault_tolerant):
    cluster = make_cluster(4, fault_tolerant)
    mec = cluster.client(timeout=30)
    mec.execute("kept = id * 10")
    mec.push({"a": np.arange(5.0)})
    call, struck = kill(mec, fault)
    error = error_of(call, timeout=DETECTED_WITHIN + 10)
    took = time.monotonic() - struck
    if not survives(fault_tolerant):
        assert isinstance(error, ClusterError), error
        assert took < DETECTED_WITHIN, f"ClusterError came after {took:.1f} s"
        return
    assert isinstance(error, EngineError), error
    assert took < DETECTED_WITHIN, f"EngineError came after {took:.1f} s"
    said = str(error)
    assert f"engine {VICTIM} (rank {VICTIM + 1}, pid" in said and FAULTS[fault][1] in said
    survivors = [0, 1, 3]
    assert mec.get_ids() == survivors
    assert_serving(cluster, mec, survivors)
    gone = [e for e in mec.status()["engine_status"] if e["gone"]]
    assert [e["id"] for e in gone] == [VICTIM] and FAULTS[fault][1] in gone[0]["gone"]


def assert_serving(cluster, mec, survivors: list[int]) -> None:
    """The survivors kept their namespaces and serve: execute, push/pull, scatter/gather
    across them, a task map."""
    assert mec.pull("kept") == [10 * e for e in survivors]
    assert all((a == np.arange(5.0)).all() for a in mec.pull("a"))
    mec.execute("b = kept + 1")
    assert mec.pull("b") == [10 * e + 1 for e in survivors]
    mec.scatter("part", np.arange(30.0))
    assert (mec.gather("part") == np.arange(30.0)).all()
    tc = cluster.task_client()
    assert tc.map(lambda v: v * 2, range(12)) == [v * 2 for v in range(12)]


@pytest.mark.parametrize("fault_tolerant", [True, False], ids=["ft", "default"])
def test_a_task_on_a_killed_engine_completes_elsewhere(make_cluster, fault_tolerant):
    cluster = make_cluster(2, fault_tolerant)
    mec, tc = cluster.client(timeout=30), cluster.task_client()
    tid = tc.run(client.StringTask("import time; time.sleep(2); done = id", pull="done"))
    where = wait_for(lambda: [e for e in (0, 1) if running_on(mec, e)], "the task to start")[0]
    os.kill(pid_of(mec, where), signal.SIGKILL)
    if not survives(fault_tolerant):
        with pytest.raises(ClusterError):
            tc.get_task_result(tid, block=True, timeout=DETECTED_WITHIN + 10)
        return
    result = tc.get_task_result(tid, block=True, timeout=30)
    assert result.failure is None and result.ns.done == 1 - where
    assert mec.get_ids() == [1 - where]


BOMB = ("class Bomb:\n"
        "    def __reduce__(self):   # pickled for the gather: the engine dies in it\n"
        "        import os; os._exit(3)\n"
        "x = Bomb()")


@pytest.mark.parametrize("fault_tolerant", [True, False], ids=["ft", "default"])
def test_a_gather_a_member_dies_in(make_cluster, fault_tolerant):
    """Engine 2 dies while the others wait in the gather for it: the gather fails at
    once (EngineError for engine 2, CollectiveAborted for the others), and the others
    serve on, collectives included."""
    cluster = make_cluster(4, fault_tolerant)
    mec = cluster.client(timeout=30)
    mec.execute("import numpy as np; x = np.arange(3.0) + 3 * id; kept = id * 10")
    mec.execute(BOMB, targets=VICTIM)
    gather = mec.gather("x", block=False)
    struck = time.monotonic()
    with pytest.raises((CompositeError, ClusterError)) as caught:
        gather.get_result(timeout=DETECTED_WITHIN + 10)
    took = time.monotonic() - struck
    assert took < DETECTED_WITHIN, f"the gather failed after {took:.1f} s"
    if not survives(fault_tolerant):
        assert isinstance(caught.value, ClusterError)
        return
    errors = {engine_info(e)["engineid"]: type(e) for _, e, _ in caught.value.elist}
    assert errors == {0: CollectiveAborted, 1: CollectiveAborted, VICTIM: EngineError,
                      3: CollectiveAborted}, caught.value
    survivors = [0, 1, 3]
    assert mec.get_ids() == survivors
    assert (mec.gather("x") == np.concatenate([np.arange(3.0) + 3 * e
                                                for e in survivors])).all()
    mec.push({"a": np.arange(5.0)})
    assert_serving(cluster, mec, survivors)


# -- without a cluster: what a start adds, and how a death is told ---------------------

def test_fault_tolerant_launch():
    mpiexec = find_mpiexec()
    launch = mpi.local_launch(mpiexec, 5, fault_tolerant=True)
    if OPEN_MPI:
        assert launch.args[:2] == ["--with-ft", "ulfm"] and "Open MPI 5" not in launch.note
        assert launch.env["PYMPEC_FAULT_TOLERANT"] == "1"
    else:
        assert "--with-ft" not in launch.args and "Open MPI 5" in launch.note
        assert launch.env["PYMPEC_FAULT_TOLERANT"] == "0"
    plain = mpi.local_launch(mpiexec, 5)
    assert "--with-ft" not in plain.args and plain.env["PYMPEC_FAULT_TOLERANT"] == "0"


@pytest.mark.parametrize("tail,said", [
    ("INFO: up\nFatal Python error: Segmentation fault\n\nCurrent thread 0x7f (most "
     "recent call first):\n  File \"/x/ctypes/__init__.py\", line 519 in string_at\n",
     "died of SIGSEGV (Segmentation fault, in /x/ctypes/__init__.py line 519 (string_at))"),
    ("Fatal Python error: Aborted\n", "died of SIGABRT (Aborted)"),
    ("CRITICAL: LAST WORDS: os._exit(3)\n", "exited with code 3 (os._exit(3))"),
    ("INFO: engine 2 up\n", "without last words"),
])
def test_how_it_died(tail, said):
    assert said in lastwords.cause(tail)
