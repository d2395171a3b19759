"""Every wait is bounded and explained; what the controller keeps stays bounded.

Against private clusters of 2 engines (some tests freeze or fill them):
- a frozen (SIGSTOPped) controller is reported within PYMPEC_CONTROLLER_TIMEOUT;
- an engine whose reply waits for the controller sleeps, not spins, where cores are few;
  nor does the controller spin while a command it sent ahead waits for a busy engine;
- a blocking wait takes timeout= and raises TimeoutError, and the call goes on;
- unknown ids raise InvalidDeferredID at once; known ones can be fetched by id from
  another client; a request lost with its connection raises RequestLost;
- an aborted running task's result comes at once, as TaskAborted;
- a full result store refuses new calls with MemoryError, and recovers once fetched;
- what a killed client was owed is released after the grace period, mid-gather too.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import pympec
from pympec import client, connection
from pympec.errors import (ClusterError, InvalidDeferredID, RequestLost, TaskAborted)

from conftest import cpu_seconds, running_on, wait_for


@pytest.fixture
def small_cluster(tmp_path):
    """A private cluster whose controller releases a gone client's results after 2 s,
    keeps at most 256 KiB for clients, and frees unused buffers after 1 s."""
    env = dict(os.environ, PYMPEC_RESULT_GRACE="2", PYMPEC_RESULT_CAP="256K",
               PYMPEC_BUFFER_KEEP="1")
    with pympec.Cluster(n=2, connection_file=tmp_path / "c.json", timeout=120,
                        env=env) as cluster:
        yield cluster


def held(mec) -> dict:
    return mec.status()["held"]


def test_frozen_controller_is_reported_then_recovers(private_cluster, monkeypatch):
    mec = private_cluster.client()
    mec.execute("x = 0")
    pid = connection.load(private_cluster.connection_file).pid
    monkeypatch.setenv("PYMPEC_CONTROLLER_TIMEOUT", "3")
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(ClusterError, match="has sent nothing for [0-9]+ s and answers no ping"):
            mec.execute("x = 1")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert mec.pull("x") in ([0, 0], [1, 1])   # reconnected; the call may have run meanwhile


@pytest.mark.parametrize("what", ["reply", "output"])
def test_an_engine_whose_message_waits_for_the_controller_sleeps(private_cluster, what):
    """A reply or live output past MPI's eager size (a few KB) is sent only once the
    controller takes it.  With more ranks than cores, an engine waiting for that in a
    spin took the core the controller needed (a loop of tc.run: 4 engines spent 20 us
    of CPU per task waiting)."""
    if (os.cpu_count() or 1) >= 3:
        pytest.skip("with a core for every rank, engines spin for a quick hand-over")
    mec = private_cluster.client()
    engine = mec.execute("import os; pid = os.getpid()", targets=0) and \
        mec.pull("pid", targets=0)[0]
    controller = connection.load(private_cluster.connection_file).pid
    # a record holding its 30 KB source is one reply message of 30 KB; streamed, a
    # print of 30 KB is one output message
    code = "import time; time.sleep(0.6)  #" + "x" * 30_000 if what == "reply" else \
        "import time; time.sleep(0.6); print('x' * 30_000)"
    printed = []
    pending = mec.execute(code, targets=0, block=False,
                          stream=what == "output" and (lambda *out: printed.append(out)))
    wait_for(lambda: running_on(mec, 0) is not None, "the execute to start")
    os.kill(controller, signal.SIGSTOP)
    try:
        before = cpu_seconds(engine)
        time.sleep(1.6)    # not a wait: the sleep ends at 0.6 s, then the reply waits
        used = cpu_seconds(engine) - before
    finally:
        os.kill(controller, signal.SIGCONT)
    # (a spin uses 0.5 s; polls every ms cost up to 0.11 s on a busy shared host)
    assert used < 0.25, f"the engine used {used:.2f} s of CPU while its {what} waited 1 s"
    record = pending.get_result(timeout=30)[0]
    assert len(record["input"]["raw"] if what == "reply" else record["stdout"]) > 30_000
    assert len("".join(text for _, _, text in printed)) == (30_001 if what == "output" else 0)


def test_the_controller_waits_for_a_busy_engine_without_spinning(private_cluster):
    """A command sent ahead to an engine that runs a long one (a 40 KB push behind a
    sleep) is an MPI send that completes only once the engine takes it.  The controller
    waited for that in a spin: a whole core (2.0 s of CPU in 2 s), taken from the
    engines."""
    mec = private_cluster.client()
    controller = connection.load(private_cluster.connection_file).pid
    slept = mec.execute("import time; time.sleep(2.5)", targets=0, block=False)
    pushed = mec.push({"a": np.zeros(5000)}, targets=0, block=False)
    wait_for(lambda: running_on(mec, 0) is not None, "the sleep to start")
    before = cpu_seconds(controller)
    time.sleep(1.5)        # not a wait: the time the push waits, measured
    used = cpu_seconds(controller) - before
    assert used < 0.4, f"the controller used {used:.2f} s of CPU in 1.5 s of waiting"
    assert slept.get_result(timeout=30) and pushed.get_result(timeout=30) == [None]
    assert mec.pull("a", targets=0)[0].shape == (5000,)


def test_blocking_wait_times_out_and_the_call_goes_on(private_cluster):
    mec = private_cluster.client()
    pending = mec.execute("import time; time.sleep(1.5); done = 1", targets=0, block=False)
    with pytest.raises(TimeoutError, match="did not finish within 0.2 s; it goes on running"):
        pending.get_result(timeout=0.2)
    assert pending.get_result(timeout=30) is not None
    assert mec.pull("done", targets=0) == [1]


def test_blocking_calls_take_a_timeout(private_cluster):
    mec = private_cluster.client(call_timeout=0.3)       # the client's default
    with pytest.raises(TimeoutError, match="did not finish within 0.3 s"):
        mec.execute("import time; time.sleep(2)", targets=0)
    with pytest.raises(TimeoutError, match="within 0.2 s"):
        mec.pull("id", targets=0, timeout=0.2)           # queued behind the sleep
    assert mec.pull("id", targets=1, timeout=30) == [1]
    tc = private_cluster.task_client()
    tid = tc.run(client.MapTask(time.sleep, (2,)))
    with pytest.raises(TimeoutError):
        tc.get_task_result(tid, block=True, timeout=0.2)
    assert tc.get_task_result(tid, block=True, timeout=60) is None


def test_unknown_ids_raise_at_once(private_cluster):
    mec = private_cluster.client()
    with pytest.raises(InvalidDeferredID, match="never received"):
        mec.get_pending_deferred("0" * 32)


def test_another_client_fetches_a_result_by_id(private_cluster):
    mec = private_cluster.client()
    pending = mec.execute("import time; time.sleep(0.5); print('hi', id)", block=False)
    mec.close()                           # this client goes; its call goes on
    other = private_cluster.client()
    records = other.get_pending_deferred(pending.result_id)
    assert [r["stdout"] for r in records] == ["hi 0\n", "hi 1\n"]
    other.execute("pass")                 # (acknowledges what it fetched)
    with pytest.raises(InvalidDeferredID, match="fetched and acknowledged"):
        private_cluster.client().get_pending_deferred(pending.result_id)


def test_a_request_lost_with_its_connection_raises(private_cluster):
    mec = private_cluster.client()
    session = mec._session
    session.outstanding["lost-on-the-wire"] = None   # sent as the link broke: never read
    session.close()
    with pytest.raises(RequestLost, match="lost with the connection .* it did not run"):
        session.wait("lost-on-the-wire")
    assert mec.pull("id") == [0, 1]


def test_aborting_a_running_task_answers_at_once(private_cluster):
    tc = private_cluster.task_client()
    mec = private_cluster.client()
    tid = tc.run(client.MapTask(time.sleep, (20,)))
    wait_for(lambda: running_on(mec, 0) or running_on(mec, 1), "the task to start")
    tc.abort(tid)
    started = time.monotonic()
    with pytest.raises(TaskAborted, match="while it ran"):
        tc.get_task_result(tid, block=True)
    assert time.monotonic() - started < 10   # not after the 20 s task (a hang guard)


def test_a_full_store_refuses_calls_then_recovers(small_cluster):
    """A client that never reads its results fills the store up to the cap: then its
    next call is refused with MemoryError, and once it reads them there is room again."""
    mec, observer = small_cluster.client(), small_cluster.client()
    pending = []
    while held(observer)["bytes"] <= held(observer)["cap"]:
        pending.append(mec.execute("print('x' * 4000)", block=False))   # never read
        count = len(pending)
        wait_for(lambda: held(observer)["results"] >= count, "the result to be kept")
        assert count < 200, f"the store went past its cap: {held(observer)}"
    refused = mec.execute("pass", block=False)
    assert all(p.get_result(timeout=60) for p in pending)
    with pytest.raises(MemoryError, match="PYMPEC_RESULT_CAP"):
        refused.get_result(timeout=60)
    assert mec.execute("pass") is not None     # its results acknowledged: room again
    assert held(observer)["bytes"] < held(observer)["cap"]


def rss(pid: int) -> int:
    """The resident memory of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


