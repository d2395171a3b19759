"""Framed, authenticated messages over one TCP socket.

A connection opens with a challenge and response that proves both sides know the
cluster key (:mod:`pympec.protocol.handshake`); nothing else is read before it
succeeds.  It gives one key per direction, and every message after that is::

    +--------+------------+---------+---------------+--------+-----+-----------+-----+--
    | b"PMSG"| header len | nframes | frame lengths | header | tag | segment 1 | tag | ...
    |   4 B  |    u32     |   u32   | nframes x u64 |  JSON  |     | <= 1 MiB  |     |
    +--------+------------+---------+---------------+--------+-----+-----------+-----+--
     |<------------------ part 0 ------------------------>|      |<- part 1 ->|

    The frames, back to back, are cut into segments of SEGMENT bytes (the last may be
    shorter), and every part carries its own tag:

    tag = HMAC-SHA256(direction key, seq || part || the part's bytes), or, when both
          sides have the ``cryptography`` package and the frames hold 64 KiB or more,
          Poly1305 over the part's bytes under a one-time key
          HMAC-SHA256(direction key, b"poly1305" || seq || part)

    Inside TLS (``--tls``) the two sides may agree on NO_TAGS: no tags of pympec's own,
    since TLS's records carry theirs over every byte (docs/security.md says why that
    loses nothing); the layout is the same, with tags of length 0.

The sequence number counts messages per direction and is never sent, so a replayed,
dropped or reordered message fails the check; the part number binds each segment to
its place, and part 0 covers the lengths, so a message cannot be cut short or spliced.
Lengths are bounds-checked, each tag is checked before its bytes are used, and nothing
here unpickles.  Tags per segment let a receiver use a large message while it arrives:
the controller forwards each verified segment to the engines while the next one is
still on the wire (``MessageReader(early=...)``).

Frames are received straight into one preallocated buffer per message, each at a
64-byte aligned address, so NumPy arrays built on them are aligned and writable; they
are sent with ``sendmsg`` (scatter/gather I/O), so nothing is joined in memory.

Both work on TLS sockets too (``--tls``, :mod:`pympec.protocol.tls`).  An SSLSocket has no
``sendmsg``: the writer sends its large pieces one ``send`` each and joins only small
ones.  Non-blocking TLS says "would block" with SSLWantReadError/SSLWantWriteError, and
after SSLWantWriteError the same bytes must be offered again.  TLS decrypts a record at
a time, and bytes it has decrypted but not handed over are invisible to ``select``, so
the reader never stops with such bytes in the TLS buffer.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import itertools
import socket
import ssl
import struct
from typing import Any, Callable, Iterable, Iterator

from . import headers
from .buffers import ALIGN, allocate
from ..errors import ClusterError, ProtocolError
from .. import settings

MAGIC = b"PMSG"
PREFIX = struct.Struct("!4sII")
LENGTH = struct.Struct("!Q")
MAX_HEADER = 64 << 20
MAX_FRAMES = 1 << 20
_STAGE = 1 << 16          # reads smaller than this go through one staging buffer
_IOV_MAX = 512            # buffers per sendmsg call (Linux allows 1024)
SEGMENT = 1 << 20         # frame bytes per signed segment (part) of a message
_BATCH = 4 << 20          # bytes signed ahead of what the socket has taken
_READ_BUDGET = 8 << 20    # bytes per read() call: one big sender cannot starve others,
                          # and streamed payloads are forwarded as they come
_JOIN = 64 << 10          # on TLS (no sendmsg), pieces joined into one send up to this size
WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def buffered(sock: socket.socket) -> bool:
    """True when a TLS socket holds bytes it has decrypted but not handed over: they are
    there to read, and ``select`` cannot see them."""
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


def aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def as_bytes_view(buf: Any) -> memoryview:
    """A flat byte view of any contiguous buffer (bytes, NumPy array, PickleBuffer...)."""
    view = buf.raw() if hasattr(buf, "raw") else memoryview(buf)
    if view.format == "B" and view.ndim == 1:
        return view
    return view.cast("B") if view.nbytes else memoryview(b"")   # (0, n) shapes don't cast


# -- message authentication codes ---------------------------------------------------

HMAC_SHA256, POLY1305 = 1, 2     # bits of the controller's offer; the client picks one
NO_TAGS = 4                      # offered and chosen only inside TLS: its records carry them
POLY1305_FROM = 64 << 10         # smaller messages use HMAC-SHA256 even when Poly1305 is on


try:
    from cryptography.hazmat.primitives.poly1305 import Poly1305
except ImportError:   # pympec[fast] not installed: HMAC-SHA256 only
    Poly1305 = None


def supported_macs() -> int:
    """The MACs this process can use: HMAC-SHA256 always, Poly1305 when the
    ``cryptography`` package (``pip install pympec[fast]``) is installed."""
    return HMAC_SHA256 if Poly1305 is None else HMAC_SHA256 | POLY1305


def hmac_sha256(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 under ``key`` of ``parts``, back to back: the handshake's proofs and
    session keys, and Poly1305's one-time keys."""
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


