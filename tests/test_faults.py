"""Bad input and faults: each gets a clear exception, and the cluster keeps serving."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pympec import client, connection
from pympec.protocol import handshake, wire
from pympec.connection import load
from pympec.errors import ClusterError, CompositeError, SecurityError

from conftest import (ENGINES, first_line, hello_behind_the_answer, hung_up, running_on,
                      wait_for)


def serving(mec) -> bool:
    return mec.execute("pass", block=True) is not None and mec.get_ids() == list(range(ENGINES))


def test_wrong_key(cluster, mec, tmp_path):
    info = load(cluster.connection_file)
    info.key = "00" * 32
    bad = info.write(tmp_path / "wrong-key.json")
    with pytest.raises(SecurityError, match="rejected"):
        client.MultiEngineClient(bad, timeout=5)
    assert serving(mec)


def test_random_bytes_on_the_port(cluster, mec):
    info = load(cluster.connection_file)
    with socket.create_connection((info.address, info.port), timeout=5) as sock:
        greeting = sock.recv(handshake.GREETING_SIZE, socket.MSG_WAITALL)
        assert greeting.startswith(handshake.GREETING)
        sock.sendall(os.urandom(4096))
        assert hung_up(sock)
    assert serving(mec)


def test_silent_connection_does_not_block_others(cluster, mec):
    info = load(cluster.connection_file)
    with socket.create_connection((info.address, info.port), timeout=5):
        assert serving(mec)                      # while a half-open handshake waits


def test_forged_frame_after_handshake(cluster, mec):
    info = load(cluster.connection_file)
    sock = socket.create_connection((info.address, info.port), timeout=5)
    send_key, _, _ = handshake.client_handshake(sock, info.key_bytes, 5)
    writer = wire.MessageWriter(os.urandom(32))   # signs with the wrong session key
    writer.queue({"verb": "hello", "client": "x", "id": "1"})
    sock.setblocking(True)
    while not writer.flush(sock):
        pass
    assert hung_up(sock)
    sock.close()
    assert serving(mec)


def test_first_message_right_behind_the_answer(cluster, mec):
    """The controller reads no more than the handshake's answer: a message sent right
    behind it, before the controller's proof has come, is the first message."""
    info = load(cluster.connection_file)
    with socket.create_connection((info.address, info.port), timeout=5) as sock:
        reply = hello_behind_the_answer(sock, info.key_bytes)
    assert reply and reply["id"] == "h" and reply["value"]["cluster_id"] == info.cluster_id
    assert serving(mec)


def test_unpicklable_object(mec):
    with pytest.raises(TypeError, match="cannot send"):
        mec.push(dict(lock=threading.Lock()))
    mec.execute("import threading; lock = threading.Lock()", targets=0)
    with pytest.raises(CompositeError) as info:
        mec.pull("lock", targets=0)
    assert "lock" in str(info.value).lower()
    assert serving(mec)


def test_pull_missing_name(mec):
    with pytest.raises(CompositeError) as info:
        mec.pull("no_such_name", targets=[0, 1])
    assert isinstance(info.value.elist[0][1], NameError)
    assert "[0:pull]: NameError" in str(info.value)
    assert serving(mec)


def test_scatter_non_sequence(mec):
    with pytest.raises(TypeError, match="sequence"):
        mec.scatter("a", 12345)
    with pytest.raises(TypeError):
        mec.scatter("a", {"a": 1})
    assert serving(mec)


def test_exception_and_sys_exit_in_execute(mec):
    with pytest.raises(CompositeError) as info:
        mec.execute("import sys; sys.exit(3)", targets=1)
    assert isinstance(info.value.elist[0][1], SystemExit)
    with pytest.raises(CompositeError) as info:
        mec.execute("raise KeyError('k')", targets=2)
    assert "[2:execute]: KeyError" in str(info.value)
    assert serving(mec)


