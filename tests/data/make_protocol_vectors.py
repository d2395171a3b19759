"""Write the known-answer test vectors of the pympec wire protocol, on purpose.

    python tests/data/make_protocol_vectors.py

writes ``tests/data/protocolNN.json`` (NN: the version in ``handshake.GREETING``).
Fixed keys and nonces give fixed bytes: each handshake (the controller's greeting,
the client's answer, the controller's proof, both session keys, the MAC chosen) and
the wire bytes of a few messages from one ``wire.MessageWriter`` per MAC, in order
(sequence numbers 0, 1, ...).  A message of up to ``WHOLE`` bytes is stored whole, in
hex; a larger one as its length, the SHA-256 of its bytes and its tags with their
offsets.  Frames are given in hex, or as ``{"counter": n}``: n bytes, byte i = i % 256.

``tests/test_protocol_vectors.py`` checks that today's code gives exactly these bytes.
Run this only after a change to the wire format that also bumped the protocol version.
It needs the ``cryptography`` package (``pympec[fast]``) for the Poly1305 vectors.
"""
from __future__ import annotations

import hashlib
import json
import socket
import sys
from pathlib import Path

from pympec.protocol import wire
from pympec.protocol.handshake import GREETING, ClientHandshake, ServerHandshake

WHOLE = 1024   # messages up to this many bytes are stored whole
MACS = {"hmac-sha256": wire.HMAC_SHA256, "poly1305": wire.POLY1305}
BOTH = wire.HMAC_SHA256 | wire.POLY1305

ABOUT = [
    "Known-answer test vectors of the pympec wire protocol: fixed keys and nonces give",
    "fixed bytes. Written by tests/data/make_protocol_vectors.py, checked by",
    "tests/test_protocol_vectors.py; change them only with the protocol version.",
    "Bytes are in hex. Handshakes: inputs (key, snonce, cnonce, offer, client_macs) and",
    "expect (greeting, answer, proof, c2s and s2c keys, mac). Messages: per MAC, one",
    "MessageWriter(key, mac) writes the sequence in order (seq 0, 1, ...); a frame is",
    "{hex} or {counter: n} (n bytes, byte i = i % 256); expect is the whole wire bytes,",
    "or, above 1024 bytes, their length, SHA-256 and the tags as [offset, tag].",
]
KEY, SNONCE, CNONCE = bytes(range(32)), bytes(range(32, 64)), bytes(range(64, 96))
HANDSHAKES = [   # offer: the controller's MACs; client_macs: the client's
    {"offer": BOTH, "client_macs": BOTH},                        # both choose Poly1305
    {"offer": BOTH, "client_macs": wire.HMAC_SHA256},            # a client without it
    {"offer": wire.HMAC_SHA256, "client_macs": BOTH},            # a controller without it
]
MESSAGE_KEY = bytes(range(128, 160))
MESSAGES = [
    {"header": {"id": "1", "verb": "get_ids"}, "frames": []},
    {"header": {"id": "2", "verb": "push", "targets": [0]},
     "frames": [{"hex": b"hello, engines".hex()}]},
    # the smallest message that Poly1305 signs, when it is on
    {"header": {"id": "3", "verb": "push"}, "frames": [{"counter": wire.POLY1305_FROM}]},
    # four segments; two cross frame boundaries, and one frame is empty
    {"header": {"id": "4", "verb": "push"},
     "frames": [{"counter": 2 * wire.SEGMENT + 100}, {"hex": ""}, {"hex": "cafe"},
                {"counter": wire.SEGMENT - 50}]},
]


def frame_bytes(spec: dict) -> bytes:
    """The bytes a frame spec (``{"hex": ...}`` or ``{"counter": n}``) stands for."""
    if "hex" in spec:
        return bytes.fromhex(spec["hex"])
    n = spec["counter"]
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def handshake_answers(case: dict) -> dict:
    """What both sides send in the handshake ``case`` (key, nonces, offer, client_macs),
    and what they agree on; empty proof and keys if the controller rejects the answer."""
    key = bytes.fromhex(case["key"])
    server = ServerHandshake(key, case["offer"], snonce=bytes.fromhex(case["snonce"]))
    client = ClientHandshake(key, macs=case["client_macs"],
                             cnonce=bytes.fromhex(case["cnonce"]))
    answer = client.answer(server.greeting)
    server.feed(answer)
    return {"greeting": server.greeting.hex(), "answer": answer.hex(),
            "proof": (server.proof or b"").hex(), "c2s": (server.c2s or b"").hex(),
            "s2c": (server.s2c or b"").hex(), "mac": server.mac}


def wire_bytes(writer: wire.MessageWriter, header: dict, frames: list[bytes]) -> bytes:
    """The exact bytes ``writer`` sends for one message, through a real socketpair."""
    writer.queue(header, frames)
    out = bytearray()
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        done = False
        while not done:
            done = writer.flush(a)   # False once the socket is full: read it empty
            try:
                while True:
                    out += b.recv(1 << 20)
            except BlockingIOError:
                pass
    return bytes(out)


def encode(key: bytes, mac: int, messages: list[dict]) -> list[bytes]:
    """The wire bytes of ``messages``, written in order by one MessageWriter."""
    writer = wire.MessageWriter(key, mac)
    return [wire_bytes(writer, m["header"], [frame_bytes(f) for f in m["frames"]])
            for m in messages]


def summary(data: bytes, mac: int) -> dict:
    """How a message's bytes are stored: whole if small, else length, SHA-256 and its
    tags, found by the documented layout (module doc of pympec.protocol.wire)."""
    if len(data) <= WHOLE:
        return {"wire": data.hex()}
    _, header_len, nframes = wire.PREFIX.unpack_from(data)
    lengths = [wire.LENGTH.unpack_from(data, wire.PREFIX.size + i * wire.LENGTH.size)[0]
               for i in range(nframes)]
    size = wire.tag_size(wire.mac_for(mac, sum(lengths)))
    at = wire.PREFIX.size + nframes * wire.LENGTH.size + header_len
    tags = [at]                                       # part 0's tag
    at += size
    for _, start, stop, last in wire.segments(lengths):
        at += stop - start
        if last:                                      # a segment's tag
            tags.append(at)
            at += size
    return {"length": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "tags": [[t, data[t:t + size].hex()] for t in tags]}


def vectors() -> dict:
    """All the vectors, inputs and expected bytes, as written to the file."""
    handshakes = []
    for case in HANDSHAKES:
        case = {"key": KEY.hex(), "snonce": SNONCE.hex(), "cnonce": CNONCE.hex(), **case}
        handshakes.append({**case, "expect": handshake_answers(case)})
    messages = {}
    for name, mac in MACS.items():
        data = encode(MESSAGE_KEY, mac, MESSAGES)
        messages[name] = {"key": MESSAGE_KEY.hex(), "mac": mac, "sequence": [
            {**m, "expect": summary(d, mac)} for m, d in zip(MESSAGES, data)]}
    return {"about": ABOUT, "version": GREETING.decode(),
            "handshakes": handshakes, "messages": messages}


def path() -> Path:
    return Path(__file__).with_name(f"protocol{GREETING[6:].decode()}.json")


def main() -> None:
    if not wire.supported_macs() & wire.POLY1305:
        sys.exit("the Poly1305 vectors need the cryptography package: "
                 "pip install 'pympec[fast]'")
    with open(path(), "w") as f:
        json.dump(vectors(), f, indent=1)
        f.write("\n")
    print(f"wrote {path()}")


if __name__ == "__main__":
    main()