class _Poly1305:
    """Poly1305 under a one-time key per message, HMAC-SHA256(direction key, b"poly1305"
    || sequence number): Poly1305 must never see a key twice, and this one never does."""

    def __init__(self, key: bytes, seq: int, part: int) -> None:
        self._poly = Poly1305(hmac_sha256(key, b"poly1305", LENGTH.pack(seq),
                                          LENGTH.pack(part)))
        self.update = self._poly.update

    def digest(self) -> bytes:
        return self._poly.finalize()


class _NoTags:
    """The MAC of NO_TAGS: nothing to compute, and an empty tag."""

    def update(self, data: Any) -> None:
        pass

    def digest(self) -> bytes:
        return b""


def message_mac(kind: int, key: bytes, seq: int, part: int) -> Any:
    """The MAC of part ``part`` of message ``seq``: an object with ``update(bytes)`` and
    ``digest()``."""
    if kind == NO_TAGS:
        return _NoTags()
    if kind == POLY1305:
        return _Poly1305(key, seq, part)
    return hmac.new(key, LENGTH.pack(seq) + LENGTH.pack(part), hashlib.sha256)


def segments(lengths: list[int]) -> Iterator[tuple[int, int, int, bool]]:
    """The frame bytes of a message as signed segments: ``(frame, start, stop, last)``
    runs in wire order, ``last`` where a segment (and its tag) ends.  Writer and reader
    both cut messages with this one function."""
    room, left = SEGMENT, sum(lengths)
    for i, n in enumerate(lengths):
        start = 0
        while start < n:
            stop = min(n, start + room)
            room -= stop - start
            left -= stop - start
            yield i, start, stop, room == 0 or left == 0
            if room == 0:
                room = SEGMENT
            start = stop


def mac_for(kind: int, nbytes: int) -> int:
    """The MAC a message of ``nbytes`` of frames uses: Poly1305 pays off on bulk data,
    while HMAC-SHA256 is cheaper to set up for small messages."""
    return kind if kind == NO_TAGS or nbytes >= POLY1305_FROM else HMAC_SHA256


def tag_size(kind: int) -> int:
    return {HMAC_SHA256: 32, POLY1305: 16, NO_TAGS: 0}[kind]


# -- messages ----------------------------------------------------------------------

class Message:
    """A received message: its JSON header and its frames, views into one buffer.

    A message handed out early (``MessageReader(early=...)``) is still arriving:
    ``verified`` is how far into ``payload`` the bytes are checked and usable, until
    ``complete``; ``failed`` if the connection broke or a tag failed first."""

    __slots__ = ("header", "frames", "payload", "offsets", "verified", "complete", "failed")

    def __init__(self, header: dict, payload: memoryview, offsets: list[int],
                 lengths: list[int]):
        self.header = header
        self.payload = payload
        self.offsets = offsets
        self.frames = [payload[o:o + n] for o, n in zip(offsets, lengths)]
        self.verified = 0
        self.complete = self.failed = False

    def span(self, first: int, last: int) -> tuple[int, int]:
        """(offset, length) in ``payload`` covering frames first..last inclusive."""
        if last < first:
            return 0, 0
        start = self.offsets[first]
        return start, self.offsets[last] + len(self.frames[last]) - start


