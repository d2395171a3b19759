"""Correctly signed but malformed requests (a client holding the key, with a bug or
worse): at least 10,000 of them, seeded and reproducible, against a real cluster.

Each goes on a raw authenticated connection, followed by a probe request on the same
connection.  After each one:
- the malformed request got an error reply naming what was wrong, or (with no id to
  answer, or a header that is not JSON) its connection was closed: never silence;
- a legitimate client on its own connection is still served;
and every few hundred cases, and at the end, every engine still runs code.  At the end
the controller's log holds no exception from its loop.

Cases: headers that are not JSON objects, wrong types for every field of every verb,
missing fields, unknown and internal verbs, extra fields, deep nesting (up to 100,000
levels), huge lists and strings, and negative, oversized or mismatched part counts.
"""
from __future__ import annotations

import json
import random
import select
import socket
import time
from collections import Counter

import numpy as np
import pytest

from pympec import connection
from pympec.protocol import serialize, wire
from pympec.protocol.handshake import client_handshake

SEED = 20261202
CASES = 10_000
LIMIT = 20.0          # seconds any one reply may take

# A valid request of every client verb (not kill or shutdown: they would end the test's
# own cluster), in the form the controller sees: engine verbs carry their fields in args.
PICKLED_ONE = serialize.dumps(1)
ARRAY = np.arange(4.0)
BASES = [
    ({"verb": "get_ids"}, []),
    ({"verb": "status"}, []),
    ({"verb": "queue_status", "targets": "all"}, []),
    ({"verb": "clear_queue", "targets": [1]}, []),
    ({"verb": "ack", "acks": ["nothing"]}, []),
    ({"verb": "task_submit", "tasks": [{"kind": "string", "n": 0, "code": "y = 1",
                                        "pull": ["y"]}]}, []),
    ({"verb": "task_fetch", "ids": [0], "wait": 0}, []),
    ({"verb": "task_abort", "tid": 0}, []),
    ({"verb": "task_clear", "ids": None, "forget": []}, []),
    ({"verb": "task_status", "verbose": False}, []),
    ({"verb": "task_config", "result_cap": None}, []),
    ({"verb": "execute", "targets": 0, "args": {"code": "x = 1"}}, []),
    ({"verb": "push", "targets": "all", "args": {"names": ["a"], "metas": [
        {"kind": "pickle", "n": 1}]}, "deliver": "same"}, PICKLED_ONE),
    ({"verb": "push", "targets": [0, 1], "args": {"names": ["b"], "parts": {
        "0": [serialize.array_meta(ARRAY)], "1": [serialize.array_meta(ARRAY)]}},
      "deliver": "parts", "parts": [1, 1]}, [ARRAY, ARRAY]),
    ({"verb": "pull", "targets": 1, "args": {"keys": ["id"]}}, []),
    ({"verb": "gather", "targets": "all", "args": {"key": "id"}}, []),
    ({"verb": "apply", "targets": 0, "args": {"name": "len"}, "deliver": "parts",
      "parts": [1]}, serialize.dumps([("ab",)])),
    ({"verb": "keys", "targets": 0}, []),
    ({"verb": "reset", "targets": 1}, []),
    ({"verb": "get_result", "targets": 0, "args": {"number": None}}, []),
    ({"verb": "set_properties", "targets": 0, "deliver": "same"},
     serialize.dumps({"p": 1})),
    ({"verb": "get_properties", "targets": 0, "args": {"keys": None}}, []),
    ({"verb": "has_properties", "targets": 0, "args": {"keys": ["p"]}}, []),
    ({"verb": "del_properties", "targets": 0, "args": {"keys": ["nope"]}}, []),
    ({"verb": "clear_properties", "targets": 1}, []),
]
ODD_VALUES = [None, True, False, 0, -1, 1 << 63, -(1 << 70), 1.5, float("nan"),
              float("inf"), "", "x", "all", "a b", "\u0000", [], [1], [-1], ["a"], [None],
              {}, {"a": 1}, {"kind": "pickle"}, [[[]]], "z" * 5000]
ODD_VERBS = ["", "hello!", "_shutdown", "_group", "task_batch", "TASK_SUBMIT", "execute ",
             "__init__", "do_ping", "ping", "kill\x00", 1, None, ["execute"], {"v": 1}]


def deep(depth: int, inner: str = "0") -> bytes:
    return ("[" * depth + inner + "]" * depth).encode()


