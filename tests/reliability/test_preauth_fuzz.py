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
import concurrent.futures
import hashlib
import os
import random
import socket
import ssl
import struct
import time
from collections import Counter

import pytest

import pympec
from pympec import connection
from pympec.controller.door import HANDSHAKE_TIMEOUT, LOG_EVERY
from pympec.protocol import handshake, tls, wire
from pympec.protocol.handshake import (ANSWER, GREETING, GREETING_SIZE, NONCE, TAG,
                                       recv_exactly)

from conftest import wait_for
from reliability.tools import Legit, rank0_log, turned_away
from test_faults import wire_bytes
from test_tls import raw_after_greeting, through_tls

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
                label: bytes = b"client", cnonce: bytes | None = None,
                channel: bytes = b"") -> bytes:
    """An answer of the right form: cnonce, choice, and an HMAC under ``key`` (bound to
    ``channel``: inside TLS, the SHA-256 of the controller's certificate)."""
    cnonce = cnonce or os.urandom(NONCE)
    return cnonce + bytes([choice]) + wire.hmac_sha256(key, label, snonce, cnonce,
                                                       bytes([offer, choice]), channel)


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
        judge(f"case {i} ({case.kind})", case.expect, bytes(got[GREETING_SIZE:]), closed,
              took)
        self.outcomes[case.expect] += 1
        self.kinds[case.kind.split(":")[0]] += 1


def judge(what: str, expect: str, after: bytes | None, closed: bool, took: float) -> None:
    """Check a case's connection: ``after``, what came after pympec's greeting (None when
    it was cut off before that: a TLS case), ``closed`` by the controller ``took`` s
    after it was opened."""
    if expect == KEYED:
        assert len(after) == TAG and closed, f"{what}: {len(after)} bytes, closed={closed}"
    elif after:
        assert False, f"{what}: {len(after)} bytes after the greeting, without the key"
    if expect != OURS:
        assert closed, f"{what}: still open after {took:.0f} s"
    if expect == AT_ONCE:
        assert took < HANDSHAKE_TIMEOUT, f"{what}: closed after {took:.1f} s"


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


# -- the same at the door of a --tls controller ------------------------------------------

TLS_CASES = 2_000
TLS_HELD = 10
TLS_THREADS = 24


