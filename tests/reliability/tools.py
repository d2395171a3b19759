"""What the reliability tests share: a legitimate client that keeps working while others
attack the controller, a flood of connections, and the controller's log of turned-away
connections.

Run as a program, it floods: ``python tools.py ADDRESS PORT N`` opens N connections at
once, prints how long that took, waits until the controller has closed each one, and
prints what they received, as JSON.  (Tests run it in its own process, so that its
sockets take no file numbers of theirs.)
"""
from __future__ import annotations

import json
import re
import resource
import selectors
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from pympec import connection
from pympec.protocol.handshake import GREETING_SIZE

SUMMARY = re.compile(r"turned away (\d+) connections in the last \d+ s: (.*)")


class Legit(threading.Thread):
    """A legitimate client at work: pushes a fresh value to every engine and pulls it
    back, again and again, each call bounded by ``limit`` seconds; every ``fresh_every``
    rounds it also connects anew (the handshake, then get_ids).  What fails is kept,
    never raised: ``errors`` (the connected client's calls) and ``fresh_errors`` (new
    connections); ``slowest`` is the longest push and pull, ``slowest_fresh`` the
    longest new connection, in seconds."""

    def __init__(self, cluster, limit: float = 30.0, fresh_every: int = 10) -> None:
        super().__init__(daemon=True)
        self.cluster, self.limit, self.fresh_every = cluster, limit, fresh_every
        self.mec = cluster.client(timeout=limit)
        self.engines = len(self.mec.get_ids())
        self.rounds = self.fresh = 0
        self.slowest = self.slowest_fresh = 0.0
        self.errors: list[str] = []
        self.fresh_errors: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            started = time.monotonic()
            value = self.rounds
            try:
                self.mec.push({"legit": value}, block=False).get_result(timeout=self.limit)
                pulled = self.mec.pull("legit", block=False).get_result(timeout=self.limit)
                if pulled != [value] * self.engines:
                    self.errors.append(f"round {value}: pulled {pulled!r}")
            except Exception as e:
                self.errors.append(f"round {value}: {type(e).__name__}: {e}")
            self.slowest = max(self.slowest, time.monotonic() - started)
            if self.rounds % self.fresh_every == 0:
                started = time.monotonic()
                try:
                    with self.cluster.client(timeout=self.limit) as other:
                        assert other.get_ids() == list(range(self.engines))
                    self.fresh += 1
                except Exception as e:
                    self.fresh_errors.append(f"round {value}: {type(e).__name__}: {e}")
                self.slowest_fresh = max(self.slowest_fresh, time.monotonic() - started)
            self.rounds += 1

    def stop(self) -> "Legit":
        """Stop after the current round (bounded: each call is), and close the client."""
        self.done.set()
        self.join(timeout=4 * self.limit)
        assert not self.is_alive(), f"the legitimate client is stuck after {self.rounds} rounds"
        self.mec.close()
        return self


def rank0_log(cluster) -> Path:
    info = connection.load(cluster.connection_file)
    return connection.paths.log_dir() / f"pympec-{info.cluster_id}-rank0.log"


def turned_away(log: str) -> tuple[int, Counter]:
    """The controller's summaries of turned-away connections in ``log``: how many
    summary lines, and the connections they count, by reason."""
    lines, reasons = 0, Counter()
    for match in SUMMARY.finditer(log):
        lines += 1
        for part in match.group(2).split(", "):
            count, why = part.split(" ", 1)
            reasons[why] += int(count)
    return lines, reasons


def flood(address: tuple, n: int) -> list[socket.socket]:
    """``n`` sockets connecting to ``address``, opened as fast as this process can."""
    socks = []
    for _ in range(n):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(address)
        socks.append(sock)
    return socks


def closed_by_peer(socks: list[socket.socket], timeout: float) -> dict:
    """Wait (at most ``timeout`` s) until the controller has closed every socket; what
    they received: how many a greeting, more than a greeting, nothing; how many were
    closed, how many are still open."""
    selector = selectors.DefaultSelector()   # epoll: more than FD_SETSIZE sockets
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    got = {sock: b"" for sock in socks}
    closed = 0
    deadline = time.monotonic() + timeout
    while closed < len(socks) and time.monotonic() < deadline:
        for key, _ in selector.select(0.5):
            try:
                data = key.fileobj.recv(4096)
            except BlockingIOError:
                continue
            except OSError:           # reset, or refused
                data = b""
            got[key.fileobj] += data
            if not data:
                closed += 1
                selector.unregister(key.fileobj)
    selector.close()
    return {"greeted": sum(len(g) >= GREETING_SIZE for g in got.values()),
            "beyond the greeting": sum(len(g) > GREETING_SIZE for g in got.values()),
            "closed": closed, "open": len(socks) - closed}


if __name__ == "__main__":
    address, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, hard))
    started = time.monotonic()
    socks = flood((address, port), n)
    print(json.dumps({"opened in": time.monotonic() - started}), flush=True)
    fate = closed_by_peer(socks, timeout=float(sys.argv[4]))
    print(json.dumps(fate), flush=True)
