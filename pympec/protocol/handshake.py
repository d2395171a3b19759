"""The challenge and response that opens every connection, both sides of it.

A connection proves that both sides know the cluster key before anything else is read::

    controller -> client    b"PYMPEC04" + snonce + offer       (32 random bytes; MACs it has)
    client -> controller    cnonce + choice + HMAC(key, b"client" + snonce + cnonce + offer + choice)
    controller -> client    HMAC(key, b"server" + snonce + cnonce + offer + choice)
                            (or it hangs up)

A controller started with ``--tls`` first sends ``TLS_GREETING`` in the clear, and all
of the above then runs inside TLS (:mod:`pympec.protocol.tls`), with two changes: both
proofs also cover the channel, the SHA-256 of the controller's TLS certificate (as the
controller knows it, and as the client saw it), so an answer made in one TLS channel is
worthless in another; and the controller also offers NO_TAGS, which the client picks,
leaving the integrity of each message to TLS's records (docs/security.md).

Each side then derives one key per direction from the cluster key and both nonces
(``session_keys``), and signs every message with them (:mod:`pympec.protocol.wire`).
Both proofs cover the offer and the choice, so nobody in between can downgrade the MAC.

Both sides are sans-IO objects, :class:`ServerHandshake` and :class:`ClientHandshake`:
they turn bytes received into bytes to send and never touch a socket, so the
controller's loop keeps its non-blocking reads and its deadline, and tests and test
vectors can run them on fixed nonces.  :func:`client_handshake` runs the client's side
on a blocking socket.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import ssl

from .wire import HMAC_SHA256, NO_TAGS, POLY1305, hmac_sha256, supported_macs
from ..errors import ClusterError, SecurityError

GREETING = b"PYMPEC04"    # the protocol version: 04 checks every request against the
                          # command registry (protocol.commands); 03 signed per segment
TLS_GREETING = b"PYMPECTL"   # instead, in the clear, from a controller started with --tls:
                             # TLS follows, and the greeting comes inside it (protocol.tls)
NONCE = 32
TAG = 32                  # handshake proofs: HMAC-SHA256
GREETING_SIZE = len(GREETING) + NONCE + 1   # the controller's greeting: version, snonce, offer
ANSWER = NONCE + 1 + TAG  # the client's answer: cnonce, chosen MAC, proof


def session_keys(key: bytes, snonce: bytes, cnonce: bytes) -> tuple[bytes, bytes]:
    """(client-to-controller key, controller-to-client key) for one connection."""
    return hmac_sha256(key, b"c2s", snonce, cnonce), hmac_sha256(key, b"s2c", snonce, cnonce)


def _nonce(given: bytes | None) -> bytes:
    if given is None:
        return secrets.token_bytes(NONCE)
    if len(given) != NONCE:
        raise ValueError(f"a nonce is {NONCE} bytes, not {len(given)}")
    return bytes(given)


class ServerHandshake:
    """The controller's side of one handshake, without I/O.

    Send ``greeting``, then ``feed`` the bytes received until ``done``.  Then, if ``ok``
    (the client proved it knows the key), send ``proof`` and sign messages with ``c2s``
    (client to controller), ``s2c`` (controller to client) and ``mac``; if not, hang up.
    No bytes a peer can send make it raise: a wrong or garbled answer is ``done`` and
    not ``ok``, and a short one leaves it waiting (the caller's deadline ends that).
    ``snonce`` defaults to 32 random bytes (pass one only for tests and test vectors);
    ``offer`` defaults to the MACs this process has.  Inside TLS, ``channel`` is the
    SHA-256 of the controller's certificate (32 bytes), which both proofs cover.
    """

    def __init__(self, key: bytes, offer: int | None = None, *,
                 snonce: bytes | None = None, channel: bytes = b"") -> None:
        self._key = key
        self._snonce = _nonce(snonce)
        self._offer = supported_macs() if offer is None else offer
        self._channel = channel
        self.greeting = GREETING + self._snonce + bytes([self._offer])
        self._answer = bytearray()
        self.done = self.ok = False
        self.proof: bytes | None = None
        self.c2s: bytes | None = None
        self.s2c: bytes | None = None
        self.mac: int | None = None

    @property
    def wanted(self) -> int:
        """How many more bytes the answer needs (0 once ``done``): read no more than
        this, and the bytes after the answer stay in the socket for the messages."""
        return ANSWER - len(self._answer)

    def feed(self, data: bytes) -> int:
        """Take bytes received from the client; returns how many were used, at most
        ``wanted`` (the rest come after the answer and are not the handshake's).  The
        call that completes the answer checks it and sets ``done`` and ``ok``."""
        if self.done:
            return 0
        used = bytes(data[:self.wanted])
        self._answer += used
        if not self.wanted:
            self.done = True
            self._check(bytes(self._answer))
        return len(used)

    def _check(self, answer: bytes) -> None:
        cnonce, choice, proof = answer[:NONCE], answer[NONCE], answer[NONCE + 1:]
        # only a MAC we offered, and one bit of it: the choice picks the tag size
        if choice not in (HMAC_SHA256, POLY1305, NO_TAGS) or not choice & self._offer:
            return
        transcript = (self._snonce, cnonce, bytes([self._offer, choice]), self._channel)
        if not hmac.compare_digest(proof, hmac_sha256(self._key, b"client", *transcript)):
            return
        self.ok, self.mac = True, choice
        self.proof = hmac_sha256(self._key, b"server", *transcript)
        self.c2s, self.s2c = session_keys(self._key, self._snonce, cnonce)


class ClientHandshake:
    """The client's side of one handshake, without I/O.

    ``answer(greeting)`` gives the bytes to send back; ``check(proof)`` says whether
    the controller proved it knows the key, and then ``c2s`` (client to controller),
    ``s2c`` (controller to client) and ``mac`` are set.  The client picks NO_TAGS, else
    Poly1305, when both sides have it.  ``macs`` (what this side can use) defaults to
    this process's, ``cnonce`` to 32 random bytes (pass them only for tests and test
    vectors).  Inside TLS, ``channel`` is the SHA-256 of the certificate the controller
    showed, which both proofs cover (see :func:`client_for`).
    """

    def __init__(self, key: bytes, *, macs: int | None = None,
                 cnonce: bytes | None = None, channel: bytes = b"") -> None:
        self._key = key
        self._macs = supported_macs() if macs is None else macs
        self._cnonce = _nonce(cnonce)
        self._channel = channel
        self._transcript: tuple[bytes, ...] | None = None
        self.c2s: bytes | None = None
        self.s2c: bytes | None = None
        self.mac: int | None = None

    def answer(self, greeting: bytes) -> bytes:
        """The answer to the controller's greeting (GREETING_SIZE bytes).

        Raises ClusterError when the greeting is not pympec's, or of another version.
        """
        version = greeting[:len(GREETING)]
        if version == TLS_GREETING:
            raise ClusterError(
                "the controller uses TLS (it was started with --tls), but the connection "
                "file has no certificate fingerprint to pin (tls_fingerprint): use the "
                "connection file that controller wrote")
        if version != GREETING and version[:6] == GREETING[:6] and len(version) == 8:
            raise ClusterError(
                f"the controller speaks pympec protocol {version[6:].decode(errors='replace')}"
                f" and this client {GREETING[6:].decode()}: run the same pympec version "
                f"on both sides")
        if version != GREETING or len(greeting) != GREETING_SIZE:
            raise ClusterError("the peer is not a pympec controller (bad greeting)")
        snonce, offer = greeting[len(GREETING):-1], greeting[-1]
        both = offer & self._macs
        choice = NO_TAGS if both & NO_TAGS else POLY1305 if both & POLY1305 else HMAC_SHA256
        self._transcript = (snonce, self._cnonce, bytes([offer, choice]), self._channel)
        self.mac = choice
        return self._cnonce + bytes([choice]) + hmac_sha256(self._key, b"client",
                                                             *self._transcript)

    def check(self, proof: bytes) -> bool:
        """Whether ``proof`` (the controller's reply to the answer) proves the key; if
        so, the session keys are set."""
        if self._transcript is None or not hmac.compare_digest(
                proof, hmac_sha256(self._key, b"server", *self._transcript)):
            return False
        snonce, cnonce = self._transcript[:2]
        self.c2s, self.s2c = session_keys(self._key, snonce, cnonce)
        return True


def client_for(sock: socket.socket, key: bytes) -> ClientHandshake:
    """The client's side of the handshake on ``sock``: on a TLS socket, bound to the
    certificate the controller showed, and able to leave the tags to TLS (NO_TAGS)."""
    if not isinstance(sock, ssl.SSLSocket):
        return ClientHandshake(key)
    channel = hashlib.sha256(sock.getpeercert(binary_form=True) or b"").digest()
    return ClientHandshake(key, macs=supported_macs() | NO_TAGS, channel=channel)


def client_handshake(sock: socket.socket, key: bytes,
                     timeout: float) -> tuple[bytes, bytes, int]:
    """Authenticate a freshly connected (blocking) socket; returns (send key, receive
    key, MAC kind).  Blocks for at most ``timeout`` seconds per read.

    Raises SecurityError when the controller rejects the key or cannot prove it knows it,
    and ClusterError when the peer is not a pympec controller or does not answer in time.
    On a TLS socket (:func:`pympec.protocol.tls.wrap_client`), see :func:`client_for`.
    """
    sock.settimeout(timeout)
    client = client_for(sock, key)
    try:
        greeting = recv_exactly(sock, len(GREETING))   # a TLS controller sends only this
        if greeting == GREETING:
            greeting += recv_exactly(sock, GREETING_SIZE - len(GREETING))
        sock.sendall(client.answer(greeting))
        try:
            proof = recv_exactly(sock, TAG)
        except ClusterError:   # the controller hangs up on a wrong answer
            raise SecurityError("the controller rejected this client's key: the connection "
                                "file does not belong to the running cluster") from None
        if not client.check(proof):
            raise SecurityError("the controller failed to prove it knows the key")
    except socket.timeout:
        raise ClusterError(f"no pympec handshake from the controller within {timeout:g} s") from None
    return client.c2s, client.s2c, client.mac


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes from a blocking socket; raises ClusterError when it closes first."""
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ClusterError("the controller closed the connection during the handshake")
        data += chunk
    return bytes(data)