def test_unpicklable_exception_becomes_remote_error(mec):
    code = textwrap.dedent("""
        class Odd(Exception):
            def __reduce__(self):
                raise TypeError("no")
        raise Odd("strange")
    """)
    with pytest.raises(CompositeError) as info:
        mec.execute(code, targets=0)
    assert "[0:execute]: Odd: strange" in str(info.value)
    assert serving(mec)


def test_missing_connection_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="pympec cluster start"):
        client.MultiEngineClient(tmp_path / "nope.json")


def test_stale_connection_file(cluster, tmp_path):
    info = load(cluster.connection_file)
    with socket.socket() as s:       # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        info.port = s.getsockname()[1]
    stale = info.write(tmp_path / "stale.json")
    # the refusal itself is reported, at once: not a wait for the timeout
    with pytest.raises(ClusterError, match="Connection refused. The cluster is not running"):
        client.MultiEngineClient(stale, timeout=5)


def test_garbage_connection_file(tmp_path):
    path = tmp_path / "garbage.json"
    path.write_text("not json")
    path.chmod(0o600)
    with pytest.raises(ValueError, match="not a pympec connection file"):
        client.MultiEngineClient(path)


def test_connection_file_open_to_others_is_refused(tmp_path):
    path = connection.ConnectionInfo(address="127.0.0.1", port=1).write(tmp_path / "c.json")
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="mode 644.*chmod 600"):
        client.MultiEngineClient(path)


def test_connection_file_cannot_be_pre_created_or_redirected(tmp_path):
    """Files an attacker leaves where the controller writes (the old fixed temporary
    name, a symbolic link) change nothing: the key file ends up new and 0600."""
    target = tmp_path / "c.json"
    planted = tmp_path / ".c.json.1234.tmp"
    planted.write_text("{}")
    planted.chmod(0o666)
    victim = tmp_path / "elsewhere"
    (tmp_path / ".c.json.link.tmp").symlink_to(victim)
    info = connection.ConnectionInfo(address="127.0.0.1", port=1)
    info.write(target)
    assert target.stat().st_mode & 0o777 == 0o600 and not target.is_symlink()
    assert connection.load(target).key == info.key and not victim.exists()


