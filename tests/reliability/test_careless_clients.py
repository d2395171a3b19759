"""What a careless user, or a key holder up to no good, does to the cluster: a client that
never reads its results, a huge request cut or stalled half-way, a client process killed
in each phase of its life, Ctrl-C in the middle of a transfer.  Each time the cluster
serves the others, nothing half-sent runs, and what the controller kept is released.

Against one private cluster of 2 engines for the module (PYMPEC_RESULT_GRACE 2 s, so a
gone client's results are released at once, and PYMPEC_BUFFER_KEEP 1 s).
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import pympec
from pympec import connection

from conftest import first_line, running_on, wait_for
from reliability.test_malformed_requests import Raw

LIMIT = 30.0     # seconds any call of a legitimate client may take


@pytest.fixture(scope="module")
def quick_cluster(tmp_path_factory):
    env = dict(os.environ, PYMPEC_RESULT_GRACE="2", PYMPEC_BUFFER_KEEP="1",
               PYMPEC_CONTROLLER_TIMEOUT="5")   # (a stalled upload is dropped after 5 s)
    path = tmp_path_factory.mktemp("careless") / "c.json"
    with pympec.Cluster(n=2, connection_file=path, timeout=120, env=env) as cluster:
        yield cluster


@pytest.fixture
def observer(quick_cluster):
    """A client of the test's own, on engines with a clean namespace; at the end the
    controller holds nothing for anyone and it is the only client."""
    mec = quick_cluster.client(timeout=LIMIT)
    mec.reset()
    yield mec
    wait_for(lambda: mec.status()["held"]["results"] == 0 and mec.status()["clients"] == 1,
             lambda: f"the controller to hold nothing for gone clients: {mec.status()['held']}",
             timeout=LIMIT)
    mec.close()


def serves(mec) -> bool:
    return (mec.execute("pass", block=False).get_result(timeout=LIMIT) is not None and
            mec.pull("id", block=False).get_result(timeout=LIMIT) == [0, 1])


def test_a_client_that_never_reads_its_results(quick_cluster, observer):
    """It asks for 80 MB and reads none of it: the controller's writes to it stall, its
    results are kept (counted in the store), and others are served meanwhile; once it is
    gone they are released after the grace period."""
    observer.execute("import numpy as np; big = np.ones(1 << 17)")   # 1 MB on each engine
    raw = Raw(connection.load(quick_cluster.connection_file))
    for i in range(40):   # small requests: sent whole, nothing read meanwhile
        raw.send({"verb": "pull", "id": f"unread-{i}", "targets": "all",
                  "args": {"keys": ["big"]}, "describe": "pull(big)"})
    wait_for(lambda: observer.status()["held"]["results"] >= 40,
             lambda: f"the unread results kept: {observer.status()['held']}", timeout=LIMIT)
    assert observer.status()["held"]["bytes"] >= 80e6
    for _ in range(20):
        assert serves(observer)
    with quick_cluster.client(timeout=LIMIT) as other:
        assert other.pull("big", targets=1)[0].sum() == 1 << 17
    raw.close()


def cut_push(path: str, targets: list, phase: str) -> str:
    """A client process that authenticates, says hello, sends the first third of the
    bytes of a 40 MB push to ``targets``, prints ``phase`` and waits (to be killed or
    stopped)."""
    return textwrap.dedent(f"""
        import os, socket, time
        import numpy as np
        from pympec import connection
        from pympec.protocol import handshake, serialize, wire
        info = connection.load({path!r})
        sock = socket.create_connection((info.address, info.port), timeout=10)
        key, _, mac = handshake.client_handshake(sock, info.key_bytes, 10)
        writer = wire.MessageWriter(key, mac)
        writer.queue({{"verb": "hello", "client": os.urandom(8).hex(), "id": "h"}})
        data = np.ones(40 << 20, np.uint8)
        writer.queue({{"id": "cut", "verb": "push", "targets": {targets!r}, "deliver": "same",
                      "describe": "push(cut)",
                      "args": {{"names": ["cut"], "metas": [serialize.array_meta(data)]}}}},
                     [data])
        signed, here = bytearray(), socket.socketpair()   # the bytes, signed, in memory
        for end in here:
            end.setblocking(False)
        while not writer.flush(here[0]) or len(signed) < writer.sent:
            try:
                while True:
                    signed += here[1].recv(1 << 20)
            except BlockingIOError:
                pass
        sock.sendall(signed[:len(signed) // 3])
        print({phase!r}, flush=True)
        time.sleep(600)
        """)


PHASES = {
    "in the handshake": """
        import socket, time
        from pympec import connection
        info = connection.load(PATH)
        sock = socket.create_connection((info.address, info.port))
        sock.recv(41)
        print("in the handshake", flush=True)
        time.sleep(600)
        """,
    "idle after hello": """
        import time
        from pympec import client
        mec = client.MultiEngineClient(PATH)
        print("idle after hello", flush=True)
        time.sleep(600)
        """,
    "holding an unacknowledged result": """
        import time
        from pympec import client
        mec = client.MultiEngineClient(PATH)
        assert mec.pull("id") == [0, 1]      # received; acknowledged with the next request
        print("holding an unacknowledged result", flush=True)
        time.sleep(600)
        """,
    "with a task running": """
        import time
        from pympec import client
        tc = client.TaskClient(PATH)
        tc.run(client.StringTask("import time; time.sleep(1); task_ran = 1"))
        tc.queue_status()                    # (a blocking call: the task is sent)
        print("with a task running", flush=True)
        time.sleep(600)
        """,
}


@pytest.mark.parametrize("phase", list(PHASES) + ["mid-send, one engine (streamed)",
                                                  "mid-send, both engines"])
def test_a_client_killed_in_each_phase(quick_cluster, observer, phase):
    """SIGKILL at each point of a client's life (while a call runs on its engines and
    mid-receive are test_faults.py's and test_waits.py's): the cluster serves on, what
    was half-sent never runs, and what the controller kept for it is released."""
    path = str(quick_cluster.connection_file)
    if phase.startswith("mid-send"):
        script = cut_push(path, [0] if "one engine" in phase else [0, 1], phase)
    else:
        script = textwrap.dedent(PHASES[phase]).replace("PATH", repr(path))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert first_line(proc, phase).strip() == phase
        if phase == "mid-send, one engine (streamed)":
            wait_for(lambda: running_on(observer, 0) == "push(cut)", "the push to stream")
        if phase == "with a task running":
            wait_for(lambda: running_on(observer, 0) or running_on(observer, 1), "the task")
    finally:
        proc.kill()
        proc.wait(LIMIT)
    assert serves(observer)
    if phase.startswith("mid-send"):
        assert all("cut" not in keys for keys in observer.keys())
    if phase == "with a task running":    # it runs to its end, for nobody
        wait_for(lambda: any("task_ran" in keys for keys in observer.keys()), "the task's end")


def test_a_huge_request_for_many_engines_stalled_then_cut(quick_cluster, observer):
    """A 40 MB push to both engines stops a third of the way, its connection open (a
    client stopped with Ctrl-Z, or a stalled network): the controller holds it aside,
    and both engines serve others meanwhile; once cut, it never runs."""
    script = cut_push(str(quick_cluster.connection_file), [0, 1], "stalled")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert first_line(proc, "the push to stall").strip() == "stalled"
        proc.send_signal(signal.SIGSTOP)
        for _ in range(5):
            assert serves(observer)
        observer.execute("during = 1", targets=[0, 1])
    finally:
        proc.kill()
        proc.wait(LIMIT)
    assert serves(observer)
    assert all("cut" not in keys and "during" in keys for keys in observer.keys()), observer.keys()


def test_a_huge_request_for_one_engine_stalled_does_not_block_it(quick_cluster, observer):
    script = cut_push(str(quick_cluster.connection_file), [0], "stalled")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert first_line(proc, "the push to stall").strip() == "stalled"
        proc.send_signal(signal.SIGSTOP)      # Ctrl-Z in the sender's terminal
        wait_for(lambda: running_on(observer, 0) == "push(cut)", "the push to stream")
        assert observer.execute("x = 1", targets=0, block=False).get_result(timeout=60)
    finally:
        proc.kill()
        proc.wait(LIMIT)


CTRL_C = """
    import signal, sys
    import numpy as np
    from pympec import client
    mec = client.MultiEngineClient(PATH)
    mec.execute("import numpy as np; big = np.arange(1 << 19, dtype=np.float64)")
    expected = np.arange(1 << 19, dtype=np.float64)
    armed = False

    def ctrl_c(signum, frame):   # Ctrl-C, while the pull runs; ignored after it
        if armed:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, ctrl_c)
    print("ready", flush=True)
    for k in range(ROUNDS):
        first = "interrupted"
        print("pulling", flush=True)
        try:
            armed = True
            mec.pull("big")                     # 2 x 4 MB: Ctrl-C lands mid-transfer
            first = "done"
        except KeyboardInterrupt:
            pass
        except Exception as e:
            first = f"raised {type(e).__name__}: {str(e)[:90]}"
        finally:
            armed = False
        try:                                    # the same client, reused at once
            again = mec.pull("big", block=False).get_result(timeout=10)
            ok = (all(np.array_equal(a, expected) for a in again) and
                  mec.pull("id", timeout=10) == [0, 1])
            then = "ok" if ok else "wrong values"
        except Exception as e:
            then = f"broken: {type(e).__name__}: {str(e)[:90]}"
        print(first, "|", then, flush=True)
    """


@pytest.mark.timeout(300)
def test_ctrl_c_mid_transfer_then_the_same_client_works(private_cluster):
    """(A cluster of its own: what the broken client leaves behind is not released.)"""
    rounds = 30
    observer = private_cluster.client(timeout=LIMIT)
    script = textwrap.dedent(CTRL_C).replace("PATH", repr(str(private_cluster.connection_file)))
    # unbuffered: a line read must not take the next one out of select()'s sight
    proc = subprocess.Popen([sys.executable, "-c", script.replace("ROUNDS", str(rounds))],
                            stdout=subprocess.PIPE, bufsize=0)

    def line(what: str) -> str:   # (no line in 25 s: the client hangs)
        return first_line(proc, what, 25).decode().strip()

    outcomes = []
    try:
        assert line("the client") == "ready"
        for k in range(rounds):
            assert line("a pull") == "pulling"
            time.sleep((k % 7) * 0.003)
            proc.send_signal(signal.SIGINT)
            outcomes.append(line("the pull after Ctrl-C, and another"))
    finally:
        proc.kill()
        proc.wait(LIMIT)
    assert serves(observer)
    print("\n".join(sorted(outcomes)))
    assert {o.replace("done", "interrupted") for o in outcomes} == {"interrupted | ok"}, \
        sorted(set(outcomes))


def test_a_client_idle_longer_than_the_controller_timeout(quick_cluster, monkeypatch):
    """Its next call works (its first call after 30 s of idleness used to raise
    ClusterError 'has sent nothing for 35 s and answers no ping')."""
    monkeypatch.setenv("PYMPEC_CONTROLLER_TIMEOUT", "2")
    mec = quick_cluster.client(timeout=LIMIT)
    try:
        time.sleep(3)                      # a user thinking, with nothing outstanding
        assert mec.pull("id") == [0, 1]
    finally:
        mec.close()


def test_a_client_in_a_process_with_many_open_files(quick_cluster):
    """It connects and calls (it waited with select(), which takes no descriptor above
    1023: 'filedescriptor out of range in select()')."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1200:
        pytest.skip("this process may not open 1200 files")
    files = [open(os.devnull) for _ in range(1100)]
    try:
        with quick_cluster.client(timeout=LIMIT) as mec:
            assert mec.pull("id") == [0, 1]
    finally:
        for f in files:
            f.close()


