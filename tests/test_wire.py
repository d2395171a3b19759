"""Unit tests of pympec.protocol.wire over real sockets (socketpairs and loopback TCP), no mocks.

Covers DESIGN contract 2 (frames travel as raw bytes into aligned, writable buffers)
and contract 5 (challenge-response handshake; every message signed with a sequence
number, and the signature checked before anything is parsed).

The tests do not compute tags themselves (the MAC construction may change, see
docs/security.md); they only rely on the documented layout ``prefix | lengths | header | tag``, then
``segment | tag`` for each segment of the frames (``wire.segments``), with
``TAG`` bytes of tag (HMAC-SHA256).  The handshake's known-answer vectors are in
tests/test_protocol_vectors.py.
"""
from __future__ import annotations

import contextlib
import json
import random
import secrets
import select
import socket
import struct
import threading
import time
import tracemalloc

import numpy as np
import pytest

from pympec.protocol import handshake, wire
from pympec.protocol.handshake import ANSWER, NONCE, ClientHandshake, ServerHandshake
from pympec.errors import ClusterError, ProtocolError, SecurityError

KEY = secrets.token_bytes(32)
TAG = wire.tag_size(wire.HMAC_SHA256)
LIMIT = 10.0          # every wait in this file is bounded by this many seconds


# -- helpers -----------------------------------------------------------------------

def socketpair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


@pytest.fixture
def pair():
    a, b = socketpair()
    yield a, b
    a.close()
    b.close()


def pump(writer: wire.MessageWriter, wsock, reader: wire.MessageReader, rsock,
         want: int) -> list[wire.Message]:
    """Flush ``writer`` into ``wsock`` and read ``rsock`` until ``want`` messages came."""
    got: list[wire.Message] = []
    deadline = time.monotonic() + LIMIT
    while len(got) < want:
        assert time.monotonic() < deadline, f"only {len(got)} of {want} messages arrived"
        done = writer.flush(wsock)
        got += reader.read(rsock)
        if len(got) < want:
            select.select([rsock], [] if done else [wsock], [], 0.05)
    assert not writer.pending
    return got


def drain(sock) -> bytes:
    out = bytearray()
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            out += chunk
    except BlockingIOError:
        pass
    return bytes(out)


def encoded(writer: wire.MessageWriter, header: dict, frames=()) -> bytes:
    """The exact bytes ``writer`` puts on the wire for one message (its next sequence number)."""
    writer.queue(header, frames)
    a, b = socketpair()
    out = bytearray()
    try:
        deadline = time.monotonic() + LIMIT
        while True:
            assert time.monotonic() < deadline
            done = writer.flush(a)
            out += drain(b)
            if done:
                break
        return bytes(out)
    finally:
        a.close()
        b.close()


def feed(reader: wire.MessageReader, data: bytes, chunk: int = 1 << 16) -> list[wire.Message]:
    """Send ``data`` through a fresh socketpair in ``chunk``-byte writes, reading as it goes.

    Returns the messages read; exceptions from ``reader.read`` propagate.
    """
    a, b = socketpair()
    got: list[wire.Message] = []
    view = memoryview(data)
    pos = 0
    try:
        deadline = time.monotonic() + LIMIT
        while pos < len(view):
            assert time.monotonic() < deadline
            try:
                pos += a.send(view[pos:pos + chunk])
            except BlockingIOError:
                pass
            got += reader.read(b)
        while select.select([b], [], [], 0)[0]:
            assert time.monotonic() < deadline
            got += reader.read(b)
        return got
    finally:
        a.close()
        b.close()


def layout(data: bytes, tag: int = TAG) -> dict:
    """Offsets of the parts of one encoded message, per the documented layout: part 0
    (prefix, lengths, header) and its tag, then each segment of frame bytes and its tag.
    ``frames`` holds where each frame's first byte is (None for empty frames), ``tag``
    where the last tag starts."""
    magic, hlen, nframes = wire.PREFIX.unpack_from(data, 0)
    pos = wire.PREFIX.size
    lengths = [wire.LENGTH.unpack_from(data, pos + i * wire.LENGTH.size)[0]
               for i in range(nframes)]
    header = pos + nframes * wire.LENGTH.size
    at = header + hlen
    tags, frames = [at], [None] * nframes
    at += tag
    for frame, start, stop, last in wire.segments(lengths):
        if start == 0:
            frames[frame] = at
        at += stop - start
        if last:
            tags.append(at)
            at += tag
    return dict(magic=magic, hlen=hlen, nframes=nframes, lengths=lengths, lengths_at=pos,
                header=header, frames=frames, tags=tags, tag=tags[-1], end=at)


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


def frame_array(frame: memoryview, dtype, shape) -> np.ndarray:
    return np.frombuffer(frame, dtype=dtype).reshape(shape)


# -- round trips ---------------------------------------------------------------------

HEADERS = [
    {},
    {"verb": "execute", "targets": [0, 1, 2], "block": True, "msg_id": "a" * 32},
    {"nested": {"list": [1, 2.5, None, True, "x"], "empty": {}}, "unicode": "héllo ∑ 🐍"},
    {"big": "x" * 200_000},          # a header larger than the reader's staging buffer
]


@pytest.mark.parametrize("header", HEADERS, ids=["empty", "plain", "nested", "large"])
def test_header_round_trip(pair, header):
    a, b = pair
    writer, reader = wire.MessageWriter(KEY), wire.MessageReader(KEY)
    writer.queue(header)
    msg, = pump(writer, a, reader, b, 1)
    assert msg.header == header
    assert msg.frames == []