_EMPTY = memoryview(b"")   # the payload of a message without frames


def _refuse_if_interrupted(end: "MessageReader | MessageWriter", what: str) -> None:
    """Raise ClusterError if a read or write of ``end`` did not finish (see
    ``interrupted``): the stream is in an unknown state."""
    if end.interrupted:
        raise ClusterError(f"an interrupted {what} left the stream in an unknown state")


class MessageReader:
    """Parses a stream into Messages, checking each tag before the bytes it covers are used.

    ``read(sock)`` works on non-blocking sockets and keeps its state between calls, so a
    message may arrive over many calls.  An exception or an interrupt (Ctrl-C) inside a
    read may leave it between two steps, with bytes taken from the socket and not yet
    counted: it then stays ``interrupted``, and its owner must drop the stream (every
    later read raises ClusterError), however many more interrupts land meanwhile.
    A message is handed out once complete or, if ``early(message)`` says so, as
    soon as its header is checked; it then fills in as later reads check its segments.
    """

    def __init__(self, key: bytes, mac: int = HMAC_SHA256,
                 early: Callable[[Message], bool] | None = None) -> None:
        self._key = key
        self._kind = mac
        self._early = early
        self._seq = 0
        self._stage = bytearray(_STAGE)
        self._staged = memoryview(b"")
        self.interrupted = False   # a read did not finish: the stream is unusable
        self._begin_message()

    @property
    def partial(self) -> Message | None:
        """The message handed out early and still arriving, if any."""
        return self._message if self._announced else None

    @property
    def midway(self) -> bool:
        """True while a message has begun to arrive and is not yet whole."""
        return self._announced or self._pos > 0 or self._step != self._got_prefix

    def _begin_message(self) -> None:
        self._message: Message | None = None
        self._payload = None   # (so a finished message's buffer can be reused)
        self._announced = False
        self._step = self._got_prefix
        self._target = memoryview(bytearray(PREFIX.size))
        self._pos = 0
        self._signed = False

    def _expect(self, target: memoryview, step, signed: bool = True) -> None:
        self._target, self._step, self._pos, self._signed = target, step, 0, signed

    def read(self, sock: socket.socket) -> list[Message]:
        """Read what the socket has now; returns the messages completed (or begun early).

        Raises ClusterError on end of stream or after an unfinished read, ProtocolError
        on a bad frame or tag.
        """
        _refuse_if_interrupted(self, "read")
        self.interrupted = True   # (until this read ends normally)
        messages = self._read(sock)
        self.interrupted = False
        return messages

    def _read(self, sock: socket.socket) -> list[Message]:
        messages: list[Message] = []
        budget = _READ_BUDGET
        while budget > 0 or buffered(sock):
            self._take_staged(messages)
            need = len(self._target) - self._pos
            try:
                if need >= _STAGE:
                    n = sock.recv_into(self._target[self._pos:])
                    if n:
                        self._advance(n, messages)
                else:
                    n = sock.recv_into(self._stage)
                    self._staged = memoryview(self._stage)[:n]
            except WOULD_BLOCK:
                break
            except (ConnectionError, OSError) as e:
                if messages:   # hand over what arrived whole; the next read raises
                    break
                raise ClusterError(f"connection lost: {e}") from None
            if n == 0:
                if messages:
                    break
                raise ClusterError("connection closed by peer")
            budget -= n
        self._take_staged(messages)   # (the budget may end right after a staged read)
        return messages

    def _take_staged(self, messages: list[Message]) -> None:
        """Move the bytes staged by a small read into their messages."""
        while self._staged:
            if self._step == self._got_prefix and self._pos == 0:
                small = self._take_small()
                if small is not None:
                    messages.append(small)
                    continue
            n = min(len(self._staged), len(self._target) - self._pos)
            self._target[self._pos:self._pos + n] = self._staged[:n]
            self._staged = self._staged[n:]
            self._advance(n, messages)

    def _take_small(self) -> Message | None:
        """A message without frames that is whole among the staged bytes (most are:
        requests and replies of small calls), checked and parsed in one step: the same
        checks as the steps below, which take any other message."""
        staged = self._staged
        if len(staged) < PREFIX.size:
            return None
        magic, header_len, nframes = PREFIX.unpack_from(staged)
        kind = mac_for(self._kind, 0)
        end = PREFIX.size + header_len
        if magic != MAGIC or nframes or header_len > MAX_HEADER \
                or len(staged) < end + tag_size(kind):
            return None   # (the steps judge it, or wait for the rest)
        mac = message_mac(kind, self._key, self._seq, 0)
        mac.update(staged[:end])
        if not hmac.compare_digest(mac.digest(), staged[end:end + tag_size(kind)]):
            raise ProtocolError("message signature mismatch: corrupted, replayed or forged")
        header = self._parse(staged[PREFIX.size:end])
        self._staged = staged[end + tag_size(kind):]
        self._seq += 1
        message = Message(header, _EMPTY, [], [])
        message.verified, message.complete = 0, True
        return message

    @staticmethod
    def _parse(data: memoryview) -> Any:
        try:
            return headers.loads(data)
        except (ValueError, RecursionError) as e:   # RecursionError: nested too deep
            raise ProtocolError(f"bad message header: {e!r}"[:200]) from None

    def _advance(self, n: int, messages: list[Message]) -> None:
        if self._signed:
            self._mac.update(self._target[self._pos:self._pos + n])
        self._pos += n
        while self._pos == len(self._target):
            done = self._step()
            if done is not None:
                messages.append(done)

    def _got_prefix(self) -> None:
        magic, self._header_len, nframes = PREFIX.unpack(self._target)
        if magic != MAGIC or self._header_len > MAX_HEADER or nframes > MAX_FRAMES:
            raise ProtocolError("bad frame prefix: not a pympec message")
        self._prefix = self._target
        self._expect(memoryview(bytearray(LENGTH.size * nframes)), self._got_lengths,
                     signed=False)

    def _got_lengths(self) -> None:
        raw = self._target
        self._lengths = [LENGTH.unpack_from(raw, i)[0] for i in range(0, len(raw), LENGTH.size)]
        self._offsets, total = [], 0
        for n in self._lengths:
            self._offsets.append(total)
            total += aligned(n)
        limit = settings.MAX_MESSAGE.get()
        if total > limit:
            raise ProtocolError(f"message of {total} bytes is over the limit of "
                                f"{limit} (PYMPEC_MAX_MESSAGE)")
        try:
            self._payload = allocate(total) if total else memoryview(bytearray())   # (writable)
        except (MemoryError, ValueError) as e:
            raise ProtocolError(f"cannot hold a message of {total} bytes: {e}") from None
        self._nbytes = sum(self._lengths)
        self._tag_kind = mac_for(self._kind, self._nbytes)
        self._part = 0
        self._mac = message_mac(self._tag_kind, self._key, self._seq, 0)
        self._mac.update(self._prefix)
        self._mac.update(raw)
        self._expect(memoryview(bytearray(self._header_len)), self._got_header)

    def _got_header(self) -> None:
        self._header_bytes = self._target
        self._expect_tag(self._got_head_tag)

    def _expect_tag(self, step) -> None:
        self._expect(memoryview(bytearray(tag_size(self._tag_kind))), step, signed=False)

    def _check_tag(self) -> None:
        if not hmac.compare_digest(self._mac.digest(), self._target):
            raise ProtocolError("message signature mismatch: corrupted, replayed or forged")
        self._mac = None

    def _got_head_tag(self) -> Message | None:
        self._check_tag()
        header = self._parse(self._header_bytes)
        self._message = Message(header, self._payload, self._offsets, self._lengths)
        self._runs = segments(self._lengths)
        self._announced = bool(self._nbytes and self._early
                               and self._early(self._message))
        message = self._message
        done = self._next_run()
        return message if self._announced or done else None

    def _next_run(self) -> Message | None:
        """Expect the next run of frame bytes; at the end, finish the message."""
        run = next(self._runs, None)
        if run is None:
            message, announced = self._message, self._announced
            message.verified, message.complete = len(message.payload), True
            self._seq += 1
            self._begin_message()
            return None if announced else message
        frame, start, stop, self._run_ends = run
        if self._mac is None:
            self._part += 1
            self._mac = message_mac(self._tag_kind, self._key, self._seq, self._part)
        at = self._offsets[frame]
        self._run_stop = at + stop
        self._expect(self._payload[at + start:at + stop], self._got_run)
        return None

    def _got_run(self) -> Message | None:
        if self._run_ends:
            self._expect_tag(self._got_segment_tag)
            return None
        return self._next_run()

    def _got_segment_tag(self) -> Message | None:
        self._check_tag()
        self._message.verified = self._run_stop
        return self._next_run()