@pytest.mark.parametrize("call", ["gather", "scatter"])
def test_a_killed_clients_memory_is_released(small_cluster, call):
    """A client killed mid-gather or mid-scatter leaves what it was owed, and what it
    sent, on the controller for the grace period only: its memory comes back."""
    mec = small_cluster.client()
    small_cluster.task_client().configure(result_cap=1 << 30)   # room for the big part
    controller = connection.load(small_cluster.connection_file).pid
    mec.scatter("big", np.ones(6_000_000))          # 48 MB on the engines
    baseline, before = held(mec)["bytes"], rss(controller)
    script = textwrap.dedent(f"""
        import os, numpy as np
        from pympec import client
        mec = client.MultiEngineClient({str(small_cluster.connection_file)!r})
        if {call!r} == "gather":
            mec.gather("big", block=False)          # 48 MB to come back
        else:
            mec.scatter("other", np.ones(6_000_000), block=False)
        print("sent", flush=True)
        import time; time.sleep(60)
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "sent\n"
        if call == "gather":
            wait_for(lambda: held(mec)["bytes"] > baseline + 40e6, "the gathered result kept",
                     timeout=60)
    finally:
        proc.kill()                                  # mid-call: nothing read or acked
        proc.wait(30)
    wait_for(lambda: held(mec)["bytes"] <= baseline and held(mec)["clients_gone"] == 0,
             lambda: f"the released results: {held(mec)}", timeout=30)
    wait_for(lambda: rss(controller) < before + 30e6,
             lambda: f"the controller's memory back near {before / 1e6:.0f} MB: "
                     f"{rss(controller) / 1e6:.0f} MB", timeout=30)
