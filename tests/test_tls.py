"""--tls: a controller on a self-signed certificate that clients pin, against real clusters
and real sockets.

- the wire (MessageWriter/MessageReader) over non-blocking TLS sockets, with buffers
  small enough that every send meets SSLWantWriteError;
- a TLS cluster serves execute, push/pull/scatter/gather of large arrays (streamed and
  not) and tasks, started as ``pympec.Cluster(tls=True)`` and as ``pympec cluster start --tls``;
- a client pinning another fingerprint is refused (SecurityError); a client without TLS
  against a TLS controller, and one with TLS against a plain controller, get clear
  errors at once, not a timeout;
- pre-authentication garbage over TLS (instead of the TLS handshake, inside it, instead
  of pympec's answer) is turned away, and the controller keeps serving;
- without the ``cryptography`` package, ``--tls`` stops at start naming ``pympec[fast]``.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import select
import socket
import ssl
import subprocess
import sys
import time

import numpy as np
import pytest

import pympec
from pympec import connection
from pympec.cluster import mpi
from pympec.cluster.batch.templates import JobSpec, render
from pympec.controller import door
from pympec.errors import ClusterError, SecurityError
from pympec.protocol import handshake, tls, wire
from pympec.protocol.handshake import GREETING_SIZE, TLS_GREETING, recv_exactly

from conftest import hello_behind_the_answer, hung_up

pytestmark = pytest.mark.skipif(not tls.available(),
                                reason="--tls needs the cryptography package (pympec[fast])")
LIMIT = 20.0
MB = 1 << 20
KEY = bytes(range(32))
CERT_A, CERT_B = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
ALL = wire.supported_macs() | wire.NO_TAGS   # what a client inside TLS can use


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    path = tmp_path_factory.mktemp("tls") / "cluster.json"
    with pympec.Cluster(n=2, connection_file=path, tls=True, timeout=120) as started:
        yield started


@pytest.fixture
def tmec(tls_cluster):
    c = tls_cluster.client()
    c.reset()
    yield c
    c.close()


def serving(mec) -> bool:
    return mec.execute("pass", block=True) is not None and mec.get_ids() == [0, 1]


def variant(path, tmp_path, **fields) -> str:
    """A copy of the connection file at ``path`` with ``fields`` changed."""
    info = connection.load(path)
    for name, value in fields.items():
        setattr(info, name, value)
    return str(info.write(tmp_path / f"variant-{os.urandom(4).hex()}.json"))


# -- the wire over TLS ---------------------------------------------------------------

def tls_pair() -> tuple[ssl.SSLSocket, ssl.SSLSocket, str]:
    """Two non-blocking TLS sockets connected over loopback with small kernel buffers,
    and the server certificate's fingerprint."""
    server_ctx, print_ = tls.server_context("test")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname(), timeout=LIMIT)
        b, _ = listener.accept()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 << 10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
        s.setblocking(False)
    a = tls.client_context().wrap_socket(a, do_handshake_on_connect=False)
    b = server_ctx.wrap_socket(b, server_side=True, do_handshake_on_connect=False)
    pending = [a, b]
    deadline = time.monotonic() + LIMIT
    while pending and time.monotonic() < deadline:
        for s in list(pending):
            try:
                s.do_handshake()
                pending.remove(s)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
        select.select(pending, [], [], 0.01)
    assert not pending, "TLS handshake between two local sockets did not finish"
    return a, b, print_


@pytest.mark.parametrize("mac", [wire.POLY1305, wire.NO_TAGS])
def test_messages_over_nonblocking_tls(mac):
    """Large and small messages, interleaved, over TLS sockets whose buffers fill at
    every send: each SSLWantWriteError is retried with the same bytes, and every byte
    arrives in place, checked.  With NO_TAGS, not one byte more than the messages."""
    a, b, print_ = tls_pair()
    assert tls.fingerprint(a.getpeercert(binary_form=True)) == print_
    rng = np.random.default_rng(3)
    sent = []
    for i in range(12):
        n = int(rng.choice([0, 10, 70_000, 3 * MB + 5]))
        sent.append(({"i": i}, [rng.integers(0, 255, n, dtype=np.uint8), b"tail%d" % i]))
    writer, reader = wire.MessageWriter(KEY, mac), wire.MessageReader(KEY, mac)
    for header, frames in sent:
        writer.queue(header, frames)
    got, deadline = [], time.monotonic() + LIMIT
    with a, b:
        while len(got) < len(sent) and time.monotonic() < deadline:
            writer.flush(a)
            select.select([b], [a] if writer.pending else [], [], 0.05)
            got += reader.read(b)
    assert [m.header for m in got] == [h for h, _ in sent]
    for m, (_, frames) in zip(got, sent):
        assert [bytes(f) for f in m.frames] == [bytes(f) for f in frames]
    untagged = sum(wire.PREFIX.size + wire.LENGTH.size * len(frames)
                   + len(json.dumps(h, separators=(",", ":"))) + sum(map(len, frames))
                   for h, frames in sent)
    assert (writer.sent == untagged) == (mac == wire.NO_TAGS)