LATE = """
    import time
    from pympec import client
    mec = client.MultiEngineClient(PATH)
    mec.execute("import time; time.sleep(4)", targets=0, block=False)
    mec.pull("id", targets=0, block=False)         # queued behind it: lands at 4 s
    mec.get_ids()                                  # (a blocking call: both are sent)
    print(mec._session.client_id, flush=True)
    time.sleep(600)
    """


def test_a_result_landing_after_the_grace_period_is_released(quick_cluster):
    """(Last in the module: the results it leaves would fail the observer's checks.)"""
    script = textwrap.dedent(LATE).replace("PATH", repr(str(quick_cluster.connection_file)))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        client_id = first_line(proc, "the calls sent").strip()
    finally:
        proc.kill()                         # gone at once; its grace period ends at 2 s
        proc.wait(LIMIT)
    with quick_cluster.client(timeout=LIMIT) as mec:   # (its calls keep the controller
        #                                                  awake through the grace period)
        wait_for(lambda: client_id in mec.status()["held"]["clients"], "the late results",
                 LIMIT, interval=0.1)
        wait_for(lambda: client_id not in mec.status()["held"]["clients"],
                 lambda: f"the late results released: {mec.status()['held']}", 6)


def test_an_empty_client_id_is_refused(quick_cluster, observer):
    """A client id must name someone: "" would never be unregistered nor released."""
    raw = Raw(connection.load(quick_cluster.connection_file), hello=False)
    raw.send({"verb": "hello", "id": "hello", "client": ""})
    reply = raw.wait("hello")
    assert "field 'client' must be a str of 1 to" in reply["error"]["evalue"]
    raw.close()
    assert serves(observer)


