"""Shared fixtures and helpers: one real cluster (mpiexec, real sockets) for the whole session.

The suite never touches the user's pympec directory (``~/.pympec`` or ``$PYMPEC_DIR``): PYMPEC_DIR
is set, whatever it was, to a fresh temporary directory for the session, which clusters started as
subprocesses inherit, and which is removed at the end. A test that needs a directory of its own (its
own default profile) takes the ``pympec_dir`` fixture.
"""
from __future__ import annotations

import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import pytest

_USER_PYMPEC_DIR = os.environ.get("PYMPEC_DIR")
SESSION_DIR = tempfile.mkdtemp(prefix="pympec-tests-")
os.environ["PYMPEC_DIR"] = SESSION_DIR      # before pympec is imported

import pympec  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repository root
from benchmarks.common import cpu_seconds  # noqa: E402  (one /proc reader, the benchmarks')
from pympec import client  # noqa: E402
from pympec.protocol import handshake, wire  # noqa: E402

ENGINES = 4


def pytest_unconfigure(config):
    shutil.rmtree(SESSION_DIR, ignore_errors=True)
    if _USER_PYMPEC_DIR is None:
        os.environ.pop("PYMPEC_DIR", None)
    else:
        os.environ["PYMPEC_DIR"] = _USER_PYMPEC_DIR


def wait_for(predicate: Callable[[], Any], what: str | Callable[[], str],
             timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Call ``predicate`` every ``interval`` s until it returns something true, and return that.

    After ``timeout`` s, fails with an AssertionError saying what was awaited: ``what``, or, if it
    is a function, what it returns then (for a message showing the state at that time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what() if callable(what) else what}")
        time.sleep(interval)


def first_line(proc: subprocess.Popen, what: str, timeout: float = 60.0, stream=None) -> str:
    """The next line ``proc`` writes to its stdout (or ``stream``, another of its pipes),
    waiting at most ``timeout`` s.  Read by a thread: a line that arrived with the one
    before waits in the pipe's buffer, out of ``select``'s sight, and half a line would
    block a plain ``readline``."""
    stream = stream or proc.stdout
    line: list = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)   # (on a timeout the thread ends when the test kills ``proc``)
    assert line, f"waited {timeout} s for {what}"
    return line[0]


def hung_up(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True when the peer closes the connection (cleanly, or with a reset; inside TLS,
    also with a TLS alert) within ``timeout``; what it sent before (a reply to hello)
    is read and dropped."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sock.recv(1 << 16) == b"":
                return True
    except (ConnectionResetError, ssl.SSLError):
        return True
    except socket.timeout:
        pass
    return False


def hello_behind_the_answer(sock, key: bytes) -> dict | None:
    """On a fresh connection to a controller (``sock``, plain or inside TLS, its greeting
    not read yet), send the handshake's answer and a hello right behind it in one write,
    as a client may, and check the controller's proof.  Returns the header of the reply
    to hello, or None if none came within 5 s."""
    greeting = handshake.recv_exactly(sock, handshake.GREETING_SIZE)
    client = handshake.client_for(sock, key)
    answer = client.answer(greeting)
    c2s, _ = handshake.session_keys(key, greeting[len(handshake.GREETING):-1],
                                    answer[:handshake.NONCE])
    writer = wire.MessageWriter(c2s, client.mac)
    writer.queue({"verb": "hello", "client": os.urandom(8).hex(), "id": "h"})
    a, b = socket.socketpair()
    with a, b:
        assert writer.flush(a)
        hello = b.recv(1 << 16)
    sock.sendall(answer + hello)
    assert client.check(handshake.recv_exactly(sock, handshake.TAG))
    sock.setblocking(False)
    reader, deadline = wire.MessageReader(client.s2c, client.mac), time.monotonic() + 5
    while time.monotonic() < deadline:
        select.select([sock], [], [], 0.1)
        for reply in reader.read(sock):
            return reply.header
    return None


def running_on(mec, engine: int) -> str | None:
    """What ``engine`` runs now (the call's description), or None when it is idle."""
    pending = dict(mec.queue_status(targets=engine))[engine]["pending"]
    return None if pending == "None" else pending   # (IPython 0.10 showed idle as 'None')


@pytest.fixture(scope="session")
def cluster():
    """A running cluster of ENGINES engines, stopped at the end of the session."""
    with pympec.Cluster(n=ENGINES, profile="tests", timeout=120) as started:
        yield started


@pytest.fixture
def mec(cluster):
    """A fresh MultiEngineClient; engines are reset before the test."""
    c = cluster.client()
    c.reset()
    yield c
    c.close()


@pytest.fixture
def private_cluster(tmp_path):
    """A cluster of 2 engines of the test's own, for tests that break or stop it."""
    with pympec.Cluster(n=2, connection_file=tmp_path / "cluster.json", timeout=120) as c:
        yield c


@pytest.fixture
def pympec_dir(tmp_path, monkeypatch):
    """A pympec directory (PYMPEC_DIR) of the test's own, so its default profile is the test's."""
    path = tmp_path / "pympec"
    monkeypatch.setenv("PYMPEC_DIR", str(path))
    return path


@pytest.fixture
def default_profile(cluster, pympec_dir):
    """A pympec directory of the test's own whose default profile is the session cluster, so a
    plain ``client.MultiEngineClient()`` finds it; engines are reset."""
    security = pympec_dir / "security"
    security.mkdir(parents=True, mode=0o700)
    shutil.copy(cluster.connection_file, security / "cluster-default.json")
    (security / "cluster-default.json").chmod(0o600)
    with cluster.client() as mec:
        mec.reset()
    return pympec_dir


__all__ = ["client", "ENGINES", "wait_for", "first_line", "running_on", "cpu_seconds", "hung_up",
           "hello_behind_the_answer"]