def test_frames_round_trip(pair):
    a, b = pair
    rng = np.random.default_rng(0)
    arrays = {
        "f64": rng.standard_normal((37, 5)),
        "i8": np.arange(-100, 100, dtype=np.int8),
        "empty": np.zeros(0, dtype=np.float32),
        "empty-struct": np.zeros(0, dtype=[("a", "<i4"), ("b", "<f8")]),
        "c128": (rng.standard_normal(9) + 1j * rng.standard_normal(9)).astype(np.complex128),
        "struct": np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
        "big": rng.integers(0, 1 << 62, size=(3 << 20) // 8 * 3, dtype=np.int64),  # 9 MiB
    }
    raw = [b"plain bytes", bytearray(b"a bytearray"), memoryview(b"a memoryview"), b""]
    frames = raw + list(arrays.values())
    header = {"arrays": {name: [i + len(raw), a.dtype.str if a.dtype.fields is None else "S",
                                list(a.shape)] for i, (name, a) in enumerate(arrays.items())}}
    writer, reader = wire.MessageWriter(KEY), wire.MessageReader(KEY)
    writer.queue(header, frames)
    msg, = pump(writer, a, reader, b, 1)
    assert msg.header == header
    assert len(msg.frames) == len(frames)
    for sent, got in zip(raw, msg.frames):
        assert bytes(got) == bytes(sent)
    for name, arr in arrays.items():
        index = header["arrays"][name][0]
        back = frame_array(msg.frames[index], arr.dtype, arr.shape)
        assert back.dtype == arr.dtype and back.shape == arr.shape
        np.testing.assert_array_equal(back, arr)
        assert back.flags.writeable


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (2, 0, 5)])
def test_zero_length_multidimensional_array_frame(pair, shape):
    a, b = pair
    arr = np.zeros(shape, dtype=np.float64)
    writer, reader = wire.MessageWriter(KEY), wire.MessageReader(KEY)
    writer.queue({"shape": list(shape)}, [arr, b"after"])
    msg, = pump(writer, a, reader, b, 1)
    assert frame_array(msg.frames[0], arr.dtype, shape).shape == shape
    assert bytes(msg.frames[1]) == b"after"


def test_frames_at_aligned_offsets_in_one_writable_buffer(pair):
    a, b = pair
    sizes = [0, 1, 63, 64, 65, 1000, 0, 200_000, 3]
    frames = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    writer, reader = wire.MessageWriter(KEY), wire.MessageReader(KEY)
    writer.queue({"sizes": sizes}, frames)
    msg, = pump(writer, a, reader, b, 1)
    payload = np.frombuffer(msg.payload, np.uint8)
    assert payload.flags.writeable
    assert all(o % wire.ALIGN == 0 for o in msg.offsets)
    for frame, sent, offset in zip(msg.frames, frames, msg.offsets):
        assert bytes(frame) == sent
        assert not frame.readonly
        if len(frame):     # a view at its offset in the one buffer, not a copy
            assert np.frombuffer(frame, np.uint8).ctypes.data == payload.ctypes.data + offset
            frame[0] ^= 0xFF                                # writable in place ...
            assert payload[offset] == sent[0] ^ 0xFF        # ... into the one buffer
    # span covers frames first..last inclusive
    start, length = msg.span(1, 3)
    assert start == msg.offsets[1]
    assert length == msg.offsets[3] + sizes[3] - msg.offsets[1]
    assert msg.span(2, 1) == (0, 0)


def test_arrays_on_frames_are_numpy_aligned_and_writable(pair):
    a, b = pair
    arrays = [np.arange(n, dtype=dt) for n, dt in
              [(3, np.int8), (5, np.float64), (1 << 18, np.complex128), (7, np.int16)]]
    writer, reader = wire.MessageWriter(KEY), wire.MessageReader(KEY)
    writer.queue({}, arrays)
    msg, = pump(writer, a, reader, b, 1)
    for frame, arr in zip(msg.frames, arrays):
        back = np.frombuffer(frame, dtype=arr.dtype)
        assert back.flags.aligned and back.flags.writeable
        back += 1
        np.testing.assert_array_equal(back, arr + 1)


def test_frame_addresses_are_64_byte_aligned(pair):
    a, b = pair
    writer, reader = wire.MessageWriter(KEY), wire.MessageReader(KEY)
    sizes = [1 << 20, 3 << 20, 200_000, 5000, 9 << 20, 70_000, 1 << 22, 300_000]
    for n in sizes:            # several messages: a chance 0 mod 64 can't pass them all
        writer.queue({"n": n}, [b"x" * 10, np.ones(n, dtype=np.uint8)])
    messages = pump(writer, a, reader, b, len(sizes))
    addresses = [np.frombuffer(f, np.uint8).ctypes.data % wire.ALIGN
                 for m in messages for f in m.frames]
    assert addresses == [0] * len(addresses)


def test_many_frames_in_order(pair):
    a, b = pair
    rng = random.Random(1)
    # more than one sendmsg batch (wire._IOV_MAX buffers), with 0-length ones among them
    frames = [secrets.token_bytes(rng.choice([0, 0, 1, 7, 64, 100, 5000]))
              for _ in range(1500)]
    writer, reader = wire.MessageWriter(KEY), wire.MessageReader(KEY)
    writer.queue({"n": len(frames)}, frames)
    msg, = pump(writer, a, reader, b, 1)
    assert [bytes(f) for f in msg.frames] == frames


def test_many_messages_in_order(pair):
    a, b = pair
    writer, reader = wire.MessageWriter(KEY), wire.MessageReader(KEY)
    sent = []
    for i in range(300):
        frames = [secrets.token_bytes(i * 37 % 3000)] * (i % 3)
        writer.queue({"i": i}, frames)
        sent.append(frames)
    messages = pump(writer, a, reader, b, len(sent))
    assert [m.header["i"] for m in messages] == list(range(300))
    for m, frames in zip(messages, sent):
        assert [bytes(f) for f in m.frames] == frames


def test_both_directions_on_one_socketpair(pair):
    a, b = pair
    c2s, s2c = handshake.session_keys(KEY, b"s" * 32, b"c" * 32)
    wa, ra = wire.MessageWriter(c2s), wire.MessageReader(s2c)
    wb, rb = wire.MessageWriter(s2c), wire.MessageReader(c2s)
    for i in range(5):
        wa.queue({"ping": i}, [np.full(100_000, i, np.int32)])
        m, = pump(wa, a, rb, b, 1)
        wb.queue({"pong": m.header["ping"]}, [m.frames[0]])
        r, = pump(wb, b, ra, a, 1)
        assert r.header == {"pong": i}
        assert (np.frombuffer(r.frames[0], np.int32) == i).all()


