"""A client's connection to the controller: one authenticated socket.

``Session.send`` signs a request and writes it; replies arrive in any order and are
kept by request id until ``Session.wait`` asks for them.  The socket is non-blocking
and every wait goes through ``select`` with a deadline, so nothing blocks forever: a
dead controller shows up as end-of-stream (or, across a network, as TCP keepalive
failure within about 20 s) and raises ClusterError.
"""
from __future__ import annotations

import os
import select
import warnings
import socket
import threading
import time
import uuid
import weakref
from typing import Any

from .. import connection, settings
from ..protocol import wire
from ..protocol.handshake import client_handshake
from ..errors import (CONTROLLER_ERRORS, ClusterError, KernelError, ProtocolError,
                      WalltimeWarning)

ACK_NOW = 1 << 20   # results this large are acknowledged at once, so the controller frees them
# A connection lost this close to the job's end time (or after) was the scheduler's kill: the
# job script takes its end time a moment after the job really started.
WALLTIME_SLACK = 60.0


class Session:
    """One connection to a controller; reconnects once, with the same client id, if the
    link broke (the controller keeps results for a client that went away)."""

    def __init__(self, where: str | os.PathLike | None = None, *, timeout: float = 10.0,
                 sshserver: str | None = None) -> None:
        self.path = connection.resolve(where)
        self.info = connection.load(where)
        self.timeout = timeout
        self.sshserver = sshserver or self.info.sshserver
        self.client_id = uuid.uuid4().hex
        self.replies: dict[str, wire.Message] = {}
        self.listeners: dict[str, Any] = {}   # request id -> called with streamed output
        self.pending_acks: list[str] = []     # results received, to acknowledge
        self.tunnel = None
        self.sock: socket.socket | None = None
        self.warned: set[float] = set()   # the walltime warnings given (their lead times)
        self.walltime_timer: threading.Timer | None = None
        self.welcome = self.connect()

    # -- connecting ------------------------------------------------------------------

    def endpoint(self) -> tuple[str, int]:
        if not self.sshserver:
            return self.info.address, self.info.port
        if self.tunnel is None or self.tunnel.process.poll() is not None:
            from .tunnel import open_tunnel
            self.tunnel = open_tunnel(self.sshserver, self.info.address, self.info.port,
                                      timeout=self.timeout)
        return self.tunnel.host, self.tunnel.port

    def connect(self) -> dict:
        """Connect, authenticate, say hello; returns the controller's description."""
        address, port = self.endpoint()
        try:
            sock = socket.create_connection((address, port), timeout=self.timeout)
        except OSError as e:
            raise ClusterError(
                f"cannot reach the controller at {address}:{port} named in {self.path}: "
                f"{e.strerror or e}. " + (self.walltime_ended() or
                "The cluster is not running (a stale connection file?); start one with "
                "`pympec cluster start -n 4`")) from None
        try:
            send_key, recv_key, mac = client_handshake(sock, self.info.key_bytes, self.timeout)
        except OSError as e:   # e.g. reset by a controller that is going down
            sock.close()
            if isinstance(e, ClusterError):   # already says what went wrong
                raise
            raise ClusterError(
                f"the controller at {address}:{port} (cluster {self.info.cluster_id}) "
                f"dropped the connection during the handshake: {e}") from None
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        keepalive(sock)
        sock.setblocking(False)
        self.sock = sock
        self.reader = wire.MessageReader(recv_key, mac)
        self.writer = wire.MessageWriter(send_key, mac)
        return self.call("hello", client=self.client_id)

    def close(self) -> None:
        if self.walltime_timer is not None:
            self.walltime_timer.cancel()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.tunnel is not None:
            self.tunnel.process.terminate()
            self.tunnel = None

    def broken(self, error: Exception) -> ClusterError:
        self.close()
        return ClusterError(
            f"lost the connection to the controller at {self.info.address}:{self.info.port} "
            f"(cluster {self.info.cluster_id}): {error}. " + (self.walltime_ended() or
            f"The cluster has stopped or an engine died; its logs are in "
            f"{connection.paths.log_dir()}"))

    # -- requests and replies ------------------------------------------------------------

    def send(self, header: dict, frames: list = ()) -> str:
        """Sign and write one request; returns its id.  Blocks until written."""
        if self.sock is None:
            self.connect()
        self.warn_walltime()
        header.setdefault("id", uuid.uuid4().hex)
        if self.pending_acks:
            header["acks"], self.pending_acks = self.pending_acks, []
        self.writer.queue(header, frames)
        try:
            while not self.writer.flush(self.sock):
                self._select(write=True, timeout=None)
                self.receive()   # keep reading, so neither side's buffers fill up
        except ClusterError as e:
            raise self.broken(e) from None
        return header["id"]

    def warn_walltime(self) -> None:
        """Warn when the cluster's batch job comes within one of the lead times of
        ``PYMPEC_WALLTIME_WARNING`` (600 and 120 s by default) of its walltime, once per
        lead time, and arm a timer for the next, so that the warning comes on time even
        while no request is sent. Never blocks."""
        end = self.info.end_time
        if end is None:
            return
        left = end - time.time()
        leads = [lead for lead in settings.WALLTIME_WARNING.get() if lead not in self.warned]
        if any(left < lead for lead in leads):
            self.warned.update(lead for lead in leads if left < lead)
            warnings.warn(f"the cluster's batch job reaches its walltime in {max(left, 0):.0f} s "
                          f"and will be killed then: pull the results you need now",
                          WalltimeWarning, stacklevel=4)
        later = [lead for lead in leads if left >= lead]
        if later and self.walltime_timer is None:
            self.walltime_timer = threading.Timer(left - max(later), _warn_later,
                                                  (weakref.ref(self),))
            self.walltime_timer.daemon = True   # never keeps the program alive
            self.walltime_timer.start()

    def walltime_ended(self) -> str:
        """For an error on a lost connection: a sentence saying the batch job's walltime
        ended, when it is (nearly) past the job's end time; else ''."""
        end = self.info.end_time
        if end is None or time.time() < end - WALLTIME_SLACK:
            return ""
        return (f"The cluster's batch job reached its walltime at "
                f"{time.strftime('%H:%M:%S', time.localtime(end))} and the scheduler ended it")

    def receive(self) -> bool:
        """Read whatever has arrived; True if any reply came."""
        try:
            messages = self.reader.read(self.sock)
        except (ClusterError, ProtocolError) as e:
            raise self.broken(e) from None
        now = []
        for message in messages:
            if "stream" in message.header:   # output of a call still running
                listener = self.listeners.get(message.header["id"])
                if listener is not None:
                    listener(message.header["stream"])
                continue
            self.replies[message.header.get("id")] = message
            if "results" in message.header:   # kept by the controller until acknowledged:
                if len(message.payload) >= ACK_NOW:   # a large one is acked at once,
                    now.append(message.header["id"])
                else:                                 # small ones with the next request
                    self.pending_acks.append(message.header["id"])
        if now:
            self.writer.queue({"verb": "ack", "acks": now})
            self.flush_quietly()
        return bool(messages)

    def flush_quietly(self) -> None:
        """Write what the socket takes now; the rest goes with the next write."""
        try:
            self.writer.flush(self.sock)
        except ClusterError as e:
            raise self.broken(e) from None

    def wait(self, request_id: str, timeout: float | None = None) -> wire.Message | None:
        """The reply to ``request_id``; None if it is not there within ``timeout``
        seconds (None waits as long as the cluster lives)."""
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        # Poll without sleeping at first: a short call's reply then costs no wake-up.
        spin_until = now + settings.CLIENT_SPIN.get()
        while request_id not in self.replies:
            if self.sock is None:
                self.connect()   # the controller kept our results while we were away
                continue
            now = time.monotonic()
            left = None if deadline is None else deadline - now
            if left is not None and left <= 0:
                self.receive()
                break
            if self.writer.pending:
                self.flush_quietly()
            if now < spin_until:
                if not self.receive():
                    os.sched_yield()
            elif self._select(write=False, timeout=left):
                self.receive()
        message = self.replies.pop(request_id, None)
        if message is not None and "error" in message.header:
            error = message.header["error"]
            raise CONTROLLER_ERRORS.get(error["ename"], KernelError)(error["evalue"])
        return message

    def _select(self, write: bool, timeout: float | None) -> bool:
        r, w, _ = select.select([self.sock], [self.sock] if write else [], [],
                                60.0 if timeout is None else timeout)
        return bool(r or w)

    def call(self, verb: str, **fields: Any) -> Any:
        """A controller-level request (no engine involved): its value."""
        request_id = self.send({"verb": verb, **fields})
        message = self.wait(request_id, timeout=max(self.timeout, 30.0))
        if message is None:
            raise ClusterError(f"the controller did not answer {verb!r} in time")
        return message.header.get("value")


def _warn_later(session_ref: "weakref.ref[Session]") -> None:
    """The walltime timer: warn for a session still open (and arm the next timer)."""
    session = session_ref()
    if session is not None and session.sock is not None:
        session.walltime_timer = None
        session.warn_walltime()


def keepalive(sock: socket.socket) -> None:
    """Let the kernel notice a vanished peer (a crashed node) within about 20 s."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 3), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