class Filling:
    """A frame that is still being received (from MPI, in pieces) while the message
    carrying it goes out: ``ready`` is how many bytes from its start have landed.
    MessageWriter sends each segment of it only once the segment has landed, so a
    large result streams to the client while the engines are still sending it."""

    __slots__ = ("view", "ready", "_landed")

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.ready = 0
        self._landed: dict[int, int] = {}   # start -> stop of pieces past ``ready``

    def __len__(self) -> int:
        return len(self.view)

    def land(self, start: int, stop: int) -> None:
        """Bytes start..stop have arrived (pieces may land in any order)."""
        self._landed[start] = stop
        while self.ready in self._landed:
            self.ready = self._landed.pop(self.ready)


class _Piece:
    """What the writer sends next: bytes (``view``) to sign with ``mac``, or, while
    ``view`` is None, the tag ``mac`` makes once all before it is signed.  A piece of a
    Filling goes only once the Filling's ``ready`` reaches ``stop``."""

    __slots__ = ("view", "mac", "signed", "filling", "stop")

    def __init__(self, view: memoryview | None, mac: Any, filling: Filling | None = None,
                 stop: int = 0) -> None:
        self.view, self.mac, self.signed, self.filling, self.stop = view, mac, False, \
            filling, stop

    def landed(self) -> bool:
        return self.filling is None or self.filling.ready >= self.stop


