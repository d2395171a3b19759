"""The pieces of a one-engine no-op ``execute``, timed alone in one process, beside the
cheaper ways proposed for them (benchmarks/README.md, "Where a no-op call's time goes").

    python -m benchmarks.micro

Each figure is the best of 7 runs of a loop, in µs per call.  orjson and msgpack are
measured when installed (``pip install orjson msgpack``).  Nothing here changes pympec:
the alternatives are written out below, as small as they would be in the code.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import socket
import sys
import time
import uuid

from pympec.engine.interpreter import Interpreter, statements
from pympec.protocol import serialize, wire
from pympec.errors import ProtocolError
from pympec.protocol.mpiwire import encode_header

KEY = os.urandom(32)

# The messages of a one-engine no-op execute, as they are now (ids are uuid4 hex).
REQUEST = {"id": uuid.uuid4().hex, "verb": "execute", "targets": 0,
           "args": {"code": "pass"}, "describe": "execute(pass)"}
COMMAND = {"job": 12345, "verb": "execute", "args": {"code": "pass"}, "reply": "p2p"}
RECORD = {"id": 0, "number": 17, "input": {"raw": "pass", "translated": "pass"}}
REPLY = {"status": "ok", "metas": [serialize.encode_json(RECORD)], "job": 12345,
         "lengths": [], "inline": True}
RESULT = {"id": REQUEST["id"], "results": [{**REPLY, "engine": 0, "nframes": 0}]}


def per_call(f, n: int = 20000, runs: int = 7) -> float:
    """µs per call of ``f()``: the best of ``runs`` loops of ``n`` calls."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            f()
        best = min(best, (time.perf_counter_ns() - t0) / n / 1e3)
    return best


# -- the engine's work -------------------------------------------------------------

class Reused(Interpreter):
    """execute with capture set up once per engine, not per call: the same two StringIO
    objects emptied between calls, the streams swapped without a contextmanager."""

    out, err = io.StringIO(), io.StringIO()

    def execute(self, code, live=None):
        self.number += 1
        record = {"id": self.id, "number": self.number,
                  "input": {"raw": code, "translated": code}}
        self.history[self.number] = record
        out, err = self.out, self.err
        out.seek(0), out.truncate(), err.seek(0), err.truncate()
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            for statement in statements(code):
                exec(statement, self.namespace)
        finally:
            sys.stdout, sys.stderr = saved
            for name, stream in (("stdout", out), ("stderr", err)):
                if stream.tell():
                    record[name] = stream.getvalue()
        return record


def engine() -> list[tuple[str, float]]:
    now, reused = Interpreter(0, {}), Reused(0, {})
    code = statements("pass")[0]
    ns: dict = {}
    return [
        ("Interpreter.execute('pass'), now", per_call(lambda: now.execute("pass"))),
        ("  the same with capture set up once (Reused above)",
         per_call(lambda: reused.execute("pass"))),
        ("  exec of the cached code alone", per_call(lambda: exec(code, ns))),
        ("encode_header(reply) (json.dumps)", per_call(lambda: encode_header(REPLY))),
    ]


# -- headers: json against orjson and msgpack ---------------------------------------

def headers() -> list[tuple[str, float]]:
    out = []
    dumps = lambda h: json.dumps(h, separators=(",", ":")).encode()   # noqa: E731
    loads = json.loads
    encoder = json.JSONEncoder(separators=(",", ":"))   # made once, not per call
    coders = [("json", dumps, loads),
              ("json, one JSONEncoder kept, loads of str",
               lambda h: encoder.encode(h).encode(), lambda raw: loads(raw.decode()))]
    try:
        import orjson
        coders.append(("orjson", orjson.dumps, orjson.loads))
    except ImportError:
        pass
    try:
        import msgpack
        coders.append(("msgpack", msgpack.packb, msgpack.unpackb))
    except ImportError:
        pass
    for name, enc, dec in coders:
        total = 0.0
        for header in (REQUEST, COMMAND, REPLY, RESULT):   # each is written once, read once
            raw = enc(header)
            total += per_call(lambda: enc(header)) + per_call(lambda: dec(raw))
        out.append((f"4 headers of a call encoded and decoded once each: {name}", total))
    return out


# -- signing, and the client's request id ----------------------------------------------