def test_documented_layout():
    header = {"verb": "push", "n": 3}
    frames = [b"abc", b"", np.arange(10, dtype=np.int16)]
    data = encoded(wire.MessageWriter(KEY), header, frames)
    parts = layout(data)
    assert parts["magic"] == wire.MAGIC
    assert parts["nframes"] == 3
    assert parts["lengths"] == [3, 0, 20]
    assert json.loads(data[parts["header"]:parts["header"] + parts["hlen"]]) == header
    starts = parts["frames"]
    assert data[starts[0]:starts[0] + 3] == b"abc"
    assert data[starts[2]:starts[2] + 20] == frames[2].tobytes()
    assert parts["end"] == len(data)


# -- split reads -------------------------------------------------------------------

def test_message_fed_byte_by_byte(pair):
    a, b = pair
    frames = [b"", b"hello", np.arange(300, dtype=np.float64), b"", b"z"]
    header = {"verb": "apply", "unicode": "ünï"}
    writer = wire.MessageWriter(KEY)
    data = encoded(writer, header, frames) + encoded(writer, {"second": True}, [b"2" * 100])
    reader = wire.MessageReader(KEY)
    got = []
    first_end = layout(data)["end"]
    for i in range(len(data)):
        a.send(data[i:i + 1])
        new = reader.read(b)
        if i + 1 == first_end:
            assert len(new) == 1, "the first message completes with its last byte"
        elif i + 1 != len(data):
            assert new == [], f"a message was delivered early, at byte {i}"
        got += new
    assert len(got) == 2
    assert got[0].header == header
    assert [bytes(f) for f in got[0].frames] == [bytes(wire.as_bytes_view(f)) for f in frames]
    assert got[1].header == {"second": True} and bytes(got[1].frames[0]) == b"2" * 100


def test_large_message_fed_in_random_tiny_pieces(pair):
    a, b = pair
    rng = random.Random(2)
    big = np.random.default_rng(3).integers(0, 255, 300_000, dtype=np.uint8)  # > staging
    writer = wire.MessageWriter(KEY)
    data = (encoded(writer, {"k": 1}, [b"head", big, b"tail"])
            + encoded(writer, {"k": 2}, [big[:70_000]]))
    reader = wire.MessageReader(KEY)
    got, pos = [], 0
    deadline = time.monotonic() + LIMIT
    while pos < len(data):
        assert time.monotonic() < deadline
        n = rng.choice([1, 2, 3, 5, 8, 13, 61, 64, 65, 97, 4000])
        pos += a.send(data[pos:pos + n])
        got += reader.read(b)
    assert [m.header["k"] for m in got] == [1, 2]
    np.testing.assert_array_equal(np.frombuffer(got[0].frames[1], np.uint8), big)
    assert bytes(got[0].frames[0]) == b"head" and bytes(got[0].frames[2]) == b"tail"
    np.testing.assert_array_equal(np.frombuffer(got[1].frames[0], np.uint8), big[:70_000])


def test_read_with_nothing_available_returns_nothing(pair):
    a, b = pair
    reader = wire.MessageReader(KEY)
    assert reader.read(b) == []
    data = encoded(wire.MessageWriter(KEY), {"x": 1}, [b"abc"])
    a.send(data[:10])
    assert reader.read(b) == []
    assert reader.read(b) == []
    a.send(data[10:])
    msg, = reader.read(b)
    assert msg.header == {"x": 1}


# -- partial writes ----------------------------------------------------------------

def test_partial_writes_to_a_slow_reader():
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a.setblocking(False)
    b.setblocking(False)
    rng = np.random.default_rng(4)
    sent = [(i, [rng.integers(0, 1 << 30, n, dtype=np.int64), secrets.token_bytes(i)])
            for i, n in enumerate([0, 10, 60_000, 1, 120_000, 5])]
    received: list[wire.Message] = []
    failure: list[BaseException] = []

    def slow_reader():
        reader = wire.MessageReader(KEY)
        deadline = time.monotonic() + LIMIT
        try:
            while len(received) < len(sent) and time.monotonic() < deadline:
                if select.select([b], [], [], 0.05)[0]:
                    received.extend(reader.read(b))
                    time.sleep(0.0005)          # let the writer's buffer fill up again
        except BaseException as e:   # reported by the main thread
            failure.append(e)

    thread = threading.Thread(target=slow_reader, daemon=True)
    thread.start()
    try:
        writer = wire.MessageWriter(KEY)
        half = len(sent) // 2
        for i, frames in sent[:half]:
            writer.queue({"i": i}, frames)
        writer.flush(a)
        for i, frames in sent[half:]:    # queued while the first ones are partly out
            writer.queue({"i": i}, frames)
        partial = 0
        deadline = time.monotonic() + LIMIT
        while not writer.flush(a):
            assert time.monotonic() < deadline, "the writer never finished"
            assert writer.pending
            partial += 1
            select.select([], [a], [], 0.05)
        assert not writer.pending
        thread.join(LIMIT)
        assert not thread.is_alive()
    finally:
        a.close()
        b.close()
    assert not failure, failure
    assert partial > 0, "the socket took everything at once: no partial write was tested"
    assert [m.header["i"] for m in received] == [i for i, _ in sent]
    for m, (_, frames) in zip(received, sent):
        np.testing.assert_array_equal(np.frombuffer(m.frames[0], np.int64), frames[0])
        assert bytes(m.frames[1]) == frames[1]


def test_flush_to_a_closed_peer_raises_cluster_error(pair):
    a, b = pair
    b.close()
    writer = wire.MessageWriter(KEY)
    writer.queue({"x": 1}, [b"y" * 1000])
    with pytest.raises(ClusterError):
        writer.flush(a)


def test_flush_with_nothing_queued_is_done(pair):
    a, _ = pair
    assert wire.MessageWriter(KEY).flush(a) is True


# -- tampering ---------------------------------------------------------------------

