"""The task farm when things break, on clusters of the test's own.

With MPICH's hydra, one rank dying ends the whole MPI job, so a task that kills its
engine process takes the cluster down: the farm fails fast, and the client gets a
ClusterError naming the lost controller within seconds (never a hang).
"""
from __future__ import annotations

import os
import time

import pytest

from pympec import client
from pympec.errors import ClusterError

from conftest import wait_for

pytestmark = pytest.mark.timeout(90)


def test_task_killing_its_engine_fails_fast(private_cluster):
    tc = private_cluster.task_client()
    assert tc.run(client.MapTask(lambda: 1), block=True) == 1
    others = tc.run_many([client.MapTask(time.sleep, (0.2,)) for _ in range(4)])
    tid = tc.run(client.MapTask(os._exit, (3,)))
    # fast: a farm that hung would end in the barrier's own TimeoutError instead
    with pytest.raises(ClusterError, match=r"controller|cluster") as info:
        tc.barrier([tid, *others], timeout=30)
    assert str(tc._session.info.cluster_id) in str(info.value) or \
        str(tc._session.info.port) in str(info.value)
    with pytest.raises(ClusterError):   # and every later call too, at once
        tc.queue_status()
    wait_for(lambda: private_cluster.poll() is not None, "mpiexec to end the MPI job",
             timeout=20)
