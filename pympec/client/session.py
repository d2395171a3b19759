"""A client's connection to the controller: one authenticated socket.

    send(request) ──signed──> controller           outstanding: ids sent, not answered
    send(request, now=False): queued; the outbox thread writes it FLUSH_AFTER s later,
             with whatever else came meanwhile (and the batchers' work: task
             submissions), in one write; a blocking wait writes everything first
    wait(id) <── replies, in any order, kept by id until asked for
             ── silence: a ping every PING_EVERY s; none answered for
                PYMPEC_CONTROLLER_TIMEOUT s ──> ClusterError (frozen, or unreachable)
    the link broke ──> ClusterError; the next wait reconnects with the same client id:
             the controller sends again what it kept (every reply not acknowledged:
             results, and its own answers), and says which outstanding
             requests it never received (they raise RequestLost: they did not run)

The socket is non-blocking and every wait goes through ``select`` with a bound, so
nothing blocks forever: a dead controller shows up as end-of-stream, a frozen one or a
broken network as silence.
"""
from __future__ import annotations

import collections
import os
import select
import socket
import threading
import time
import warnings
import weakref
from typing import Any

from .. import connection, settings
from ..protocol import tls, wire
from ..protocol.handshake import client_handshake
from ..errors import (CONTROLLER_ERRORS, ClusterError, KernelError, ProtocolError,
                      RequestLost, WalltimeWarning)

ACK_NOW = 1 << 20   # results this large are acknowledged at once, so the controller frees them
PING_EVERY = 5.0    # seconds of silence from the controller before the client pings it
FLUSH_AFTER = 1e-3  # seconds a request sent with now=False waits for others to join it
MAX_IDS = 1 << 16   # ids in one request's list (acks, a result question): the registry's bound


