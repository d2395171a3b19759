"""The controller's door: accepting connections and authenticating them.

    listener ──accept()──> Connection, in the handshake (pympec.protocol.handshake);
                           with --tls, first b"PYMPECTL" in the clear and the TLS
                           handshake, non-blocking, then pympec's handshake inside TLS
        at most PYMPEC_MAX_UNAUTHENTICATED at once: past it, the oldest is dropped
        out of file descriptors (EMFILE, ENFILE...): the older half of the handshakes
        dropped, and no accepting for ACCEPT_PAUSE s, as asyncio does, while the clients
        already in are served
    Connection ──handshake──> proven: its reader is set, and the server reads its
                              messages from then on (the first must be hello)
                          └─> failed, or not done within HANDSHAKE_TIMEOUT (TLS's and
                              pympec's handshakes together): closed

Nothing a connection sends before it proves the key is parsed beyond the handshake.
Turned-away connections are counted, and logged as one summary line per LOG_EVERY
seconds, so a flood of them cannot flood the log.
"""
from __future__ import annotations

import collections
import errno
import logging
import selectors
import socket
import ssl
import time
from typing import Any, Callable

from .. import settings
from ..protocol import wire
from ..protocol.handshake import TLS_GREETING, ServerHandshake
from ..protocol.tls import ServerTLS

log = logging.getLogger("pympec.controller")

HANDSHAKE_TIMEOUT = 10.0
ACCEPT_PAUSE = 0.5      # seconds without accepting, once out of file descriptors
ACCEPT_BATCH = 64       # connections accepted per readable event
LOG_EVERY = 10.0        # seconds between summaries of turned-away connections
OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Connection:
    """One client socket: first the handshake (in TLS, with ``tls``), then signed
    messages both ways."""

    def __init__(self, sock: socket.socket, peer: Any, key: bytes,
                 early: Callable[[wire.Message], bool], tls: ServerTLS | None = None) -> None:
        self.early = early   # which requests to take before their payload has arrived
        self.peer = peer
        offer, channel = wire.supported_macs(), b""
        if tls is not None:   # the proofs bind the certificate; TLS's records may carry the tags
            offer, channel = offer | wire.NO_TAGS, bytes.fromhex(tls.fingerprint)
        self.auth = ServerHandshake(key, offer, channel=channel)
        self.deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        self.heard = time.monotonic()   # when bytes last came (a stalled message times out)
        self.reader: wire.MessageReader | None = None
        self.writer: wire.MessageWriter | None = None
        self.client: str | None = None
        self.paused = False   # not read from: too many of its replies wait unread
        sock.setblocking(False)
        self.tls_handshake = tls is not None   # still to do, before pympec's
        if tls is None:
            sock.send(self.auth.greeting)   # always fits a new socket's buffer
        else:
            sock.send(TLS_GREETING)
            sock = tls.context.wrap_socket(sock, server_side=True,
                                           do_handshake_on_connect=False)
        self.sock = sock

    def buffered(self) -> bool:
        """True when TLS holds bytes of this connection that ``select`` cannot see."""
        return wire.buffered(self.sock)

    def handshake(self) -> bool | None:
        """Go on with the handshake: TLS's (with --tls), then read the client's answer.
        True once authenticated, False while it goes on, None if it failed.  Raises
        SSLWantReadError or SSLWantWriteError while TLS waits for the socket."""
        if self.tls_handshake:
            self.sock.do_handshake()
            self.sock.send(self.auth.greeting)   # fits: the first bytes inside TLS
            self.tls_handshake = False
            return False
        # no more than the answer: what follows it is the first message, for the reader
        data = self.sock.recv(self.auth.wanted)
        if not data:
            return None
        self.auth.feed(data)
        if not self.auth.done:
            return False
        if not self.auth.ok:
            return None
        self.sock.send(self.auth.proof)
        self.reader = wire.MessageReader(self.auth.c2s, self.auth.mac, early=self.early)
        self.writer = wire.MessageWriter(self.auth.s2c, self.auth.mac)
        return True