def signing() -> list[tuple[str, float]]:
    lead = wire.PREFIX.pack(wire.MAGIC, 120, 0) + json.dumps(RESULT).encode()
    seq = wire.LENGTH.pack(7) + wire.LENGTH.pack(0)

    def now():   # what MessageWriter.queue and _batch do for a message without frames
        mac = hmac.new(KEY, seq, hashlib.sha256)
        mac.update(lead)
        return mac.digest()

    return [
        ("HMAC of a small message: hmac.new + update + digest (now)", per_call(now)),
        ("  one-shot hmac.digest(key, seq + lead, 'sha256')",
         per_call(lambda: hmac.digest(KEY, seq + lead, "sha256"))),
        ("uuid.uuid4().hex, a request id (now)", per_call(lambda: uuid.uuid4().hex)),
        ("  os.urandom(16).hex()", per_call(lambda: os.urandom(16).hex())),
    ]


# -- buffers and polling -----------------------------------------------------------------

def buffers_and_polls() -> list[tuple[str, float]]:
    import select
    import numpy as np
    from pympec.protocol import buffers
    raw = np.empty(64 + buffers.ALIGN, np.uint8)
    a, b = socket.socketpair()
    b.setblocking(False)
    reader = wire.MessageReader(KEY)
    poller = select.poll()
    poller.register(b, select.POLLIN)
    try:
        return [
            ("buffers.allocate(0): a message without frames (now)",
             per_call(lambda: buffers.allocate(0))),
            ("  memoryview(bytearray(0))", per_call(lambda: memoryview(bytearray(0)))),
            ("  of which the address, raw.ctypes.data",
             per_call(lambda: raw.ctypes.data)),
            ("  raw.__array_interface__['data'][0]",
             per_call(lambda: raw.__array_interface__["data"][0])),
            ("one spin of a waiting client: MessageReader.read of an empty socket (now)",
             per_call(lambda: reader.read(b))),
            ("  poll(0) on the socket", per_call(lambda: poller.poll(0))),
        ]
    finally:
        a.close()
        b.close()


# -- a small message over a socket pair: writer, reader --------------------------------

def read_small(sock: socket.socket, stage: bytearray, key: bytes, seq: int) -> dict | None:
    """A fast path the reader could take: a message without frames that arrived whole in
    one recv is checked and parsed in one step (same checks, same MAC); None otherwise."""
    n = sock.recv_into(stage)
    magic, head_len, nframes = wire.PREFIX.unpack_from(stage)
    end = wire.PREFIX.size + head_len
    if magic != wire.MAGIC or nframes or n != end + 32:
        return None
    mac = hmac.new(key, wire.LENGTH.pack(seq) + wire.LENGTH.pack(0), hashlib.sha256)
    mac.update(memoryview(stage)[:end])
    if not hmac.compare_digest(mac.digest(), stage[end:n]):
        raise ProtocolError("message signature mismatch")
    return json.loads(stage[wire.PREFIX.size:end].decode())


def framing() -> list[tuple[str, float]]:
    a, b = socket.socketpair()
    b.setblocking(False)
    writer, reader = wire.MessageWriter(KEY), wire.MessageReader(KEY)

    def round_trip():
        writer.queue(RESULT)
        writer.flush(a)
        while not reader.read(b):
            pass

    def write_only(alone=wire.MessageWriter(KEY)):
        alone.queue(RESULT)
        alone.flush(a)
        b.recv(65536)

    def queue_only(alone=wire.MessageWriter(KEY)):
        alone.queue(RESULT)
        alone._pieces.clear()

    stage, seq = bytearray(1 << 16), [0]

    def fast_trip(alone=wire.MessageWriter(KEY)):
        alone.queue(RESULT)
        alone.flush(a)
        assert read_small(b, stage, KEY, seq[0]) == RESULT
        seq[0] += 1

    try:
        trip = per_call(round_trip, 5000)
        write = per_call(write_only, 5000)
        fast = per_call(fast_trip, 5000)
        return [
            ("reply to the client: queue, sign, sendmsg, read, check, parse (now)", trip),
            ("  of which the writer: queue, sign, sendmsg", write),
            ("    of which MessageWriter.queue", per_call(queue_only)),
            ("  so the reader: recv, check, parse (the difference)", trip - write),
            ("  the reader with read_small's fast path (the difference)", fast - write),
        ]
    finally:
        a.close()
        b.close()


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.2f}\n\n| piece | µs |\n|---|---|")
    for name, us in engine() + headers() + signing() + buffers_and_polls() + framing():
        print(f"| {name} | {us:.2f} |")


if __name__ == "__main__":
    main()