def test_requests_read_after_one_that_closed_the_connection_are_not_handled(
        quick_cluster, observer):
    """Two requests in one write: the first (no id to answer) closes the connection,
    so the second, a hello, must not register a client on the closed socket."""
    raw = Raw(connection.load(quick_cluster.connection_file), hello=False)
    raw.writer.queue(b'{"verb": "get_ids"}')
    raw.writer.queue(b'{"verb": "hello", "id": "hello", "client": "a-ghost"}')
    assert raw.writer.flush(raw.sock)   # one write: the controller reads both at once
    assert raw.wait("hello") is None     # closed, unanswered
    raw.close()
    assert observer.status()["clients"] == 1


def test_a_client_that_never_reads_is_paced_not_grown(quick_cluster, observer):
    """It sends pulls of 2 MB, 10 every 0.2 s, 160 in all, and reads nothing: past the
    controller's backlog of unread replies (64 MiB), its requests wait in the socket,
    so what the controller holds for it stops growing; others are served meanwhile,
    and once it reads, every reply comes, none lost."""
    observer.execute("import numpy as np; big = np.ones(1 << 17)")   # 1 MB on each engine
    raw = Raw(connection.load(quick_cluster.connection_file))
    ids = [f"paced-{i}" for i in range(160)]
    for i, request_id in enumerate(ids):   # small requests: they fit in socket buffers
        raw.send({"verb": "pull", "id": request_id, "targets": "all",
                  "args": {"keys": ["big"]}, "describe": "pull(big)"})
        if i % 10 == 9:
            time.sleep(0.2)
    time.sleep(1.0)
    held = observer.status()["held"]
    assert held["results"] < 80 and held["bytes"] < 150e6, held   # all 160: 320 MB
    assert serves(observer)
    for request_id in ids:
        assert raw.wait(request_id)["results"][0]["status"] == "ok", request_id
    raw.close()