class MessageWriter:
    """Signs messages and writes them with ``sendmsg``, never joining frames in memory.

    ``queue()`` appends a message; ``flush(sock)`` writes what the socket takes now and
    says whether everything is out.  One that an exception or an interrupt cut short
    leaves the writer ``interrupted`` (bytes may have gone out uncounted, or a message
    half counted in): its owner must drop the stream, and both raise ClusterError from
    then on.  Bytes are signed as they go out, a segment at a
    time, so the peer checks one segment while this side signs the next: signing and
    checking a large message overlap instead of adding up.  A frame may be a
    :class:`Filling`: its segments wait until they have landed (``stalled`` says the
    writer waits on one), and the rest of the stream waits behind them.
    """

    def __init__(self, key: bytes, mac: int = HMAC_SHA256) -> None:
        self._key = key
        self._kind = mac
        self._seq = 0
        self._pieces: collections.deque[_Piece] = collections.deque()
        self._offered: bytes | memoryview | None = None   # TLS: to send again, as it was
        self.interrupted = False   # a flush or a queue did not finish: stream unusable
        self.sent = 0   # bytes written so far: progress, for whoever watches the peer
        self.queued = 0   # bytes queued so far (``backlog``: queued, not written yet)

    @property
    def pending(self) -> bool:
        return bool(self._pieces)

    @property
    def backlog(self) -> int:
        """Bytes queued and not written yet."""
        return self.queued - self.sent

    @property
    def stalled(self) -> bool:
        """True when the next bytes to send have not landed yet."""
        return bool(self._pieces) and not self._pieces[0].landed()

    def queue(self, header: dict | bytes, frames: Iterable[Any] = ()) -> None:
        """Queue a message (see the module doc for its layout): ``header`` is a dict,
        or already its JSON text, as bytes.  The message is built aside and counted in
        at the end, so a failure while it is built (a header JSON cannot hold) changes
        nothing.  Raises ClusterError once the writer is ``interrupted``."""
        _refuse_if_interrupted(self, "write")
        frames = list(frames)
        fillings = [f if isinstance(f, Filling) else None for f in frames]
        views = [as_bytes_view(f) if filling is None else filling.view
                 for f, filling in zip(frames, fillings)]
        lengths = [len(v) for v in views]
        head = header if isinstance(header, bytes) else \
            headers.dumps(header)
        lead = b"".join([PREFIX.pack(MAGIC, len(head), len(views)),
                         *(LENGTH.pack(n) for n in lengths), head])
        kind, seq = mac_for(self._kind, sum(lengths)), self._seq
        mac = message_mac(kind, self._key, seq, 0)
        tag = tag_size(kind)
        tagged = tag > 0   # (NO_TAGS: no pieces for empty tags)
        pieces = [_Piece(memoryview(lead), mac)]
        if tagged:
            pieces.append(_Piece(None, mac))
        part, mac = 0, None
        for frame, start, stop, last in segments(lengths):
            if mac is None:
                part += 1
                mac = message_mac(kind, self._key, seq, part)
            pieces.append(_Piece(views[frame][start:stop], mac, fillings[frame], stop))
            if last and tagged:
                pieces.append(_Piece(None, mac))
            if last:
                mac = None
        self.interrupted = True   # (the three go together)
        self._pieces.extend(pieces)
        self._seq = seq + 1
        self.queued += len(lead) + sum(lengths) + tag * (1 + part)   # (a tag per part)
        self.interrupted = False

    def _batch(self) -> list[memoryview]:
        """The next pieces to send (about _BATCH bytes, only those landed), each signed
        before it goes."""
        batch, size = [], 0
        for piece in itertools.islice(self._pieces, _IOV_MAX):
            if not piece.signed:
                if not piece.landed():
                    break
                if piece.view is None:
                    piece.view = memoryview(piece.mac.digest())
                else:
                    piece.mac.update(piece.view)
                piece.signed = True
            batch.append(piece.view)
            size += len(piece.view)
            if size >= _BATCH:
                break
        return batch

    def flush(self, sock: socket.socket) -> bool:
        """Write as much as the socket takes now (and as has landed); True when
        nothing is left.

        Raises ClusterError when the peer has gone, or once the writer is
        ``interrupted``.
        """
        _refuse_if_interrupted(self, "write")
        self.interrupted = True   # (until this flush ends normally)
        done = self._flush(sock)
        self.interrupted = False
        return done

    def _flush(self, sock: socket.socket) -> bool:
        pieces = self._pieces
        tls = isinstance(sock, ssl.SSLSocket)
        while pieces:
            batch = self._batch()
            if not batch:   # stalled: the next bytes have not landed
                return False
            try:
                sent = self._send_tls(sock, batch) if tls else sock.sendmsg(batch)
            except WOULD_BLOCK:
                return False
            except OSError as e:
                raise ClusterError(f"connection lost: {e}") from None
            self.sent += sent
            while sent:
                head = pieces[0]
                if sent >= len(head.view):
                    sent -= len(head.view)
                    pieces.popleft()
                else:
                    head.view = head.view[sent:]
                    sent = 0
        return True

    def _send_tls(self, sock: ssl.SSLSocket, batch: list[memoryview]) -> int:
        """Send the head of ``batch`` on a TLS socket, which has no ``sendmsg``: small
        pieces joined (up to _JOIN bytes), or one large piece alone.  Returns the bytes
        sent; raises SSLWantWriteError (and such) when the socket is full, and then
        offers the very same bytes the next time, as OpenSSL requires."""
        if self._offered is None:
            count, size = 0, 0
            for view in batch:
                if count and size + len(view) > _JOIN:
                    break
                count, size = count + 1, size + len(view)
            self._offered = batch[0] if count == 1 else b"".join(batch[:count])
        sent = sock.send(self._offered)
        self._offered = None
        return sent
