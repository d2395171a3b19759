"""Bytes from whoever reaches the port, before and during the handshake: 10,000 seeded
cases against a real private cluster, many connections at once (asyncio, on a selector).

A case is one connection: random bytes of random lengths (after the greeting, or before
it), truncated and over-long answers, right-length answers with wrong proofs (random,
under another key, replayed from another connection, reflected, or the right proof over
a MAC choice that was not offered), bytes after a valid answer, slow and fast
drip-feeding, connections opened and closed at once or reset, half-closed sockets, and
other protocols' openings.  For each:
- none is accepted: a connection without the key never gets more than the greeting (the
  controller's proof would follow it), and one with the key but garbage behind its
  answer gets the proof, then is closed, never a reply;
- a wrong answer, or end-of-stream, closes the connection at once; one that stays
  silent or drips too slowly is closed at the handshake deadline;
meanwhile a legitimate client works, each of its calls bounded, and connects anew now
and then; at the end, no client but it is connected, the controller's log holds no
exception, and its summaries count exactly the connections timed out.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import struct
import time
from collections import Counter

import pytest

from pympec import connection
from pympec.controller.door import HANDSHAKE_TIMEOUT, LOG_EVERY
from pympec.protocol import handshake, wire
from pympec.protocol.handshake import ANSWER, GREETING, GREETING_SIZE, NONCE, TAG

from conftest import wait_for
from reliability.tools import Legit, rank0_log, turned_away
from test_faults import wire_bytes

SEED = 20261203
CASES = 10_000
PARALLEL = 100          # fast cases in flight at once
HELD = 40               # of them, cases that keep their connection open past the deadline
LIMIT = 20.0            # seconds a connection closed "at once" may take (a hang guard)

# what a case expects of the controller
AT_ONCE = "closed at once"           # a wrong or cut answer: closed without waiting
DEADLINE = "closed at the deadline"  # silent, or dripping too slowly
OURS = "closed by us"                # we hang up first; nothing may come before
KEYED = "proof, then closed"         # the key's answer, then garbage: no reply, ever


class Case:
    def __init__(self, kind: str, expect: str, steps: list) -> None:
        self.kind, self.expect, self.steps = kind, expect, steps


def answer_with(key: bytes, snonce: bytes, offer: int, choice: int,
                label: bytes = b"client", cnonce: bytes | None = None) -> bytes:
    """An answer of the right form: cnonce, choice, and an HMAC under ``key``."""
    cnonce = cnonce or os.urandom(NONCE)
    return cnonce + bytes([choice]) + wire.hmac_sha256(key, label, snonce, cnonce,
                                                       bytes([offer, choice]))


def plan(rng: random.Random, key: bytes, held: bool) -> Case:
    """One seeded case.  Steps: ("greet",) reads the greeting; ("send", b) and
    ("drip", b, interval) send bytes, or a function of the greeting giving them;
    ("shut",) half-closes, ("close",) and ("reset",) hang up; ("peer",) answers
    another connection's greeting (for replays)."""
    def noise(low: int, high: int) -> bytes:
        return rng.randbytes(rng.randint(low, high))

    if held:   # nothing, or less than an answer, then silence or a drip too slow
        if rng.random() < 0.5:
            return Case("silent", DEADLINE, [("greet",), ("send", noise(0, ANSWER - 1))])
        return Case("slow drip", DEADLINE,
                    [("greet",), ("drip", noise(ANSWER, 2 * ANSWER), 0.4)])
    kind = rng.choice(["random", "random first", "truncated", "over-long", "wrong proof",
                       "after a valid answer", "fast drip", "open and close",
                       "half-closed", "other protocols"])
    if kind == "random":
        data = noise(0, ANSWER - 1) if rng.random() < 0.4 else noise(ANSWER, 256)
        if rng.random() < 0.1:
            data = noise(1 << 10, 1 << 16)
        if len(data) < ANSWER:
            return Case(kind, AT_ONCE, [("greet",), ("send", data), ("shut",)])
        return Case(kind, AT_ONCE, [("greet",), ("send", data)])
    if kind == "random first":   # before the greeting has been read
        data = noise(ANSWER, 4096)
        return Case(kind, AT_ONCE, [("send", data), ("greet",)])
    if kind == "truncated":
        cut = rng.randrange(ANSWER)
        answer = lambda g: answer_with(os.urandom(32), g[8:-1], g[-1], 1)[:cut]
        if rng.random() < 0.3:
            return Case(kind, OURS, [("greet",), ("send", answer), ("close",)])
        return Case(kind, AT_ONCE, [("greet",), ("send", answer), ("shut",)])
    if kind == "over-long":
        extra, choice = noise(1, 4096), rng.choice([1, 2])
        return Case(kind, AT_ONCE, [("greet",), ("send", lambda g: answer_with(
            os.urandom(32), g[8:-1], g[-1], choice) + extra)])
    if kind == "wrong proof":
        how = rng.choice(["random", "other key", "replayed", "reflected", "server's",
                          "choice not offered", "no choice", "both choices", "flipped bit"])
        if how == "random":
            answer = rng.randbytes(NONCE) + bytes([rng.choice([1, 2])]) + rng.randbytes(TAG)
        elif how == "other key":
            answer = lambda g: answer_with(hashlib.sha256(key).digest(), g[8:-1], g[-1], 1)
        elif how == "replayed":   # the key's answer, to another connection's greeting
            return Case(kind, AT_ONCE, [("peer",), ("greet",), ("send", None)])
        elif how == "reflected":  # the controller's own greeting sent back, padded
            answer = lambda g: (g[8:] + bytes(ANSWER))[:ANSWER]
        elif how == "server's":   # the proof the controller would give, not the client's
            answer = lambda g: answer_with(key, g[8:-1], g[-1], 1, label=b"server")
        else:
            choice = {"choice not offered": 4, "no choice": 0, "both choices": 3}.get(how, 1)
            flip = (rng.randrange(ANSWER), 1 << rng.randrange(8)) if how == "flipped bit" else None

            def answer(g: bytes, choice: int = choice, flip: tuple | None = flip) -> bytes:
                data = bytearray(answer_with(key, g[8:-1], g[-1], choice))
                if flip:
                    data[flip[0]] ^= flip[1]
                return bytes(data)
        return Case(f"{kind}: {how}", AT_ONCE, [("greet",), ("send", answer)])
    if kind == "after a valid answer":   # a key holder, then bytes no key signed
        how = rng.choice(["random", "hello under another key", "hello of another session"])
        junk = noise(64, 4096)   # (fewer than a prefix would wait for the rest)

        def answer(g: bytes, how: str = how, junk: bytes = junk) -> bytes:
            cnonce = os.urandom(NONCE)
            good = answer_with(key, g[8:-1], g[-1], 1, cnonce=cnonce)
            if how == "random":
                return good + junk
            c2s = (os.urandom(32) if how == "hello under another key" else
                   handshake.session_keys(key, os.urandom(NONCE), cnonce)[0])
            hello = {"verb": "hello", "client": "intruder", "id": "h"}
            return good + wire_bytes(wire.MessageWriter(c2s), (hello, []))
        return Case(f"{kind}: {how}", KEYED, [("greet",), ("send", answer)])
    if kind == "fast drip":      # a whole (wrong) answer, a byte at a time, well in time
        return Case(kind, AT_ONCE, [("greet",), ("drip", noise(ANSWER, ANSWER + 8), 0.02)])
    if kind == "open and close":
        return Case(kind, OURS, [rng.choice([("close",), ("reset",)])])
    if kind == "half-closed":
        if rng.random() < 0.5:
            return Case(kind, AT_ONCE, [("shut",), ("greet",)])
        return Case(kind, AT_ONCE, [("greet",), ("send", noise(0, ANSWER - 1)), ("shut",)])
    opening = rng.choice([
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"SSH-2.0-OpenSSH_9.6\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(62),   # a TLS ClientHello
        GREETING + bytes(ANSWER), b"PYMPEC03" + bytes(ANSWER), b"\x00" * ANSWER,
        b"\xff" * 4096, wire_bytes(wire.MessageWriter(bytes(32)),
                                   ({"verb": "hello", "client": "x", "id": "h"}, []))])
    steps = [("greet",), ("send", opening)]
    return Case(kind, AT_ONCE, steps + [("shut",)] * (len(opening) < ANSWER))