class Door:
    """Accepts connections on ``listener`` and sees them through the handshake."""

    def __init__(self, listener: socket.socket, selector: selectors.BaseSelector, key: bytes,
                 early: Callable[[wire.Message], bool], tls: ServerTLS | None = None) -> None:
        self.listener, self.selector, self.key, self.early = listener, selector, key, early
        self.tls = tls   # with --tls: every connection runs TLS first
        self.handshaking: dict[Connection, None] = {}   # oldest first
        self.paused_until: float | None = None
        self.turned_away: collections.Counter = collections.Counter()
        self.logged = time.monotonic()
        selector.register(listener, selectors.EVENT_READ, self)

    def accept(self) -> None:
        """Accept what is waiting (a batch at a time), each into the handshake."""
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in OUT_OF_FDS:
                    self.pause(e)
                return   # (ECONNABORTED and such: that client gave up)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn = Connection(sock, peer, self.key, self.early, self.tls)
                self.selector.register(conn.sock, selectors.EVENT_READ, conn)
            except OSError:
                sock.close()
                continue
            self.handshaking[conn] = None
            if len(self.handshaking) > settings.MAX_UNAUTHENTICATED.get():
                self.turn_away(next(iter(self.handshaking)), "over PYMPEC_MAX_UNAUTHENTICATED")

    def pause(self, error: OSError) -> None:
        """Stop accepting for a while: out of file descriptors.  The older half of the
        connections in the handshake are dropped to make room (they would hold their
        files up to HANDSHAKE_TIMEOUT, as long as a client waits for the greeting), and
        the backlog keeps the waiting connections meanwhile."""
        self.selector.unregister(self.listener)
        self.paused_until = time.monotonic() + ACCEPT_PAUSE
        self.turned_away[f"accept() paused: {error.strerror}"] += 1
        for conn in list(self.handshaking)[:len(self.handshaking) // 2]:
            self.turn_away(conn, "dropped while out of files")

    def on_readable(self, conn: Connection) -> None:
        """The handshake of ``conn`` goes on (the socket is readable, or writable when
        TLS asked to write); once proven, it is admitted."""
        events = selectors.EVENT_READ
        try:
            done = conn.handshake()
        except ssl.SSLWantReadError:
            done = False
        except ssl.SSLWantWriteError:
            done, events = False, selectors.EVENT_READ | selectors.EVENT_WRITE
        except ssl.SSLError:
            self.turn_away(conn, "failed TLS handshake")
            return
        except OSError:
            done = None
        if done:
            del self.handshaking[conn]
        elif done is None:
            self.turn_away(conn, "failed authentication")
        elif self.selector.get_key(conn.sock).events != events:
            self.selector.modify(conn.sock, events, conn)

    def turn_away(self, conn: Connection, why: str) -> None:
        self.handshaking.pop(conn, None)
        self.turned_away[why] += 1
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def tick(self, now: float) -> None:
        """Time out handshakes, resume accepting, and log what was turned away."""
        for conn in [c for c in self.handshaking if now > c.deadline]:
            self.turn_away(conn, "no handshake in time")
        if self.paused_until is not None and now >= self.paused_until:
            self.paused_until = None
            self.selector.register(self.listener, selectors.EVENT_READ, self)
        if self.turned_away and now - self.logged >= LOG_EVERY:
            log.warning("turned away %d connections in the last %.0f s: %s",
                        sum(self.turned_away.values()), now - self.logged,
                        ", ".join(f"{n} {why}" for why, n in self.turned_away.items()))
            self.turned_away.clear()
            self.logged = now

    def close(self) -> None:
        for conn in list(self.handshaking):
            self.turn_away(conn, "shutting down")
        if self.paused_until is None:
            self.selector.unregister(self.listener)
        self.listener.close()