class Outbox(threading.Thread):
    """Writes what the session queued without writing it, FLUSH_AFTER seconds after it
    was armed, so requests made in a burst (``tc.run`` in a loop, ``block=False`` calls)
    go out together instead of one write and one controller wake-up each.

    It holds its session strongly only while it has something to write (``holding``),
    so a call made just before its client is dropped still goes out; after that, a
    session dropped without ``close()`` is collected (its socket closes) and the
    thread ends.  An error while writing (a bug, or work a
    batcher could not encode) is kept in ``session.outbox_error`` for the caller's
    next write to raise; the thread goes on."""

    def __init__(self, session: "Session") -> None:
        super().__init__(name="pympec-outbox", daemon=True)
        self.session = weakref.ref(session)
        self.holding: Session | None = None   # set by later(): there is work to write
        self.armed = threading.Event()
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.holding = None
        self.armed.set()

    def run(self) -> None:
        while not self.closed:
            self.armed.wait()
            self.armed.clear()
            time.sleep(FLUSH_AFTER)
            session = self.session()
            if session is None:
                return
            try:
                session.flush_later()
            except Exception as e:
                session.outbox_error = e
            if not self.armed.is_set():   # (flush_later re-arms while bytes remain)
                self.holding = None
            del session   # (no strong reference while waiting)

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
        self.client_id = new_id()
        self.replies: dict[str, wire.Message] = {}
        self.taken: collections.OrderedDict[str, None] = collections.OrderedDict()
        # (the last MAX_IDS replies taken: one sent again after a reconnect, its
        # acknowledgement lost with the link, is acknowledged again, not kept)
        self.listeners: dict[str, Any] = {}   # request id -> called with streamed output
        self.pending_acks: list[str] = []     # results received, to acknowledge
        self.outstanding: dict[str, None] = {}   # requests sent, not answered yet
        self.lost: dict[str, str] = {}        # requests the controller never received: why
        self.pings: set[str] = set()
        self.heard = self.pinged = time.monotonic()   # the controller's last sign of life
        self.lock = threading.RLock()         # the writer: the caller's thread and the outbox
        self.outbox: Outbox | None = None
        self.outbox_error: Exception | None = None   # raised by the next write
        self.batchers: list[Any] = []         # called (locked) before each write: queue work
        self.batching = False
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
            if self.info.tls_fingerprint:
                sock = tls.wrap_client(sock, self.info.tls_fingerprint, self.timeout,
                                       f"the controller at {address}:{port}")
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
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        self.reader = wire.MessageReader(recv_key, mac)
        self.writer = wire.MessageWriter(send_key, mac)
        self.heard = time.monotonic()
        return self.call("hello", client=self.client_id)

    def reconnect(self) -> None:
        """Connect again after the link broke, and learn which outstanding requests the
        controller never received: waiting on them raises RequestLost.  If this fails
        or is interrupted, the socket is closed, so the next call starts it over."""
        try:
            self.connect()   # hello: the controller sends again what it kept for us
            ids = [i for i in self.outstanding if i not in self.replies]
            for start in range(0, len(ids), MAX_IDS):
                found = self.call("result", ids=ids[start:start + MAX_IDS], resend=False)
                for result_id, why in found["unknown"].items():
                    self.lost[result_id] = why
        except BaseException:
            self.disconnect()
            raise

    def usable(self) -> bool:
        """Whether the link is up and its stream whole.  A read or write that an
        interrupt (Ctrl-C) cut short leaves the stream in an unknown state, even when a
        second interrupt kept the handler from dropping it: then it is dropped here, and
        the caller reconnects (what the controller kept comes again).  Only the thread
        that reads may ask (to any other, a read in progress looks unfinished)."""
        if self.sock is not None and (self.reader.interrupted or self.writer.interrupted):
            self.disconnect()
        return self.sock is not None

    def disconnect(self) -> None:
        """Close the socket (the next request or wait connects again)."""
        with self.lock:
            # forgotten before it is closed: an interrupt in between leaves no closed
            # socket in use (the dropped one is closed when collected)
            sock, self.sock = self.sock, None
            if sock is not None:
                sock.close()

    def close(self) -> None:
        """Close the connection for good, once what is queued is written (calls sent
        without blocking go on): the socket, the outbox thread, the walltime warning's
        timer, the tunnel.  The replies taken are acknowledged, so the controller frees
        them now.  Raises an error the outbox thread kept, once all is closed."""
        if self.walltime_timer is not None:
            self.walltime_timer.cancel()
        error, self.outbox_error = self.outbox_error, None
        try:
            if self.sock is not None:
                with self.lock:
                    for start in range(0, len(self.pending_acks), MAX_IDS):
                        self.writer.queue({"verb": "ack",
                                           "acks": self.pending_acks[start:start + MAX_IDS]})
                    self.pending_acks = []
                self.write_out()
        except ClusterError:
            pass
        finally:
            self.disconnect()
            if self.outbox is not None:
                self.outbox.close()
                self.outbox = None
            if self.tunnel is not None:
                self.tunnel.process.terminate()
                self.tunnel = None
        if error is not None:
            raise error

    def broken(self, error: Exception) -> ClusterError:
        self.disconnect()
        return ClusterError(
            f"lost the connection to the controller at {self.info.address}:{self.info.port} "
            f"(cluster {self.info.cluster_id}): {error}. " + (self.walltime_ended() or
            f"The cluster has stopped or an engine died; its logs are in "
            f"{connection.paths.log_dir()}"))

    # -- requests and replies ------------------------------------------------------------

    def send(self, header: dict, frames: list = (), now: bool = True) -> str:
        """Sign and queue one request; returns its id.  With ``now``, write it (and all
        queued before it), blocking as long as the controller takes bytes or answers
        pings; otherwise the outbox writes it within about FLUSH_AFTER seconds.  Raises
        ClusterError when the controller does neither for PYMPEC_CONTROLLER_TIMEOUT
        seconds, or the link breaks."""
        with self.lock:
            if not self.usable():
                self.reconnect()
            self.queue(header, frames)
            if now:
                self.write_out()
            else:
                self.later()
        return header["id"]

    def queue(self, header: dict, frames: list = ()) -> None:
        """Sign and queue a request (locked): it goes with the next write, after what
        the batchers held (work asked for earlier goes first).  A header JSON cannot
        hold raises (TypeError, ValueError) and changes nothing."""
        self.run_batchers()
        self.warn_walltime()
        if "id" not in header:
            header["id"] = new_id()
        acks = self.pending_acks[:MAX_IDS]
        if acks:
            header["acks"] = acks
        try:
            self.writer.queue(header, frames)
        except BaseException:
            header.pop("acks", None)
            raise
        del self.pending_acks[:len(acks)]
        if header["verb"] != "ack":
            self.outstanding[header["id"]] = None

    def run_batchers(self) -> None:
        """Let the batchers queue the work they hold (once: they queue through here)."""
        if not self.batching:
            self.batching = True
            try:
                for batch in self.batchers:
                    batch()
            finally:
                self.batching = False

    def later(self) -> None:
        """Have the outbox write what is queued (and what the batchers queue) soon."""
        if self.outbox is None:
            self.outbox = Outbox(self)
            self.outbox.start()
            weakref.finalize(self, self.outbox.close)   # dropped unclosed: the thread ends
        self.outbox.holding = self
        self.outbox.armed.set()

    def write_out(self) -> None:
        """Write everything queued (the batchers' work first), as :meth:`send` does."""
        with self.lock:
            if self.outbox_error is not None:
                error, self.outbox_error = self.outbox_error, None
                raise error
            if not self.usable():
                self.reconnect()
            self.fresh_silence()
            self.run_batchers()
            try:
                while not self.writer.flush(self.sock):
                    sent = self.writer.sent
                    if self._select(write=True, timeout=self.ping_every()):
                        self.receive()   # keep reading: neither side's buffers fill up
                    if self.writer.sent != sent:
                        self.heard = time.monotonic()   # it takes our bytes: it lives
                    self.check_alive()
            except ClusterError as e:
                raise self.broken(e) from None
            except BaseException:   # (Ctrl-C) a message may be half written: the stream
                self.disconnect()   # is unusable; the controller drops the half, and
                raise               # the next call reconnects (the half is RequestLost)

    def flush_later(self) -> None:
        """The outbox's turn (in its thread): the batchers' work, and as much as the
        socket takes now; the rest at the next turn or the next write.  A broken link
        is left for the caller's next wait to find and report."""
        with self.lock:
            # (not usable(): the caller's thread may be inside a read, which counts as
            # unfinished until it returns; that thread drops a stream cut short)
            if self.sock is None or self.writer.interrupted:
                return
            try:
                self.run_batchers()
                if not self.writer.flush(self.sock):
                    self.later()
            except ClusterError:
                self.disconnect()

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
        """Read whatever has arrived; True if any reply came.  Output of running calls
        goes to their listeners once every reply read is stored: a listener that raises
        (a ``stream=`` callback, Ctrl-C while printing) loses no reply, and its error
        comes out of this call."""
        try:
            messages = self.reader.read(self.sock)
        except (ClusterError, ProtocolError) as e:
            raise self.broken(e) from None
        except BaseException:   # (Ctrl-C) the reader may have lost its place in the
            self.disconnect()   # stream: the next call reconnects, and what the
            raise               # controller kept for us comes again
        if messages:
            self.heard = time.monotonic()
        now, output = [], []
        for message in messages:
            if message.header.get("id") in self.pings:
                self.pings.discard(message.header["id"])
                continue
            if "stream" in message.header:   # output of a call still running
                listener = self.listeners.get(message.header["id"])
                if listener is not None:
                    output.append((listener, message.header["stream"]))
                continue
            if message.header.get("id") in self.taken:   # (see Session.taken)
                self.pending_acks.append(message.header["id"])
                continue
            self.replies[message.header.get("id")] = message
            if "error" not in message.header:   # kept by the controller until acked:
                if len(message.payload) >= ACK_NOW:   # a large one is acked at once,
                    now.append(message.header["id"])
                else:                                 # small ones with the next request
                    self.pending_acks.append(message.header["id"])
        if now:
            with self.lock:
                self.writer.queue({"verb": "ack", "acks": now})
                self.flush_quietly()
        for listener, stream in output:
            listener(stream)
        return bool(messages)

    def flush_quietly(self) -> None:
        """Write what the socket takes now; the rest goes with the next write."""
        with self.lock:
            try:
                self.writer.flush(self.sock)
            except ClusterError as e:
                raise self.broken(e) from None
            except BaseException:   # (Ctrl-C) see write_out
                self.disconnect()
                raise

    def wait(self, request_id: str, timeout: float | None = None) -> wire.Message | None:
        """The reply to ``request_id``; None if it is not there within ``timeout``
        seconds (None: as long as the controller lives).

        Raises the controller's error for the request (rebuilt by name), RequestLost for
        a request the controller never received, and ClusterError when the link breaks
        or the controller stays silent for PYMPEC_CONTROLLER_TIMEOUT seconds."""
        if request_id not in self.replies:
            self.write_out()   # what waits to be written goes first: it may be awaited
        self.fresh_silence()
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        # Poll without sleeping at first: a short call's reply then costs no wake-up.
        # Not while many others are in flight: replies then come in a stream, and a
        # spinning client takes a core from the ranks that make them.
        in_flight = len(self.outstanding) - len(self.replies)
        spin = settings.CLIENT_SPIN.get() if in_flight <= SPIN_IN_FLIGHT else 0.0
        spin_until = now + spin
        while request_id not in self.replies:
            if request_id in self.lost:
                self.outstanding.pop(request_id, None)
                raise RequestLost(f"request {request_id} was lost with the connection "
                                  f"before the controller read it; it did not run "
                                  f"({self.lost.pop(request_id)})")
            if not self.usable():
                self.reconnect()   # the controller kept our results while we were away
                continue
            now = time.monotonic()
            left = None if deadline is None else deadline - now
            if left is not None and left <= 0:
                self.receive()
                break
            self.check_alive()
            if self.writer.pending:
                self.flush_quietly()
            if now < spin_until:   # a look at the socket is cheaper than a failing read
                if self._select(write=False, timeout=0):
                    self.receive()
                else:
                    os.sched_yield()
            elif self._select(write=False, timeout=min(self.ping_every(), left or PING_EVERY)):
                self.receive()
        return self.take(request_id)

    def take(self, request_id: str) -> wire.Message | None:
        """The reply to ``request_id`` if it is here (raising the error it carries)."""
        message = self.replies.pop(request_id, None)
        if message is None:
            return None
        self.outstanding.pop(request_id, None)
        self.taken[request_id] = None
        if len(self.taken) > MAX_IDS:
            self.taken.popitem(last=False)
        if "error" in message.header:
            error = message.header["error"]
            raise CONTROLLER_ERRORS.get(error["ename"], KernelError)(error["evalue"])
        return message

    def fresh_silence(self) -> None:
        """Silence counts from now on, as a wait or write begins: an idle connection has
        heard nothing, rightly (the first check pings at once if it was quiet, so a dead
        controller still shows quickly)."""
        self.heard = max(self.heard, time.monotonic() - self.ping_every())

    @staticmethod
    def ping_every() -> float:
        return min(PING_EVERY, settings.CONTROLLER_TIMEOUT.get() / 3)

    def check_alive(self) -> None:
        """Ping the controller after PING_EVERY seconds of silence (less if the timeout
        is short); raise ClusterError after PYMPEC_CONTROLLER_TIMEOUT seconds of it."""
        now = time.monotonic()
        silent = now - self.heard
        if silent > settings.CONTROLLER_TIMEOUT.get():
            self.disconnect()
            raise ClusterError(
                f"the controller at {self.info.address}:{self.info.port} (cluster "
                f"{self.info.cluster_id}) has sent nothing for {silent:.0f} s and answers no "
                f"ping: " + (self.walltime_ended() or
                             "it is frozen or overloaded, or the network is down "
                             "(PYMPEC_CONTROLLER_TIMEOUT). Calls may still run there: wait "
                             "again to reconnect and fetch their results"))
        if silent >= self.ping_every() and now - self.pinged >= self.ping_every():
            self.pinged = now
            ping = f"ping-{new_id()}"
            self.pings.add(ping)
            with self.lock:
                self.writer.queue({"verb": "ping", "id": ping})
                self.flush_quietly()

    def _select(self, write: bool, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the socket to be readable (or writable,
        with ``write``); True if it is.  (poll, not select: any descriptor number.)"""
        if wire.buffered(self.sock):
            return True
        self.poller.modify(self.sock, select.POLLIN | (select.POLLOUT if write else 0))
        events = self.poller.poll(max(0, timeout) * 1000)
        if events and events[0][1] & ~select.POLLOUT:
            self.heard = time.monotonic()
        return bool(events)

    def call(self, verb: str, **fields: Any) -> Any:
        """A controller-level request (no engine involved), answered at once: its value.
        Raises what :meth:`wait` raises."""
        request_id = self.send({"verb": verb, **fields})
        return self.wait(request_id).header.get("value")


def _warn_later(session_ref: "weakref.ref[Session]") -> None:
    """The walltime timer: warn for a session still open (and arm the next timer)."""
    session = session_ref()
    if session is not None and session.sock is not None:
        session.walltime_timer = None
        session.warn_walltime()


SPIN_IN_FLIGHT = 8   # requests awaited at most, for a wait to spin first (see wait)


def new_id() -> str:
    """A new request or client id: 128 random bits, as hex."""
    return os.urandom(16).hex()


def keepalive(sock: socket.socket) -> None:
    """Let the kernel notice a vanished peer (a crashed node) within about 20 s."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 3), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