class Fuzz:
    """Runs cases against ``address``, and checks what each connection received."""

    def __init__(self, address: tuple, key: bytes) -> None:
        self.address, self.key = address, key
        self.outcomes: Counter = Counter()
        self.kinds: Counter = Counter()
        self.loop = asyncio.get_running_loop()
        self.opened = 0

    async def read(self, sock: socket.socket, got: bytearray, seconds: float,
                   want: int | None = None) -> bool:
        """Read what comes within ``seconds`` (or until ``got`` holds ``want`` bytes);
        True once the controller has hung up."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and len(got) < (want or 1 << 62):
            try:
                data = await asyncio.wait_for(self.loop.sock_recv(sock, 1 << 16), left)
            except asyncio.TimeoutError:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not data:
                return True
            got += data
        return False

    async def greeting(self) -> bytes:
        sock = await self.connect()
        got = bytearray()
        assert not await self.read(sock, got, LIMIT, GREETING_SIZE), "a greeting, then a hang-up"
        sock.close()
        return bytes(got)

    async def connect(self) -> socket.socket:
        sock = socket.socket()
        sock.setblocking(False)
        self.opened += 1
        await asyncio.wait_for(self.loop.sock_connect(sock, self.address), LIMIT)
        return sock

    async def run(self, i: int, case: Case) -> None:
        sock, got, closed, other = await self.connect(), bytearray(), False, None
        started = time.monotonic()
        try:
            for step in case.steps:
                if step[0] == "greet":
                    closed = await self.read(sock, got, LIMIT, GREETING_SIZE)
                    # (all of it, unless a reset for what we sent first overtook it)
                    assert got[:len(GREETING)] == GREETING[:len(got)] and (
                        len(got) >= GREETING_SIZE or case.kind == "random first"), \
                        f"case {i} ({case.kind}): the greeting was {bytes(got)!r}"
                elif step[0] == "peer":
                    other = await self.greeting()
                elif step[0] in ("send", "drip"):
                    data = step[1]
                    if data is None:   # replayed: the key's answer to the other greeting
                        data = answer_with(self.key, other[8:-1], other[-1], 1)
                    elif callable(data):
                        data = data(bytes(got))
                    pieces = ([data] if step[0] == "send" else
                              [data[k:k + 1] for k in range(len(data))])
                    for piece in pieces:
                        if closed:
                            break
                        try:
                            await asyncio.wait_for(self.loop.sock_sendall(sock, piece), LIMIT)
                        except (ConnectionResetError, BrokenPipeError):
                            closed = True
                        if step[0] == "drip":
                            closed = closed or await self.read(sock, got, step[2])
                elif step[0] == "shut":
                    sock.shutdown(socket.SHUT_WR)
                elif step[0] == "reset":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
                elif step[0] == "close":
                    sock.close()
            if case.expect != OURS:
                wait = HANDSHAKE_TIMEOUT + LIMIT if case.expect == DEADLINE else LIMIT
                closed = closed or await self.read(sock, got, wait)
            took = time.monotonic() - started
        finally:
            sock.close()
        after = bytes(got[GREETING_SIZE:])
        what = f"case {i} ({case.kind}) got {len(after)} bytes after the greeting"
        if case.expect == KEYED:
            assert len(after) == TAG and closed, f"{what}, then closed={closed}"
        else:
            assert not after, f"{what}: it passed the handshake without the key"
        if case.expect != OURS:
            assert closed, f"case {i} ({case.kind}): still open after {took:.0f} s"
        if case.expect == AT_ONCE:
            assert took < HANDSHAKE_TIMEOUT, f"case {i} ({case.kind}): closed after {took:.1f} s"
        self.outcomes[case.expect] += 1
        self.kinds[case.kind.split(":")[0]] += 1


async def fuzz(address: tuple, key: bytes) -> Fuzz:
    rng = random.Random(SEED)
    held = set(rng.sample(range(CASES), HELD))
    cases = [plan(rng, key, i in held) for i in range(CASES)]
    runner = Fuzz(address, key)
    slots = asyncio.Semaphore(PARALLEL)

    async def one(i: int) -> None:
        if i in held:    # long, and few: all at once, beside the fast ones
            await runner.run(i, cases[i])
            return
        async with slots:
            await runner.run(i, cases[i])

    tasks = [asyncio.ensure_future(one(i)) for i in range(CASES)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return runner


@pytest.mark.timeout(240)
def test_ten_thousand_preauth_cases(private_cluster):
    info = connection.load(private_cluster.connection_file)
    legit = Legit(private_cluster)
    legit.start()
    started = time.monotonic()
    try:
        runner = asyncio.run(fuzz((info.address, info.port), info.key_bytes))
    finally:
        legit.stop()
    took = time.monotonic() - started
    print(f"\n{CASES} pre-auth cases in {took:.1f} s: {dict(runner.outcomes)}\n"
          f"kinds: {dict(runner.kinds)}\nlegitimate client: {legit.rounds} rounds, "
          f"{legit.fresh} fresh connections, slowest round {legit.slowest:.2f} s")
    assert sum(runner.outcomes.values()) == CASES
    assert runner.outcomes[DEADLINE] == HELD
    assert not legit.errors and not legit.fresh_errors, legit.errors + legit.fresh_errors
    assert legit.rounds > 10 and legit.fresh > 1
    with private_cluster.client() as mec:   # no intruder became a client: itself only
        wait_for(lambda: mec.status()["clients"] == 1, lambda: f"one client: {mec.status()}")
        assert mec.pull("id") == [0, 1]
    # every turned-away connection is counted in a summary line, none logged on its own
    log = rank0_log(private_cluster)

    def summed() -> bool:
        reasons = turned_away(log.read_text())[1]
        return (reasons["no handshake in time"] >= HELD and
                reasons["failed authentication"] >= runner.outcomes[AT_ONCE])
    wait_for(summed, lambda: f"the summaries: {turned_away(log.read_text())}",
             timeout=LOG_EVERY + LIMIT)
    text = log.read_text()
    lines, reasons = turned_away(text)
    print(f"log: {lines} summary lines, {dict(reasons)}")
    assert reasons["no handshake in time"] == HELD
    assert set(reasons) <= {"no handshake in time", "failed authentication"}
    assert sum(reasons.values()) <= runner.opened - runner.outcomes[KEYED]
    assert lines <= (time.monotonic() - started) / LOG_EVERY + 2
    assert "Traceback" not in text and "internal error" not in text