def client_hello() -> bytes:
    """The bytes a TLS client opens with (its ClientHello), as pympec's client sends it."""
    out = ssl.MemoryBIO()
    opening = tls.client_context().wrap_bio(ssl.MemoryBIO(), out)
    try:
        opening.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def read_until_closed(sock: socket.socket, got: bytearray, seconds: float) -> bool:
    """Read (blocking) until the controller hangs up (True) or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(1 << 16)
        except socket.timeout:
            return False
        except OSError:          # reset, or TLS's end of stream
            return True
        if not data:
            return True
        got += data
    return False


def plan_tls(rng: random.Random, key: bytes, hello: bytes, held: bool):
    """One seeded case at a --tls door: (kind, expectation, run); ``run(info)`` plays it
    and returns what came after pympec's greeting inside TLS (None when the case never
    got that far) and whether the controller hung up."""
    def raw(info, data: bytes, drip: float = 0.0, shut: bool = True):
        sock, got = raw_after_greeting(info), bytearray()
        with sock:
            for piece in ([data[k:k + 1] for k in range(len(data))] if drip else [data]):
                try:
                    sock.sendall(piece)
                except OSError:
                    return None, True
                if drip and read_until_closed(sock, got, drip):
                    return None, True
            try:
                if shut:
                    sock.shutdown(socket.SHUT_WR)
            except OSError:   # (already reset)
                return None, True
            return None, read_until_closed(sock, got, HANDSHAKE_TIMEOUT + LIMIT)

    def inside(info, answer, shut: bool = False, silent: bool = False):
        sock, got = through_tls(info), bytearray()
        with sock:
            greeting = recv_exactly(sock, GREETING_SIZE)
            channel = hashlib.sha256(sock.getpeercert(binary_form=True)).digest()
            try:
                if not silent:
                    sock.sendall(answer(greeting, channel, info))
                if shut:   # TCP's half-close (SSLSocket.shutdown would stop decrypting)
                    socket.socket.shutdown(sock, socket.SHUT_WR)
            except OSError:   # (already reset)
                return b"", True
            closed = read_until_closed(sock, got, HANDSHAKE_TIMEOUT + LIMIT)
            return bytes(got), closed

    if held:
        how = rng.choice(["silent after PYMPECTL", "silent inside TLS", "slow ClientHello"])
        if how == "silent after PYMPECTL":
            return how, DEADLINE, lambda info: raw(info, b"", shut=False)
        if how == "slow ClientHello":
            return how, DEADLINE, lambda info: raw(info, hello, drip=0.2, shut=False)
        return how, DEADLINE, lambda info: inside(info, None, silent=True)
    kind = rng.choice(["random instead of TLS", "cut ClientHello", "ClientHello and garbage",
                       "pympec in the clear", "open and close", "inside TLS: random",
                       "inside TLS: wrong proof", "inside TLS: after a valid answer"])
    if kind == "random instead of TLS":
        data = rng.randbytes(rng.randint(1, 4096))
        return kind, AT_ONCE, lambda info: raw(info, data)
    if kind == "cut ClientHello":
        cut = rng.randrange(len(hello))
        return kind, AT_ONCE, lambda info: raw(info, hello[:cut])
    if kind == "ClientHello and garbage":
        data = hello + rng.randbytes(rng.randint(1, 2048))
        return kind, AT_ONCE, lambda info: raw(info, data)
    if kind == "pympec in the clear":   # a client that ignores TLS: a plain answer
        data = rng.randbytes(ANSWER)      # (then half-closes: TLS may wait for the rest
        return kind, AT_ONCE, lambda info: raw(info, data)   # of a record it announces)
    if kind == "open and close":
        reset = rng.random() < 0.5

        def run(info):
            sock = socket.create_connection((info.address, info.port), timeout=LIMIT)
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return None, False
        return kind, OURS, run
    if kind == "inside TLS: random":
        data = rng.randbytes(rng.choice([rng.randint(0, ANSWER - 1), ANSWER,
                                         rng.randint(ANSWER, 4096)]))
        return kind, AT_ONCE, lambda info: inside(info, lambda g, c, i: data,
                                                  shut=len(data) < ANSWER)
    if kind == "inside TLS: wrong proof":
        how = rng.choice(["other key", "plain channel", "other certificate", "replayed",
                          "server's", "choice not offered", "flipped bit"])

        def answer(g: bytes, channel: bytes, info, how: str = how) -> bytes:
            snonce, offer = g[8:-1], g[-1]
            if how == "other key":
                return answer_with(os.urandom(32), snonce, offer, wire.NO_TAGS, channel=channel)
            if how == "plain channel":
                return answer_with(key, snonce, offer, wire.NO_TAGS)
            if how == "other certificate":
                return answer_with(key, snonce, offer, wire.NO_TAGS,
                                   channel=hashlib.sha256(b"another").digest())
            if how == "replayed":   # the key's answer to another connection's greeting
                with through_tls(info) as other:
                    g = recv_exactly(other, GREETING_SIZE)
                return answer_with(key, g[8:-1], g[-1], wire.NO_TAGS, channel=channel)
            if how == "server's":
                return answer_with(key, snonce, offer, wire.NO_TAGS, b"server",
                                   channel=channel)
            if how == "choice not offered":
                return answer_with(key, snonce, offer, 8, channel=channel)
            flipped = bytearray(answer_with(key, snonce, offer, wire.NO_TAGS, channel=channel))
            flipped[len(flipped) // 2] ^= 1
            return bytes(flipped)
        return f"{kind}: {how}", AT_ONCE, lambda info: inside(info, answer)
    junk = rng.randbytes(rng.randint(64, 4096))
    choice = rng.choice([wire.NO_TAGS, wire.HMAC_SHA256])
    return kind, KEYED, lambda info: inside(info, lambda g, channel, i: answer_with(
        key, g[8:-1], g[-1], choice, channel=channel) + junk)


@pytest.fixture
def tls_private_cluster(tmp_path):
    if not tls.available():
        pytest.skip("--tls needs the cryptography package (pympec[fast])")
    with pympec.Cluster(n=2, connection_file=tmp_path / "tls.json", tls=True,
                        timeout=120) as cluster:
        yield cluster


@pytest.mark.timeout(240)
def test_preauth_cases_at_a_tls_door(tls_private_cluster):
    """2,000 seeded cases against a --tls controller, 24 at once: random bytes instead
    of TLS, ClientHellos cut or followed by garbage, a plain answer in the clear,
    connections opened and closed or reset; inside TLS, random bytes and answers with
    wrong proofs (another key, bound to the plain channel or another certificate,
    replayed from another TLS connection, the server's proof, a choice not offered, a
    flipped bit), and a key holder's valid answer followed by garbage; 10 left silent or
    dripping a ClientHello, closed at the deadline.  The same checks as above."""
    cluster = tls_private_cluster
    info = connection.load(cluster.connection_file)
    rng, hello = random.Random(SEED + 1), client_hello()
    held = set(rng.sample(range(TLS_CASES), TLS_HELD))
    cases = [plan_tls(rng, info.key_bytes, hello, i in held) for i in range(TLS_CASES)]
    outcomes: Counter = Counter()

    def run(i: int) -> str:
        kind, expect, play = cases[i]
        started = time.monotonic()
        after, closed = play(info)
        judge(f"case {i} ({kind})", expect, after, closed, time.monotonic() - started)
        return expect

    legit = Legit(cluster)
    legit.start()
    started = time.monotonic()
    try:
        order = sorted(range(TLS_CASES), key=lambda i: i not in held)   # the long ones first
        with concurrent.futures.ThreadPoolExecutor(TLS_THREADS + TLS_HELD) as pool:
            for done in [pool.submit(run, i) for i in order]:
                outcomes[done.result()] += 1
    finally:
        legit.stop()
    print(f"\n{TLS_CASES} cases at a TLS door in {time.monotonic() - started:.1f} s: "
          f"{dict(outcomes)}; legitimate client: {legit.rounds} rounds, {legit.fresh} new "
          f"connections, slowest {legit.slowest:.2f} s")
    assert sum(outcomes.values()) == TLS_CASES and outcomes[DEADLINE] == TLS_HELD
    assert not legit.errors and not legit.fresh_errors, legit.errors + legit.fresh_errors
    log = rank0_log(cluster)
    wait_for(lambda: turned_away(log.read_text())[1]["no handshake in time"] >= TLS_HELD,
             lambda: f"the summaries: {turned_away(log.read_text())}", LOG_EVERY + LIMIT)
    text = log.read_text()
    reasons = turned_away(text)[1]
    print(f"log: {dict(reasons)}")
    assert reasons["no handshake in time"] == TLS_HELD
    assert set(reasons) <= {"no handshake in time", "failed authentication",
                            "failed TLS handshake"}
    assert "Traceback" not in text and "internal error" not in text