def test_client_killed_mid_call(cluster, mec):
    script = textwrap.dedent(f"""
        import sys
        from pympec import client
        mec = client.MultiEngineClient({str(cluster.connection_file)!r})
        print("ready", flush=True)
        mec.execute("import time; time.sleep(2); killed_client_done = 1", targets=3)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    assert first_line(proc, "the client to connect").strip() == "ready"
    wait_for(lambda: running_on(mec, 3), "engine 3 to run the client's call")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert serving(mec)
    assert mec.pull("killed_client_done", targets=3) == [1]   # the command finished


def test_results_kept_for_a_reconnecting_client(cluster, mec):
    pending = mec.execute("import time; time.sleep(0.5); kept = 1", targets=0, block=False)
    mec._session.close()                    # the link breaks while the call runs
    with cluster.client() as other:         # and the call ends while mec is away
        wait_for(lambda: "kept" in other.keys(targets=0)[0], "engine 0 to end the call")
    assert pending.r[0]["number"] >= 1      # reconnects, and the kept result comes back


@pytest.mark.timeout(60)   # the hang guard: a client that missed the loss would wait for ever
def test_dead_cluster_raises_within_seconds(private_cluster):
    mec = private_cluster.client()
    with pytest.raises(ClusterError, match="lost the connection"):
        mec.execute("import os; os._exit(1)", targets=0)
    private_cluster.process.wait(timeout=30)


def test_connection_file_mode(cluster):
    mode = os.stat(cluster.connection_file).st_mode & 0o777
    assert mode == 0o600
    data = json.loads(cluster.connection_file.read_text())
    assert len(bytes.fromhex(data["key"])) >= 32
    assert data["address"] == "127.0.0.1" and data["engines"] == ENGINES


# -- streamed requests: a large push is forwarded while it arrives (pympec.controller.engines) ----

def wire_bytes(writer: wire.MessageWriter, *messages: tuple) -> bytes:
    """The bytes ``writer`` sends for ``messages`` ((header, frames) pairs), in order."""
    for header, frames in messages:
        writer.queue(header, frames)
    a, b = socket.socketpair()
    out = bytearray()
    reader = threading.Thread(target=lambda: [out.extend(chunk) for chunk in
                                              iter(lambda: b.recv(1 << 20), b"")])
    reader.start()
    while not writer.flush(a):
        pass
    a.close()
    reader.join(timeout=30)
    b.close()
    return bytes(out)


def broken_push(cluster, nbytes: int) -> tuple[socket.socket, bytes]:
    """An authenticated connection, and the bytes of hello + a push of ``nbytes`` to
    engine 0, large enough to be streamed."""
    import numpy as np
    from pympec.protocol import serialize
    info = load(cluster.connection_file)
    sock = socket.create_connection((info.address, info.port), timeout=10)
    send_key, _, mac = handshake.client_handshake(sock, info.key_bytes, 10)
    data = np.ones(nbytes, np.uint8)
    push = {"id": f"cut-{os.urandom(4).hex()}", "verb": "push", "targets": [0], "deliver": "same",
            "describe": "push(cut)", "args": {"names": ["cut"],
                                              "metas": [serialize.array_meta(data)]}}
    raw = wire_bytes(wire.MessageWriter(send_key, mac),
                     ({"verb": "hello", "client": os.urandom(8).hex(), "id": "h"}, []),
                     (push, [data]))
    return sock, raw


def test_client_vanishing_mid_stream_loses_nothing_else(cluster, mec):
    """The engine drops the broken payload; another client's call queued behind it
    still runs, and the cluster keeps serving."""
    sock, raw = broken_push(cluster, 40 << 20)
    sock.sendall(raw[:len(raw) // 3])
    wait_for(lambda: running_on(mec, 0) == "push(cut)", "the streamed push to start", timeout=30)
    behind = mec.execute("after_cut = 1", targets=0, block=False)
    sock.close()                                   # gone, two thirds of the push unsent
    assert behind.get_result() is not None      # (bounded by the suite's pytest timeout)
    assert "cut" not in mec.keys(targets=0)[0] and "after_cut" in mec.keys(targets=0)[0]
    assert serving(mec)


def test_tampered_segment_mid_stream_is_dropped(cluster, mec):
    sock, raw = broken_push(cluster, 40 << 20)
    bad = bytearray(raw)
    bad[len(bad) * 2 // 3] ^= 1                   # a segment well after the first ones
    sock.sendall(bad[:len(bad) // 3])
    wait_for(lambda: running_on(mec, 0) == "push(cut)", "the streamed push to start", timeout=30)
    try:
        sock.sendall(bad[len(bad) // 3:])
        assert hung_up(sock)
    except (ConnectionResetError, BrokenPipeError):
        pass                                       # hung up while we were still sending
    sock.close()
    assert "cut" not in mec.keys(targets=0)[0]
    assert serving(mec)


def test_shutdown_with_a_result_still_landing(private_cluster):
    """Stopping the cluster while a large gather may be moving: the controller lets
    transfers in flight end (bounded) before it tells the engines to exit, so no engine
    is left waiting in one and the MPI job exits; the gathering client gets its whole
    result, or, if the shutdown was read before its request, a clear error."""
    a, b = private_cluster.client(), private_cluster.client()
    a.execute("import numpy as np; g = np.ones(12 << 20)")   # 2 x 96 MB
    pending = a.gather("g", block=False)
    b.kill(controller=True)
    try:
        result = pending.get_result()
    except ClusterError as e:
        assert "lost the connection" in str(e)
    else:
        assert result.shape == (24 << 20,) and result.sum() == 24 << 20
    private_cluster.process.wait(timeout=60)