# -- the handshake inside TLS -----------------------------------------------------------

def shake(offer: int, server_channel: bytes, macs: int, client_channel: bytes, **nonces):
    """A handshake between a controller's side and a client's side, as given."""
    server = handshake.ServerHandshake(KEY, offer, channel=server_channel,
                                       snonce=nonces.get("snonce"))
    client = handshake.ClientHandshake(KEY, macs=macs, channel=client_channel,
                                       cnonce=nonces.get("cnonce"))
    server.feed(client.answer(server.greeting))
    return server, client


def test_proofs_bind_the_tls_channel():
    """Both proofs cover the controller's certificate, as each side knows it: had a
    client not pinned it, and met someone in between with another certificate, its
    answer would be refused, and a proof made in that other channel would not pass."""
    server, client = shake(ALL, CERT_A, ALL, CERT_A)
    assert server.ok and client.check(server.proof) and client.mac == wire.NO_TAGS
    server, client = shake(ALL, CERT_A, ALL, CERT_B)
    assert server.done and not server.ok and server.proof is None
    nonces = {"snonce": os.urandom(handshake.NONCE), "cnonce": os.urandom(handshake.NONCE)}
    elsewhere, _ = shake(ALL, CERT_B, ALL, CERT_B, **nonces)
    server, client = shake(ALL, CERT_A, ALL, CERT_A, **nonces)
    assert elsewhere.ok and server.ok and not client.check(elsewhere.proof)
    server, client = shake(ALL, CERT_A, ALL, b"")   # (a client outside TLS: no channel)
    assert not server.ok


def test_no_tags_only_inside_tls():
    """NO_TAGS is chosen only when both sides are inside TLS, and an answer choosing it
    when it was not offered is refused, even with a proof made with the key."""
    plain = wire.supported_macs()
    for offer, macs in ((plain, ALL), (ALL, plain)):
        server, client = shake(offer, CERT_A, macs, CERT_A)
        assert server.ok and client.check(server.proof) and server.mac != wire.NO_TAGS
    server = handshake.ServerHandshake(KEY, plain, channel=CERT_A)
    cnonce, snonce = os.urandom(handshake.NONCE), server.greeting[len(handshake.GREETING):-1]
    proof = wire.hmac_sha256(KEY, b"client", snonce, cnonce, bytes([plain, wire.NO_TAGS]),
                             CERT_A)
    server.feed(cnonce + bytes([wire.NO_TAGS]) + proof)
    assert server.done and not server.ok


# -- a TLS cluster serves ------------------------------------------------------------

def test_connection_file_pins_the_certificate_the_controller_shows(tls_cluster):
    info = connection.load(tls_cluster.connection_file)
    assert len(info.tls_fingerprint) == 64
    with socket.create_connection((info.address, info.port), timeout=LIMIT) as raw:
        assert raw.recv(len(TLS_GREETING), socket.MSG_WAITALL) == TLS_GREETING
        with tls.client_context().wrap_socket(raw) as sock:
            assert sock.version() == "TLSv1.3"
            assert tls.fingerprint(sock.getpeercert(binary_form=True)) == info.tls_fingerprint
            assert recv_exactly(sock, GREETING_SIZE).startswith(handshake.GREETING)


def test_tls_connections_leave_the_tags_to_tls(tls_cluster, cluster):
    """Inside TLS, client and controller agree on NO_TAGS; a plain connection never does."""
    info = connection.load(tls_cluster.connection_file)
    with through_tls(info) as sock:
        assert handshake.client_handshake(sock, info.key_bytes, LIMIT)[2] == wire.NO_TAGS
    plain = connection.load(cluster.connection_file)
    with socket.create_connection((plain.address, plain.port), timeout=LIMIT) as sock:
        assert handshake.client_handshake(sock, plain.key_bytes, LIMIT)[2] != wire.NO_TAGS


