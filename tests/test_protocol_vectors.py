"""Known-answer test vectors of the wire protocol (tests/data/protocolNN.json).

Fixed keys and nonces give fixed bytes: today's handshake and ``wire.MessageWriter``
must produce exactly the stored bytes, and both sides must accept them
(``ServerHandshake``/``ClientHandshake``, ``wire.MessageReader``) and reject them with
one bit flipped.  A failure here means the bytes on the wire changed: that must come
with a new protocol version and regenerated vectors, never by accident.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from pympec.errors import ProtocolError
from pympec.protocol import wire
from pympec.protocol.handshake import ClientHandshake, GREETING, ServerHandshake
from test_wire import feed, flip

DATA = Path(__file__).with_name("data")


def _load_generator():
    """tests/data/make_protocol_vectors.py computes the vectors; it is a script, not in
    a package, so it is loaded from its path."""
    spec = importlib.util.spec_from_file_location("make_protocol_vectors",
                                                  DATA / "make_protocol_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make = _load_generator()
PATH = make.path()
assert PATH.exists(), (f"no known-answer vectors for protocol {GREETING.decode()} ({PATH}): "
                      f"write them with `python tests/data/make_protocol_vectors.py`")
VECTORS = json.loads(PATH.read_text())
WHY = (f"today's code does not give the stored bytes of protocol {VECTORS['version']} "
       f"({PATH.relative_to(DATA.parent.parent)}): a change to the wire format must bump "
       f"the protocol version (GREETING in pympec/protocol/handshake.py) and regenerate "
       f"the vectors on purpose, with `python tests/data/make_protocol_vectors.py`")
HANDSHAKES = pytest.mark.parametrize(
    "case", VECTORS["handshakes"], ids=lambda c: f"offer{c['offer']}-client{c['client_macs']}")


@HANDSHAKES
def test_handshake_gives_the_stored_bytes(case):
    assert make.handshake_answers(case) == case["expect"], WHY


@HANDSHAKES
def test_both_sides_accept_the_stored_handshake_and_reject_a_flipped_bit(case):
    key, expect = bytes.fromhex(case["key"]), case["expect"]
    greeting, answer, proof = (bytes.fromhex(expect[k]) for k in ("greeting", "answer", "proof"))
    client = ClientHandshake(key, macs=case["client_macs"], cnonce=bytes.fromhex(case["cnonce"]))
    assert client.answer(greeting) == answer, WHY
    assert client.check(proof)
    assert (client.c2s.hex(), client.s2c.hex(), client.mac) == \
        (expect["c2s"], expect["s2c"], expect["mac"])
    assert not client.check(flip(proof, 7, 3))
    snonce = bytes.fromhex(case["snonce"])
    for at in range(0, len(answer), 8):   # cnonce, choice and proof
        server = ServerHandshake(key, case["offer"], snonce=snonce)
        server.feed(flip(answer, at))
        assert server.done and not server.ok


def messages(name: str) -> tuple[dict, list[bytes]]:
    """The stored vectors for one MAC and the bytes today's MessageWriter gives them."""
    vectors = VECTORS["messages"][name]
    if not wire.supported_macs() & vectors["mac"]:
        pytest.skip(f"{name} needs the cryptography package (pympec[fast]); its "
                    f"vectors are not checked here")
    return vectors, make.encode(bytes.fromhex(vectors["key"]), vectors["mac"],
                                vectors["sequence"])


@pytest.mark.parametrize("name", list(VECTORS["messages"]))
def test_message_writer_gives_the_stored_bytes(name):
    vectors, data = messages(name)
    for message, raw in zip(vectors["sequence"], data):
        assert make.summary(raw, vectors["mac"]) == message["expect"], WHY
    assert any(len(m["expect"].get("tags", ())) > 3 for m in vectors["sequence"]), \
        "a message spans several segments"


@pytest.mark.parametrize("name", list(VECTORS["messages"]))
def test_message_reader_accepts_the_stored_bytes_and_rejects_a_flipped_bit(name):
    vectors, data = messages(name)
    key, mac, sequence = bytes.fromhex(vectors["key"]), vectors["mac"], vectors["sequence"]
    for message, raw in zip(sequence, data):   # the stored bytes, whole or by hash
        assert make.summary(raw, mac) == message["expect"], WHY
    got = feed(wire.MessageReader(key, mac), b"".join(data))
    assert [m.header for m in got] == [m["header"] for m in sequence]
    for m, stored in zip(got, sequence):
        assert [bytes(f) for f in m.frames] == [make.frame_bytes(f) for f in stored["frames"]]
    for i, (stored, raw) in enumerate(zip(sequence, data)):
        before = b"".join(data[:i])   # the reader's sequence number must reach i
        header = wire.PREFIX.size + wire.LENGTH.size * len(stored["frames"])
        for at in (header + 1, len(raw) // 2, len(raw) - 1):   # header, middle, last tag
            with pytest.raises(ProtocolError, match="signature"):
                feed(wire.MessageReader(key, mac), before + flip(raw, at))
