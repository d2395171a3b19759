"""Doorbell: wake a sleeping rank on this host the moment there is MPI work for it.

MPI has no call that waits without spinning, so pympec's ranks poll MPI and sleep in
between (:mod:`pympec.protocol.backoff`).  Sleeping costs latency: a reply that lands just after
a rank went to sleep waits out the sleep.  A doorbell removes that cost without adding
idle CPU: each rank binds a Unix datagram socket (Linux abstract namespace, named by
cluster id and rank) and sleeps in ``select`` on it, with the backoff as the timeout.
Whoever just sent that rank an MPI message rings it: one byte, non-blocking, errors
ignored.

The doorbell only shortens sleeps; it never replaces the MPI poll.  A rank on another
host, or a system without abstract sockets, simply is not woken and polls as before.
A ring is never lost: the byte waits in the socket until the sleeper drains it, so a
ring between its poll and its sleep makes that sleep return at once.
"""
from __future__ import annotations

import os
import select
import socket
import time


def address(cluster_id: str, rank: int, bell: str = "") -> bytes:
    """The abstract socket name of a rank's doorbell; ``bell`` names a second one (an
    engine's interrupt listener has its own)."""
    return f"\0pympec-{cluster_id}-{rank}{bell}".encode()


class Doorbell:
    """One rank's doorbell socket, and the means to ring other ranks'."""

    def __init__(self, cluster_id: str | None, rank: int = 0, bell: str = "") -> None:
        """Bind this rank's doorbell (or its bell named ``bell``); with ``cluster_id``
        None, a bell-less sleeper."""
        self.cluster_id = cluster_id
        self.sock: socket.socket | None = None
        self._names: dict[tuple[int, str], bytes] = {}
        if cluster_id is None:
            return
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(address(cluster_id, rank, bell))
            sock.setblocking(False)
            self.sock = sock
        except (OSError, AttributeError):   # no abstract sockets here: plain sleeps
            self.sock = None

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def ring(self, rank: int, bell: str = "") -> None:
        """Wake ``rank`` (or its bell named ``bell``) if it sleeps on this host; never
        blocks, never raises."""
        if self.sock is None:
            return
        name = self._names.get((rank, bell))
        if name is None:
            name = self._names[rank, bell] = address(self.cluster_id, rank, bell)
        try:
            self.sock.sendto(b"!", name)
        except OSError:   # not on this host, not up yet, or its queue is full (rung)
            pass

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, or until rung; a 0 timeout just yields.
        True if rung: then reset the backoff, since MPICH may need a few dozen polls
        before the message that came with the ring shows up in ``Iprobe``."""
        if timeout <= 0:
            os.sched_yield()   # not time.sleep(0): that sleeps out the timer slack (~60 us)
            return False
        if self.sock is None:
            time.sleep(timeout)
            return False
        if select.select([self.sock], [], [], timeout)[0]:
            self.drain()
            return True
        return False

    def drain(self) -> None:
        """Discard pending rings."""
        try:
            while True:
                self.sock.recv(64)
        except (BlockingIOError, InterruptedError, OSError):
            pass

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
