"""``pympec cluster start --hosts``: one mpiexec over a host list, through its host file support.

This machine has one host, known as its host name and as ``localhost``; hydra starts ranks on both
without ssh, so a two-host list runs for real here.
"""
from __future__ import annotations

import socket

import pytest

from pympec import connection
from pympec.cluster import mpi
from pympec.cluster.local import find_mpiexec
from pympec.cluster.batch.hosts import parse_hosts

from .conftest import roundtrip

pytestmark = pytest.mark.timeout(120)


def test_parse_hosts():
    assert parse_hosts("node1:4,node2:4") == [("node1", 4), ("node2", 4)]
    assert parse_hosts(" node1 , node2:2 ") == [("node1", 1), ("node2", 2)]
    for bad in ("", "node1:0", "node1:x", ":4"):
        with pytest.raises(ValueError, match="--hosts"):
            parse_hosts(bad)


def test_start_across_hosts(batch_env):
    """Two names of this host under MPICH; Open MPI takes both for this node and refuses a node's
    slots given twice, so it gets the one name (and its host file format)."""
    me = socket.gethostname()
    openmpi = mpi.kind(find_mpiexec()) == "openmpi"
    hosts = f"{me}:3" if openmpi else f"{me}:1,localhost:2"
    proc = batch_env.cli("cluster", "start", "--hosts", hosts, "-n", "2", "--daemon")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        hostfile = batch_env.dir / "log" / "hosts-default.txt"
        assert hostfile.read_text() == (f"{me} slots=3\n" if openmpi else f"{me}:1\nlocalhost:2\n")
        conn = batch_env.dir / "security" / "cluster-default.json"
        # rank 0 runs on the first host and binds its address
        assert connection.load(conn).address == socket.gethostbyname(me)
        roundtrip(conn)
    finally:
        assert batch_env.cli("cluster", "stop").returncode == 0


def test_hosts_and_scheduler_conflict(batch_env):
    proc = batch_env.cli("cluster", "start", "--hosts", "a:2", "--scheduler", "slurm")
    assert proc.returncode == 2 and "do not go together" in proc.stderr
    proc = batch_env.cli("cluster", "start", "--hosts", "a:0")
    assert proc.returncode == 2 and "bad host 'a:0'" in proc.stderr