def mutate(rng: random.Random, i: int) -> tuple[object, list, bool]:
    """Case ``i``: (header, as a dict or raw JSON bytes; frames; whether it may close
    its connection instead of replying: no usable id, or no JSON object)."""
    base, frames = rng.choice(BASES)
    header = json.loads(json.dumps(base))
    header["id"] = f"case-{i}"
    frames = list(frames)
    kind = rng.randrange(10)
    if kind == 0:        # not an object at all
        return rng.choice([[1, 2], 7, "text", None, 1.5, True, [header]]), frames, True
    if kind == 1:        # a field of the wrong type, at the top or in args
        where = header["args"] if "args" in header and rng.random() < 0.5 else header
        key = rng.choice(sorted(where) + ["id"] * (where is header))
        where[key] = rng.choice(ODD_VALUES)
        return header, frames, key == "id"
    if kind == 2:        # a field missing
        key = rng.choice(sorted(header))
        del header[key]
        return header, frames, key == "id"
    if kind == 3:        # unknown and internal verbs
        header["verb"] = rng.choice(ODD_VERBS + [f"verb{rng.randrange(1000)}"])
        return header, frames, False
    if kind == 4:        # a field nobody declared
        where = header["args"] if "args" in header and rng.random() < 0.5 else header
        where[rng.choice(["gather", "job", "reply", "_live", "extra", "Id"])] = 1
        return header, frames, False
    if kind == 5:        # deep nesting: parsed, or refused by the reader
        depth = rng.choice([20, 100, 1000, 5000, 100_000])
        text = json.dumps(header)[:-1] + ', "targets": ' + deep(depth).decode() + "}"
        return text.encode(), frames, depth >= 1000
    if kind == 6:        # lists and strings over their limits (megabytes, now and then)
        field, value = rng.choice([("acks", ["a"] * 70_000), ("describe", "d" * 5000),
                                   ("id", "i" * 1000), ("targets", "t" * 100_000)])
        if rng.random() < 0.03:
            field, value = rng.choice([("targets", list(range((1 << 20) + 1))),
                                       ("parts", [0] * ((1 << 20) + 1)),
                                       ("describe", "d" * (8 << 20))])
        header[field] = value
        return header, frames, field == "id"
    if kind == 7:        # part counts: negative, oversized, mismatched, or misplaced
        header["deliver"] = rng.choice(["parts", "same", "bogus", None])
        header["parts"] = rng.choice([[-1, 2], [1 << 40], [0], [1, 1, 1], [], "2", [0.5]])
        if rng.random() < 0.3:
            frames = []
        return header, frames, False
    if kind == 8:        # frames where none belong, or none where they must be
        frames = [] if frames else [b"stray"] * rng.randrange(1, 4)
        return header, frames, False
    for _ in range(3):   # a few of the above at once
        h, frames, closes = mutate(rng, i)
        if isinstance(h, dict):
            return h, frames, closes
    return h, frames, closes


class Raw:
    """An authenticated connection that sends whatever it is given, signed."""

    def __init__(self, info: connection.ConnectionInfo, hello: bool = True) -> None:
        """Connect and authenticate; then, with ``hello``, say hello as a new client."""
        self.sock = socket.create_connection((info.address, info.port), timeout=LIMIT)
        send_key, recv_key, mac = client_handshake(self.sock, info.key_bytes, LIMIT)
        self.sock.setblocking(False)
        self.writer = wire.MessageWriter(send_key, mac)
        self.reader = wire.MessageReader(recv_key, mac)
        self.replies: dict = {}
        self.closed = False
        if hello:
            self.send({"verb": "hello", "id": "hello", "client": f"raw-{id(self)}"})
            assert "value" in self.wait("hello")

    def send(self, header: object, frames: list = ()) -> None:
        raw = header if isinstance(header, bytes) else json.dumps(header).encode()
        self.writer.queue(raw, frames)
        deadline = time.monotonic() + LIMIT
        while not self.closed and not self.writer.flush(self.sock):
            assert time.monotonic() < deadline, "the controller stopped reading"
            select.select([self.sock], [self.sock], [], 0.1)
            self.read()

    def read(self) -> None:
        try:
            for message in self.reader.read(self.sock):
                self.replies[message.header.get("id")] = message.header
        except Exception:   # closed by the controller (ClusterError), or reset
            self.closed = True

    def wait(self, request_id: str) -> dict | None:
        """The reply to ``request_id``, or None once the connection is closed."""
        deadline = time.monotonic() + LIMIT
        while request_id not in self.replies and not self.closed:
            assert time.monotonic() < deadline, f"no reply to {request_id} in {LIMIT} s"
            select.select([self.sock], [], [], 0.1)
            self.read()
        return self.replies.pop(request_id, None)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.timeout(900)
def test_ten_thousand_malformed_requests(private_cluster):
    info = connection.load(private_cluster.connection_file)
    mec = private_cluster.client()
    tc = private_cluster.task_client()
    rng = random.Random(SEED)
    raw = Raw(info)
    outcomes: Counter = Counter()
    for i in range(CASES):
        header, frames, may_close = mutate(rng, i)
        raw.send(header, frames)
        raw.send({"verb": "get_ids", "id": f"probe-{i}"})
        probe = raw.wait(f"probe-{i}")
        case_id = header.get("id") if isinstance(header, dict) else None
        answerable = isinstance(case_id, str) and header.get("verb") != "ack"
        # (a valid request for the engines is answered after the probe)
        reply = raw.wait(case_id) if answerable else None
        if raw.closed:
            assert may_close or reply is not None, f"case {i} closed its connection: {header!r:.300}"
            outcomes["closed"] += 1
            raw.close()
            raw = Raw(info)
        else:
            assert probe is not None and "value" in probe
            if answerable:
                assert reply is not None, f"case {i} got no reply: {header!r:.300}"
            if reply is not None:
                outcomes["error" if "error" in reply else "ok"] += 1
                if "error" in reply:
                    assert reply["error"]["evalue"], f"case {i}: an error without a message"
            else:
                outcomes["unanswerable"] += 1
        assert mec.get_ids() == [0, 1], f"after case {i}"
        if i % 500 == 0:
            tc.configure(result_cap=1 << 30)   # (a case may set it to 0: a valid request)
            assert mec.pull("id") == [0, 1], f"engines after case {i}"
    raw.close()
    tc.clear()
    tc.configure(result_cap=1 << 30)
    assert mec.execute("pass") is not None and mec.pull("id") == [0, 1]
    assert tc.map(lambda v: v + 1, range(10)) == list(range(1, 11))
    log = (connection.paths.log_dir() / f"pympec-{info.cluster_id}-rank0.log").read_text()
    assert "Traceback" not in log and "internal error" not in log
    print(dict(outcomes))
    assert outcomes["error"] > CASES // 2 and outcomes["closed"] > 100