def test_controller_refuses_an_answer_bound_to_another_channel(tls_cluster, tmec):
    info = connection.load(tls_cluster.connection_file)
    with through_tls(info) as sock:
        client = handshake.ClientHandshake(info.key_bytes, macs=ALL, channel=CERT_A)
        sock.sendall(client.answer(recv_exactly(sock, GREETING_SIZE)))
        assert hung_up(sock, 10)
    assert serving(tmec)


def test_execute_and_large_arrays(tmec):
    """Push and pull to one engine (streamed through the controller: over STREAM_FROM),
    to all, and scatter/gather, of tens of megabytes."""
    result = tmec.execute("x = 6 * 7", block=True)
    assert tmec.pull("x") == [42, 42] and len(result) == 2
    big = np.random.default_rng(1).standard_normal(6 * MB // 8 * 5)   # 30 MiB
    tmec.push({"a": big}, targets=0)
    np.testing.assert_array_equal(tmec.pull("a", targets=0)[0], big)
    tmec.push({"b": big[:1000]})
    assert all(np.array_equal(v, big[:1000]) for v in tmec.pull("b"))
    tmec.scatter("s", big)
    np.testing.assert_array_equal(tmec.gather("s"), big)
    assert tmec.execute("n = len(s)", block=True) is not None
    assert sum(tmec.pull("n")) == len(big)
    assert serving(tmec)


def test_tasks(tls_cluster):
    tc = tls_cluster.task_client()
    try:
        assert tc.map(lambda x: x * x, range(40)) == [x * x for x in range(40)]
        task = pympec.client.StringTask("y = sum(range(z))", push={"z": 10}, pull=["y"])
        assert tc.run(task, block=True).ns.y == 45
        big = np.arange(3 * MB)
        task = pympec.client.MapTask(lambda a: a[::-1].copy(), (big,))
        np.testing.assert_array_equal(tc.run(task, block=True), big[::-1])
    finally:
        tc.close()


# -- mismatches are clear, and quick --------------------------------------------------

def test_another_fingerprint_is_refused(tls_cluster, tmec, tmp_path):
    other = variant(tls_cluster.connection_file, tmp_path, tls_fingerprint="ab" * 32)
    with pytest.raises(SecurityError, match=f"not the {'ab' * 32} pinned"):
        pympec.client.MultiEngineClient(other, timeout=LIMIT)
    assert serving(tmec)


def test_client_without_tls_against_a_tls_controller(tls_cluster, tmec, tmp_path):
    plain = variant(tls_cluster.connection_file, tmp_path, tls_fingerprint=None)
    started = time.monotonic()
    with pytest.raises(ClusterError, match="uses TLS .* no certificate fingerprint"):
        pympec.client.MultiEngineClient(plain, timeout=LIMIT)
    assert time.monotonic() - started < LIMIT / 2, "an error, not a timeout"
    assert serving(tmec)


def test_tls_client_against_a_plain_controller(cluster, mec, tmp_path):
    pinned = variant(cluster.connection_file, tmp_path, tls_fingerprint="cd" * 32)
    started = time.monotonic()
    with pytest.raises(SecurityError, match="does not use TLS"):
        pympec.client.MultiEngineClient(pinned, timeout=LIMIT)
    assert time.monotonic() - started < LIMIT / 2, "an error, not a timeout"
    mec.reset()
    assert mec.get_ids() == [0, 1, 2, 3]


# -- before authentication -------------------------------------------------------------

def through_tls(info) -> ssl.SSLSocket:
    """A connection to the controller of ``info`` through the TLS handshake, pinned."""
    raw = socket.create_connection((info.address, info.port), timeout=LIMIT)
    return tls.wrap_client(raw, info.tls_fingerprint, LIMIT)


def raw_after_greeting(info) -> socket.socket:
    """A plain TCP connection to the controller, its TLS_GREETING read."""
    raw = socket.create_connection((info.address, info.port), timeout=LIMIT)
    assert raw.recv(len(TLS_GREETING), socket.MSG_WAITALL) == TLS_GREETING
    return raw


def garbage_case(info, rng: random.Random) -> str:
    """One seeded pre-authentication case that the controller can judge at once, and
    does: it hangs up.  Returns the case's kind."""
    kind = rng.choice(["instead of TLS", "bad TLS hello", "inside TLS", "wrong key"])
    if kind in ("instead of TLS", "bad TLS hello"):
        data = rng.randbytes(rng.choice([5, 300, 4096]))
        if kind == "bad TLS hello":   # a whole handshake record of nonsense
            data = b"\x16\x03\x01" + len(data).to_bytes(2, "big") + data
        elif data[0] == 0x16:         # (else TLS waits for the record it announces)
            data = b"\x00" + data[1:]
        with raw_after_greeting(info) as raw:
            raw.sendall(data)
            assert hung_up(raw, 10), kind
        return kind
    with through_tls(info) as sock:
        greeting = recv_exactly(sock, GREETING_SIZE)
        if kind == "wrong key":
            data = handshake.ClientHandshake(os.urandom(32)).answer(greeting)
        else:
            data = rng.randbytes(rng.choice([handshake.ANSWER, 4096]))
        sock.sendall(data)
        assert hung_up(sock, 10), kind
    return kind


def test_pre_auth_garbage_over_tls(tls_cluster, tmec):
    """200 seeded cases: garbage instead of the TLS handshake, a TLS hello of nonsense,
    garbage inside TLS instead of pympec's answer, an answer made with another key: each
    is hung up on at once.  Meanwhile 20 connections stop short (a few bytes, a TLS
    record cut off, a TLS handshake and no answer): each is hung up on at the handshake
    deadline.  The cluster serves after every 50 cases, and the controller's log has no
    exception."""
    info = connection.load(tls_cluster.connection_file)
    rng = random.Random(20261212)
    short = []
    for i in range(20):
        if i % 3 == 2:
            short.append(through_tls(info))
        else:
            short.append(raw_after_greeting(info))
            short[-1].sendall(rng.randbytes(rng.randint(1, 4)) if i % 3 == 0
                              else b"\x16\x03\x01\x01\x00" + rng.randbytes(100))
    started, kinds = time.monotonic(), set()
    for i in range(200):
        kinds.add(garbage_case(info, rng))
        if i % 50 == 49:
            assert serving(tmec)
    assert len(kinds) == 4
    for sock in short:
        left = door.HANDSHAKE_TIMEOUT + 5 - (time.monotonic() - started)
        assert hung_up(sock, max(left, 0.1)), "a short handshake outlived the deadline"
        sock.close()
    assert serving(tmec)
    log = (connection.paths.log_dir() / f"pympec-{info.cluster_id}-rank0.log").read_text()
    assert "Traceback" not in log and "internal error" not in log


def test_silent_connections_do_not_block_others(tls_cluster, tmec):
    """One connection that never starts TLS, one that stops after it: others are served."""
    info = connection.load(tls_cluster.connection_file)
    with socket.create_connection((info.address, info.port), timeout=LIMIT), \
            through_tls(info):
        assert serving(tmec)


def test_request_right_behind_the_answer_over_tls(tls_cluster, tmec):
    """The answer and the first request in one TLS record: the controller reads the
    answer, and the request, already decrypted, is read at once (select cannot see it)."""
    info = connection.load(tls_cluster.connection_file)
    with through_tls(info) as sock:
        reply = hello_behind_the_answer(sock, info.key_bytes)
    assert reply and reply["id"] == "h" and reply["value"]["cluster_id"] == info.cluster_id
    assert serving(tmec)


# -- starting a TLS cluster ------------------------------------------------------------

def test_cli_start_tls(pympec_dir):
    cli = [sys.executable, "-m", "pympec.cluster.cli"]
    start = subprocess.run([*cli, "cluster", "start", "-n", "1", "--tls", "--daemon",
                            "--profile", "tls"], capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        info = connection.load("tls")
        assert info.tls_fingerprint
        with pympec.client.MultiEngineClient("tls", timeout=LIMIT) as mec:
            assert mec.execute("import ssl", block=True) is not None and mec.get_ids() == [0]
    finally:
        stop = subprocess.run([*cli, "cluster", "stop", "--profile", "tls"],
                              capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stderr


def test_tls_without_cryptography_fails_at_start(tmp_path):
    """As when pympec[fast] is not installed: the import of cryptography fails."""
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    code = "import sys; sys.modules['cryptography'] = None; from pympec.boot import main; main()"
    command, env = mpi.local_command(mpiexec, 2)   # with what Open MPI needs (as root, say)
    run = subprocess.run([*command, sys.executable, "-c", code, "--tls",
                          "--connection-file", str(tmp_path / "c.json")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode != 0
    assert "--tls needs the cryptography package" in run.stderr
    assert "pip install pympec[fast]" in run.stderr
    assert not (tmp_path / "c.json").exists()


def test_job_scripts_pass_tls(pympec_dir):
    for scheduler in ("slurm", "sge", "pbs"):
        line = next(l for l in render(JobSpec(scheduler, 2, tls=True)).splitlines()
                    if "pympec.engine" in l)
        assert "--tls" in line.split()
    line = next(l for l in render(JobSpec("slurm", 2)).splitlines() if "pympec.engine" in l)
    assert "--tls" not in line.split()