BULK = np.random.default_rng(5).integers(0, 1 << 62, (4 << 20) // 8, dtype=np.int64)  # 4 MiB


@pytest.fixture(scope="module")
def bulk_message() -> bytes:
    return encoded(wire.MessageWriter(KEY), {"verb": "push", "names": ["a", "b"]},
                   [b"small frame", BULK])


def test_untampered_bulk_message_passes(bulk_message):
    msg, = feed(wire.MessageReader(KEY), bulk_message)
    np.testing.assert_array_equal(np.frombuffer(msg.frames[1], np.int64), BULK)


@pytest.mark.parametrize("where", ["header-first", "header-middle", "header-last",
                                   "small-frame", "bulk-first", "bulk-middle", "bulk-last",
                                   "tag-first", "tag-last"])
def test_one_flipped_bit_is_rejected(bulk_message, where):
    parts = layout(bulk_message)
    bulk_at, bulk_len = parts["frames"][1], parts["lengths"][1]
    index = {
        "header-first": parts["header"],            # the '{': parsing first would say so
        "header-middle": parts["header"] + parts["hlen"] // 2,
        "header-last": parts["header"] + parts["hlen"] - 1,
        "small-frame": parts["frames"][0] + 3,
        "bulk-first": bulk_at,
        "bulk-middle": bulk_at + bulk_len // 2 + 1,
        "bulk-last": bulk_at + bulk_len - 1,
        "tag-first": parts["tag"],
        "tag-last": parts["end"] - 1,
    }[where]
    reader = wire.MessageReader(KEY)
    with pytest.raises(ProtocolError, match="signature"):
        feed(reader, flip(bulk_message, index, bit=len(where) % 8))


def test_flipped_bit_shrinking_a_frame_length_is_rejected(bulk_message):
    parts = layout(bulk_message)
    length = parts["lengths"][1]
    bit = length.bit_length() - 1                  # clear the top set bit: a shorter frame
    byte = parts["lengths_at"] + wire.LENGTH.size + (wire.LENGTH.size - 1 - bit // 8)
    with pytest.raises(ProtocolError):
        feed(wire.MessageReader(KEY), flip(bulk_message, byte, bit % 8))


@pytest.mark.parametrize("bit", [63, 50])
def test_huge_frame_length_is_a_protocol_error(bulk_message, bit):
    parts = layout(bulk_message)
    byte = parts["lengths_at"] + (wire.LENGTH.size - 1 - bit // 8)   # frame 0's length
    with pytest.raises(ProtocolError):
        feed(wire.MessageReader(KEY), flip(bulk_message, byte, bit % 8)[:200])


def test_replayed_message_is_rejected(pair):
    a, b = pair
    data = encoded(wire.MessageWriter(KEY), {"verb": "execute", "code": "x += 1"})
    reader = wire.MessageReader(KEY)
    msg, = feed(reader, data)
    assert msg.header["code"] == "x += 1"
    with pytest.raises(ProtocolError):
        feed(reader, data)


def test_reordered_messages_are_rejected():
    writer = wire.MessageWriter(KEY)
    first = encoded(writer, {"n": 1}, [b"one"])
    second = encoded(writer, {"n": 2}, [b"two"])
    with pytest.raises(ProtocolError):
        feed(wire.MessageReader(KEY), second + first)
    reader = wire.MessageReader(KEY)
    assert [m.header["n"] for m in feed(reader, first + second)] == [1, 2]


def test_dropped_message_is_detected():
    writer = wire.MessageWriter(KEY)
    first, _, third = (encoded(writer, {"n": n}) for n in (1, 2, 3))
    reader = wire.MessageReader(KEY)
    assert feed(reader, first)[0].header == {"n": 1}
    with pytest.raises(ProtocolError):
        feed(reader, third)


def test_message_signed_with_another_key_is_rejected():
    data = encoded(wire.MessageWriter(secrets.token_bytes(32)), {"verb": "hello"}, [b"x"])
    with pytest.raises(ProtocolError):
        feed(wire.MessageReader(KEY), data)


def test_message_reflected_to_its_sender_is_rejected():
    """Per-direction keys: what the client sent cannot be played back to the client."""
    c2s, s2c = handshake.session_keys(KEY, secrets.token_bytes(32), secrets.token_bytes(32))
    assert c2s != s2c
    data = encoded(wire.MessageWriter(c2s), {"verb": "hello"})
    assert feed(wire.MessageReader(c2s), data)[0].header == {"verb": "hello"}
    with pytest.raises(ProtocolError):
        feed(wire.MessageReader(s2c), data)


def test_session_keys_differ_per_connection():
    keys, s, c = handshake.session_keys, secrets.token_bytes(32), secrets.token_bytes(32)
    assert keys(KEY, s, c) == keys(KEY, s, c)
    assert keys(KEY, s, c) != keys(KEY, secrets.token_bytes(32), c)
    assert keys(KEY, s, c) != keys(KEY, s, secrets.token_bytes(32))
    assert keys(secrets.token_bytes(32), s, c) != keys(KEY, s, c)


# -- bad prefixes: rejected on the 16-byte prefix, before any allocation ------------

BAD_PREFIXES = {
    "wrong-magic": wire.PREFIX.pack(b"HTTP", 10, 1),
    "lowercase-magic": wire.PREFIX.pack(b"pmsg", 10, 1),
    "header-over-max": wire.PREFIX.pack(wire.MAGIC, wire.MAX_HEADER + 1, 0),
    "header-u32-max": wire.PREFIX.pack(wire.MAGIC, 0xFFFFFFFF, 0),
    "frames-over-max": wire.PREFIX.pack(wire.MAGIC, 2, wire.MAX_FRAMES + 1),
    "frames-u32-max": wire.PREFIX.pack(wire.MAGIC, 2, 0xFFFFFFFF),
}


@pytest.mark.parametrize("name", list(BAD_PREFIXES))
def test_bad_prefix_is_rejected_before_allocating(pair, name):
    a, b = pair
    reader = wire.MessageReader(KEY)
    a.send(BAD_PREFIXES[name])            # only the prefix: nothing more will ever come
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError):
            deadline = time.monotonic() + LIMIT
            while time.monotonic() < deadline:
                reader.read(b)
                select.select([b], [], [], 0.05)
            pytest.fail("the reader waited for more instead of rejecting the prefix")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"the reader allocated {peak} bytes for a bad prefix"


def test_http_request_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        feed(wire.MessageReader(KEY), b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")


def test_limits_themselves_are_accepted_prefixes(pair):
    """MAX_FRAMES frames is allowed: the reader waits for the lengths, it does not fail."""
    a, b = pair
    a.send(wire.PREFIX.pack(wire.MAGIC, 2, 3))
    assert wire.MessageReader(KEY).read(b) == []


# -- end of stream -----------------------------------------------------------------

@pytest.fixture(scope="module")
def small_message() -> bytes:
    return encoded(wire.MessageWriter(KEY), {"verb": "pull", "names": ["x"]},
                   [b"abc", np.arange(100, dtype=np.int32)])


@pytest.mark.parametrize("part", ["prefix", "lengths", "header", "frame", "tag"])
def test_eof_mid_message_is_a_cluster_error(pair, small_message, part):
    a, b = pair
    parts = layout(small_message)
    cut = {"prefix": 5, "lengths": parts["lengths_at"] + 3, "header": parts["header"] + 4,
           "frame": parts["frames"][1] + 17, "tag": parts["tag"] + 5}[part]
    reader = wire.MessageReader(KEY)
    a.sendall(small_message[:cut])
    a.close()
    with pytest.raises(ClusterError):
        reader.read(b)


def test_eof_at_start_is_a_cluster_error(pair):
    a, b = pair
    a.close()
    with pytest.raises(ClusterError):
        wire.MessageReader(KEY).read(b)


def test_eof_after_complete_messages_delivers_them_then_raises(pair):
    a, b = pair
    writer = wire.MessageWriter(KEY)
    data = encoded(writer, {"n": 1}, [b"x"]) + encoded(writer, {"n": 2}, [b"y" * 100_000])
    reader = wire.MessageReader(KEY)
    cut = layout(data)["end"] + 100                 # the first whole, the second begun
    a.sendall(data[:cut])
    assert [m.header["n"] for m in reader.read(b)] == [1]
    sender = threading.Thread(target=lambda: (a.setblocking(True), a.sendall(data[cut:]),
                                              a.close()), daemon=True)
    sender.start()
    got = []
    deadline = time.monotonic() + LIMIT
    with pytest.raises(ClusterError):
        while True:
            assert time.monotonic() < deadline
            select.select([b], [], [], 0.05)
            got += reader.read(b)
    sender.join(LIMIT)
    assert [m.header["n"] for m in got] == [2]
    assert bytes(got[0].frames[0]) == b"y" * 100_000


def test_eof_right_after_one_message_in_the_same_read(pair, small_message):
    a, b = pair
    a.sendall(small_message)
    a.close()
    reader = wire.MessageReader(KEY)
    msg, = reader.read(b)                 # data and EOF in one call: the message first
    assert msg.header == {"verb": "pull", "names": ["x"]}
    with pytest.raises(ClusterError):
        reader.read(b)


def test_connection_reset_mid_message_is_a_cluster_error(small_message):
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=LIMIT)
        conn, _ = server.accept()
    with conn:
        conn.setblocking(False)
        client.sendall(small_message[:30])
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()                    # RST
        reader = wire.MessageReader(KEY)
        deadline = time.monotonic() + LIMIT
        with pytest.raises(ClusterError):
            while time.monotonic() < deadline:
                select.select([conn], [], [], 0.05)
                reader.read(conn)
            pytest.fail("no error after a reset")


def test_tcp_round_trip_of_a_multi_megabyte_array():
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=LIMIT)
        conn, _ = server.accept()
    with client, conn:
        client.setblocking(False)
        conn.setblocking(False)
        arr = np.random.default_rng(6).standard_normal((1024, 1024))   # 8 MiB
        writer, reader = wire.MessageWriter(KEY), wire.MessageReader(KEY)
        writer.queue({"dtype": arr.dtype.str, "shape": list(arr.shape)}, [arr])
        msg, = pump(writer, client, reader, conn, 1)
        back = frame_array(msg.frames[0], np.dtype(msg.header["dtype"]), msg.header["shape"])
        np.testing.assert_array_equal(back, arr)
        assert back.flags.writeable


# -- the handshake -----------------------------------------------------------------

class Server:
    """A tiny controller side of the handshake (``ServerHandshake``, as pympec's
    controller uses it), in a thread, on loopback TCP.

    ``mode``: "controller", "garbage", "short-garbage", "silent", or "impostor"
    (answers with a proof made from another key).
    """

    def __init__(self, key: bytes, mode: str = "controller") -> None:
        self.key, self.mode = key, mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(LIMIT)
        self.address = self.listener.getsockname()
        self.result: dict = {}
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError as e:
            self.result["error"] = e
            return
        with conn:
            conn.settimeout(LIMIT)
            try:
                self._handshake(conn)
            except Exception as e:  # noqa: BLE001 - reported to the test
                self.result["error"] = e
            self.release.wait(LIMIT)

    def _handshake(self, conn) -> None:
        if self.mode == "silent":
            return
        if self.mode == "garbage":
            conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n" + b"\0" * 10)
            return
        if self.mode == "short-garbage":
            conn.sendall(b"hi")
            conn.shutdown(socket.SHUT_WR)
            return
        server = ServerHandshake(self.key)
        conn.sendall(server.greeting)
        while not server.done:
            data = conn.recv(server.wanted)
            if not data:
                break
            server.feed(data)
        self.result["ok"] = server.ok
        if self.mode == "impostor":   # does not know the key: proves with its own
            server = ServerHandshake(self.key)
            server.feed(ClientHandshake(self.key).answer(server.greeting))
            conn.sendall(server.proof)
            return
        if not server.ok:
            conn.close()             # hang up, as the controller does
            return
        conn.sendall(server.proof)
        self.result["keys"] = (server.c2s, server.s2c)
        self.result["mac"] = server.mac
        self._echo(conn, server)

    def _echo(self, conn, server: ServerHandshake) -> None:
        """One message each way over the authenticated connection."""
        conn.setblocking(False)
        reader = wire.MessageReader(server.c2s, server.mac)
        writer = wire.MessageWriter(server.s2c, server.mac)
        deadline = time.monotonic() + LIMIT
        got = []
        while not got and time.monotonic() < deadline:
            select.select([conn], [], [], 0.05)
            got = reader.read(conn)
        self.result["request"] = got[0].header
        writer.queue({"reply": got[0].header}, [got[0].frames[0]])
        while not writer.flush(conn) and time.monotonic() < deadline:
            select.select([], [conn], [], 0.05)

    def join(self) -> dict:
        self.release.set()
        self.thread.join(LIMIT)
        assert not self.thread.is_alive()
        self.listener.close()
        return self.result


def connect(server: Server) -> socket.socket:
    return socket.create_connection(server.address, timeout=LIMIT)


def test_handshake_with_the_right_key():
    server = Server(KEY)
    with connect(server) as sock:
        send_key, recv_key, mac = handshake.client_handshake(sock, KEY, timeout=5)
        sock.setblocking(False)
        writer, reader = wire.MessageWriter(send_key, mac), wire.MessageReader(recv_key, mac)
        writer.queue({"verb": "hello"}, [np.arange(1000)])
        reply, = pump(writer, sock, reader, sock, 1)
    result = server.join()
    assert "error" not in result, result.get("error")
    assert result["keys"] == (send_key, recv_key) and result["mac"] == mac
    assert mac == (wire.POLY1305 if wire.supported_macs() & wire.POLY1305 else wire.HMAC_SHA256)
    assert send_key != recv_key and KEY not in (send_key, recv_key)
    assert result["request"] == {"verb": "hello"}
    assert reply.header == {"reply": {"verb": "hello"}}
    np.testing.assert_array_equal(np.frombuffer(reply.frames[0], np.int64), np.arange(1000))


def test_handshakes_derive_fresh_keys_per_connection():
    keys = []
    for _ in range(2):
        server = Server(KEY)
        with connect(server) as sock:
            keys.append(handshake.client_handshake(sock, KEY, timeout=5))
        server.result.setdefault("request", None)
        server.join()
    assert keys[0] != keys[1]


def test_handshake_with_a_wrong_key():
    server = Server(KEY)
    with connect(server) as sock, pytest.raises(SecurityError, match="key"):
        handshake.client_handshake(sock, secrets.token_bytes(32), timeout=5)
    result = server.join()
    assert result["ok"] is False
    assert "keys" not in result


def test_controller_that_cannot_prove_the_key():
    server = Server(secrets.token_bytes(32), mode="impostor")
    with connect(server) as sock, pytest.raises(SecurityError):
        handshake.client_handshake(sock, KEY, timeout=5)
    server.join()


@pytest.mark.parametrize("mode", ["garbage", "short-garbage"])
def test_garbage_greeting_is_a_cluster_error(mode):
    server = Server(KEY, mode=mode)
    with connect(server) as sock, pytest.raises(ClusterError) as info:
        handshake.client_handshake(sock, KEY, timeout=5)
    assert not isinstance(info.value, SecurityError)
    server.join()


def test_silent_server_times_out_with_cluster_error():
    server = Server(KEY, mode="silent")
    start = time.monotonic()
    with connect(server) as sock, pytest.raises(ClusterError, match="0.3"):
        handshake.client_handshake(sock, KEY, timeout=0.3)
    elapsed = time.monotonic() - start
    assert 0.25 < elapsed < 3
    server.join()


@pytest.mark.parametrize("mac", [wire.HMAC_SHA256, wire.POLY1305])
def test_round_trip_and_tampering_with_each_mac(mac):
    if not wire.supported_macs() & mac:
        pytest.skip("Poly1305 needs the cryptography package (pympec[fast])")
    writer, reader = wire.MessageWriter(KEY, mac), wire.MessageReader(KEY, mac)
    data = encoded(writer, {"n": 1}, [np.arange(300_000)])
    msg, = feed(reader, data)
    assert np.array_equal(np.frombuffer(msg.frames[0], np.int64), np.arange(300_000))
    forged = encoded(writer, {"n": 2}, [np.arange(300_000)])
    with pytest.raises(ProtocolError):
        feed(reader, flip(forged, len(forged) // 2))
    # a tag made with the other MAC does not pass either
    other = wire.POLY1305 if mac == wire.HMAC_SHA256 else wire.HMAC_SHA256
    if wire.supported_macs() & other:
        data = encoded(wire.MessageWriter(KEY, other), {}, [bytes(wire.POLY1305_FROM)])
        pad = b"\0" * max(0, wire.tag_size(mac) - wire.tag_size(other))   # a whole "tag"
        with pytest.raises(ProtocolError):
            feed(wire.MessageReader(KEY, mac), data + pad)


def test_small_messages_use_hmac_even_with_poly1305():
    small = encoded(wire.MessageWriter(KEY, wire.POLY1305), {"n": 1}, [b"x" * 100])
    assert feed(wire.MessageReader(KEY, wire.HMAC_SHA256), small)[0].header == {"n": 1}
    assert len(small) - layout(small)["tag"] == wire.tag_size(wire.HMAC_SHA256)


BOTH = wire.HMAC_SHA256 | wire.POLY1305


def answered(answer: bytes, snonce: bytes, offer: int = BOTH,
             key: bytes = KEY) -> ServerHandshake:
    """The controller's side of a handshake (challenge ``snonce``) fed ``answer``."""
    server = ServerHandshake(key, offer, snonce=snonce)
    server.feed(answer)
    return server


def test_both_sides_agree():
    server = ServerHandshake(KEY, BOTH)
    client = ClientHandshake(KEY, macs=BOTH)
    assert server.feed(client.answer(server.greeting)) == ANSWER
    assert server.done and server.ok and server.wanted == 0
    assert client.check(server.proof)
    assert (client.c2s, client.s2c, client.mac) == (server.c2s, server.s2c, wire.POLY1305)
    assert server.c2s != server.s2c and KEY not in (server.c2s, server.s2c)
    assert ClientHandshake(KEY, macs=wire.HMAC_SHA256).answer(server.greeting)[NONCE] \
        == wire.HMAC_SHA256


def test_offer_and_choice_cannot_be_downgraded():
    """The proof covers the controller's offer and the client's choice."""
    snonce = secrets.token_bytes(NONCE)
    greeting = ServerHandshake(KEY, BOTH, snonce=snonce).greeting
    answer = ClientHandshake(KEY, macs=BOTH).answer(greeting)
    assert answered(answer, snonce).ok
    assert not answered(answer, snonce, offer=answer[NONCE]).ok             # offer changed
    changed = answer[:NONCE] + bytes([answer[NONCE] ^ 3]) + answer[NONCE + 1:]
    assert not answered(changed, snonce).ok                                 # choice changed
    assert not answered(answer, snonce, offer=wire.HMAC_SHA256).ok          # not offered


def test_server_handshake_rejects_malformed_answers():
    snonce = secrets.token_bytes(NONCE)
    client = ClientHandshake(KEY)
    good = client.answer(ServerHandshake(KEY, BOTH, snonce=snonce).greeting)
    assert client.check(answered(good, snonce).proof)
    for short in (b"", good[:1], good[:-1]):
        server = answered(short, snonce)
        assert not server.done and not server.ok and server.wanted == ANSWER - len(short)
    for bad in (flip(good, 5), flip(good, len(good) - 1), bytes(ANSWER)):   # cnonce, proof
        server = answered(bad, snonce)
        assert server.done and not server.ok and server.proof is None and server.c2s is None
    # an answer recorded for another challenge is worthless (no handshake replay)
    assert not answered(good, secrets.token_bytes(NONCE)).ok
    assert not answered(good, snonce, key=secrets.token_bytes(32)).ok


def test_server_handshake_leaves_the_bytes_after_the_answer():
    server = ServerHandshake(KEY)
    answer = ClientHandshake(KEY).answer(server.greeting)
    assert server.feed(answer[:10]) == 10
    assert server.feed(memoryview(answer + b"PMSG and more")[10:]) == ANSWER - 10
    assert server.ok and server.feed(b"more") == 0


def test_server_handshake_never_raises_on_garbage():
    """Whatever a peer sends before it is authenticated, in whatever pieces, the
    controller's side ends in a clean failure (or keeps waiting), never an exception."""
    rng = random.Random(11)
    for _ in range(2000):
        server = ServerHandshake(KEY, rng.choice([wire.HMAC_SHA256, BOTH]))
        data = rng.randbytes(rng.choice([0, 1, ANSWER - 1, ANSWER, ANSWER + 1, 4096]))
        if rng.random() < 0.5 and len(data) > NONCE:   # a valid MAC choice, a wrong proof
            data = data[:NONCE] + bytes([rng.choice([1, 2, 3, 0, 255])]) + data[NONCE + 1:]
        used = 0
        while used < len(data) and not server.done:
            step = rng.randint(1, 80)
            n = server.feed(bytearray(data[used:used + step]))
            assert 0 < n <= step
            used += n
        assert not server.ok and server.done == (len(data) >= ANSWER)
        assert used == min(len(data), ANSWER)


def test_nonces_must_be_32_bytes():
    with pytest.raises(ValueError, match="32"):
        ServerHandshake(KEY, snonce=b"short")
    with pytest.raises(ValueError, match="32"):
        ClientHandshake(KEY, cnonce=bytes(33))


def test_client_handshake_rejects_bad_greetings():
    client = ClientHandshake(KEY)
    good = ServerHandshake(KEY).greeting
    with pytest.raises(ClusterError, match="protocol 02 and this client 04"):
        client.answer(b"PYMPEC02" + good[8:])
    for bad in (b"", good[:-1], good + b"x", b"SSH-2.0-" + good[8:]):
        with pytest.raises(ClusterError, match="not a pympec controller"):
            client.answer(bad)
    assert not client.check(bytes(32)), "no proof checks before an answer"


# -- segments and early messages (streaming) -------------------------------------------

@pytest.mark.parametrize("lengths", [[], [0], [5], [wire.SEGMENT], [wire.SEGMENT + 1],
                                     [3, 0, wire.SEGMENT - 3, 7], [2 * wire.SEGMENT + 9, 0, 1]])
def test_segments_cover_every_byte_in_order(lengths):
    runs = list(wire.segments(lengths))
    covered = [(f, a, b) for f, a, b, _ in runs]
    expect, at = [], {}
    for f, a, b in covered:
        assert a == at.get(f, 0) and b > a, "runs are in order, non-empty, contiguous"
        at[f] = b
    assert {f: n for f, n in enumerate(lengths) if n} == at
    size = 0                                     # segments end exactly every SEGMENT bytes
    for f, a, b, last in runs:
        size += b - a
        assert size <= wire.SEGMENT
        if last:
            size = 0
    assert size == 0 and (not runs or runs[-1][3])


def big_message(nbytes: int = 3 * wire.SEGMENT + 123) -> tuple[dict, np.ndarray]:
    return {"verb": "push"}, np.arange(nbytes, dtype=np.uint8)


def test_early_message_fills_in_as_segments_check(pair):
    header, data = big_message()
    writer = wire.MessageWriter(KEY, wire.POLY1305 if wire.Poly1305 else wire.HMAC_SHA256)
    raw = encoded(writer, header, [data]) + encoded(writer, {"next": 1}, [b"x" * 10])
    reader = wire.MessageReader(KEY, writer._kind, early=lambda m: sum(map(len, m.frames)) > 1000)
    a, b = pair
    handed, seen = [], []
    for at in range(0, len(raw), 1 << 16):
        a.sendall(raw[at:at + (1 << 16)])
        handed += reader.read(b)
        if handed:
            seen.append(handed[0].verified)
    first, second = handed
    assert first.header == header and second.header == {"next": 1}
    assert seen == sorted(seen) and len(set(seen)) > 3, "verified grows segment by segment"
    assert first.complete and not first.failed and second.complete
    assert bytes(first.frames[0]) == data.tobytes()
    assert reader.partial is None


def send_through(a, b, reader: wire.MessageReader, data: bytes) -> list[wire.Message]:
    """Send ``data`` on ``a`` while ``reader`` reads ``b`` (a socketpair holds less than
    a segment); returns what the reader handed out."""
    got = []
    for at in range(0, len(data), 1 << 16):
        a.sendall(data[at:at + (1 << 16)])
        got += reader.read(b)
    return got


def test_early_message_is_handed_out_before_its_payload(pair):
    header, data = big_message()
    raw = encoded(wire.MessageWriter(KEY), header, [data])
    tags = layout(raw)["tags"]
    reader = wire.MessageReader(KEY, early=lambda m: True)
    a, b = pair
    got = send_through(a, b, reader, raw[:tags[1]])   # part 0 and its tag, segment 1
    assert len(got) == 1 and got[0].header == header
    assert got[0].verified == 0 and not got[0].complete and reader.partial is got[0]
    assert send_through(a, b, reader, raw[tags[1]:tags[2]]) == []   # its tag, segment 2
    assert got[0].verified == wire.SEGMENT


def test_tampered_later_segment_stops_at_the_last_good_one(pair):
    header, data = big_message()
    raw = encoded(wire.MessageWriter(KEY), header, [data])
    tags = layout(raw)["tags"]
    bad = flip(raw, tags[2] - 5)                 # inside segment 2
    reader = wire.MessageReader(KEY, early=lambda m: True)
    a, b = pair
    message, = send_through(a, b, reader, bad[:tags[2] - 10])
    assert message.verified == wire.SEGMENT
    with pytest.raises(ProtocolError, match="signature"):
        send_through(a, b, reader, bad[tags[2] - 10:])
    assert message.verified == wire.SEGMENT and not message.complete


def test_segments_cannot_be_swapped():
    header, data = big_message(2 * wire.SEGMENT)
    data[wire.SEGMENT:] = 7                      # the two segments differ
    raw = encoded(wire.MessageWriter(KEY), header, [data])
    t = layout(raw)["tags"]
    seg1, seg2 = raw[t[0] + TAG:t[1] + TAG], raw[t[1] + TAG:t[2] + TAG]
    swapped = raw[:t[0] + TAG] + seg2 + seg1
    with pytest.raises(ProtocolError):
        feed(wire.MessageReader(KEY), swapped)


def test_controller_of_another_protocol_version_is_named():
    """A client meeting a controller of another pympec version says so, instead of
    failing later on signatures."""
    old = b"PYMPEC02" + secrets.token_bytes(NONCE) + bytes([wire.HMAC_SHA256])
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        conn.sendall(old)
        with contextlib.suppress(ConnectionResetError):   # (the client stops reading at once)
            conn.recv(100)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with socket.create_connection(listener.getsockname(), timeout=5) as sock, \
            pytest.raises(ClusterError, match="protocol 02 and this client 04"):
        handshake.client_handshake(sock, KEY, timeout=5)
    thread.join(timeout=LIMIT)
    listener.close()


def test_filling_frame_goes_out_only_as_it_lands(pair):
    """A result still arriving from MPI (wire.Filling) streams: the writer sends the
    header at once, each segment once it has landed (pieces land out of order), and the
    wire bytes are exactly those of the same message sent whole."""
    header, data = big_message()
    whole = encoded(wire.MessageWriter(KEY), header, [data])
    filling = wire.Filling(memoryview(bytearray(len(data))))
    writer = wire.MessageWriter(KEY)
    writer.queue(header, [filling])
    a, b = pair
    out = bytearray()
    assert not writer.flush(a) and writer.stalled
    out += drain(b)
    assert len(out) == layout(whole)["tags"][0] + TAG, "part 0 and its tag only"
    pieces = [(at, min(at + 700_000, len(data))) for at in range(0, len(data), 700_000)]
    for start, stop in [pieces[1], pieces[0], *pieces[2:]]:   # the first lands second
        filling.view[start:stop] = data[start:stop].tobytes()
        filling.land(start, stop)
        sent_before = len(out)
        deadline = time.monotonic() + LIMIT
        while not writer.flush(a) and not writer.stalled:
            assert time.monotonic() < deadline
            out += drain(b)
        out += drain(b)
        if stop == pieces[1][1]:
            assert len(out) == sent_before, "nothing goes before the first bytes land"
    assert not writer.pending and bytes(out) == whole
    message, = feed(wire.MessageReader(KEY), bytes(out))
    assert bytes(message.frames[0]) == data.tobytes()


# -- a read or write cut short ------------------------------------------------------

def test_a_read_cut_short_leaves_the_reader_interrupted(pair):
    """An exception inside a read (here from the ``early`` callback, as a Ctrl-C would
    land anywhere) leaves the reader between two steps: it says so, and refuses to go
    on from there (going on once misplaced the next segment's bytes: bug 23 of
    docs/reliability.md)."""
    a, b = pair
    writer = wire.MessageWriter(KEY)

    def cut(message: wire.Message) -> bool:
        raise KeyboardInterrupt

    reader = wire.MessageReader(KEY, writer._kind, early=cut)
    writer.queue({"id": "big"}, [np.arange(1 << 18, dtype=np.float64)])
    deadline = time.monotonic() + LIMIT
    with pytest.raises(KeyboardInterrupt):
        while time.monotonic() < deadline:
            writer.flush(a)
            reader.read(b)
            select.select([b], [], [], 0.05)
    assert reader.interrupted
    with pytest.raises(ClusterError, match="interrupted read"):
        reader.read(b)


def test_a_whole_read_leaves_the_reader_usable(pair):
    a, b = pair
    writer, reader = wire.MessageWriter(KEY), wire.MessageReader(KEY)
    writer.queue({"id": 1})
    assert [m.header for m in pump(writer, a, reader, b, 1)] == [{"id": 1}]
    assert not reader.interrupted and not writer.interrupted
