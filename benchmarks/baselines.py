"""Same-run baselines from Python alone: NumPy memcpy, TCP loopback, TLS loopback.

TCP loopback is the ceiling for any client-controller transfer, since every byte the
client sends crosses one socket; memcpy is the cost of touching the bytes once; TLS
loopback (TLS 1.3 as ``--tls`` sets it up) is the ceiling with ``--tls``.
"""
from __future__ import annotations

import socket
import threading
import time

import numpy as np

from .common import best, median, p99


def memcpy_rate(nbytes: int, repeat: int = 3) -> float:
    """Bytes per second of ``np.copyto`` between two preallocated, touched buffers."""
    src = np.ones(nbytes, np.uint8)
    dst = np.ones(nbytes, np.uint8)
    return nbytes / best(lambda: np.copyto(dst, src), repeat)


def _pair() -> tuple[socket.socket, socket.socket]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    a = socket.create_connection(listener.getsockname())
    b, _ = listener.accept()
    listener.close()
    for s in (a, b):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return a, b


def tls_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of TLS sockets, set up as pympec's --tls sets them up."""
    from pympec.protocol import tls
    server, _ = tls.server_context("benchmark")
    a, b = _pair()
    out: list = []
    done = threading.Thread(target=lambda: out.append(server.wrap_socket(b, server_side=True)))
    done.start()
    a = tls.client_context().wrap_socket(a)
    done.join()
    return a, out[0]


def tcp_rate(nbytes: int, repeat: int = 3, pair=_pair) -> float:
    """Bytes per second of one ``sendall`` of ``nbytes`` to a reader thread doing
    ``recv_into`` a preallocated buffer, over 127.0.0.1 (both release the GIL), on
    sockets from ``pair`` (TCP; ``tls_pair``: TLS)."""
    a, b = pair()
    src = memoryview(np.ones(nbytes, np.uint8))
    dst = memoryview(np.ones(nbytes, np.uint8))

    def reader() -> None:
        got = 0
        while got < nbytes:
            got += b.recv_into(dst[got:])

    def once() -> None:
        t = threading.Thread(target=reader)
        t.start()
        a.sendall(src)
        t.join()

    try:
        return nbytes / best(once, repeat)
    finally:
        a.close()
        b.close()


def tcp_round_trip(repeat: int = 500) -> tuple[float, float]:
    """(median, p99) seconds of a 64-byte ping-pong over 127.0.0.1 between two threads
    blocked in recv, as a client and a server process would be."""
    a, b = _pair()
    msg = b"x" * 64

    def echo() -> None:
        for _ in range(repeat + 20):
            data = b.recv(64)
            b.sendall(data)

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    times = []
    for i in range(repeat + 20):
        t0 = time.perf_counter()
        a.sendall(msg)
        a.recv(64)
        if i >= 20:
            times.append(time.perf_counter() - t0)
    t.join()
    a.close()
    b.close()
    return median(times), p99(times)
