"""Interrupting running code (issue 15, part 1), against real clusters.

Each engine has a listener thread on its own communicator; an interrupt raises
KeyboardInterrupt in the user's code without queueing behind it, the call fails with a
CompositeError naming KeyboardInterrupt, and the namespace stays.  Waits here are
bounded by the get_result timeouts (a hang fails the test instead of stalling it).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pympec import client
from pympec.errors import CompositeError, QueueCleared, TaskAborted

from conftest import first_line, running_on, wait_for

BLOCKING = ["while True: pass", "import time; time.sleep(1e9)",
            "comm.recv(source=1, tag=99)",        # an MPI receive that never matches
            "import numpy; comm.Recv(numpy.empty(4), source=1, tag=99)"]


def started(mec, engine: int, describe: str) -> None:
    wait_for(lambda: describe in (running_on(mec, engine) or ""), f"{describe} to start")


@pytest.mark.parametrize("code", BLOCKING)
def test_blocked_code_is_interrupted_and_the_namespace_stays(mec, code):
    mec.execute("kept = 'still here'")
    pending = mec.execute(code, targets=0, block=False)
    started(mec, 0, "execute(")
    assert mec.interrupt(0) == [0]
    with pytest.raises(CompositeError) as caught:
        pending.get_result(timeout=2)
    assert isinstance(caught.value.elist[0][1], KeyboardInterrupt)
    assert mec.pull("kept") == ["still here"] * len(mec.get_ids())


def test_nothing_running_nothing_interrupted(mec):
    assert mec.interrupt() == []
    assert mec.execute("x = 1") is not None


def test_a_stray_sigint_leaves_an_idle_engine_alone(mec):
    mec.execute("import os; pid = os.getpid()", targets=0)
    pid = mec.pull("pid", targets=0)[0]
    os.kill(pid, signal.SIGINT)          # as mpiexec forwards a terminal's Ctrl-C
    assert mec.pull("pid", targets=0, timeout=10) == [pid]


def test_kill_reaches_blocked_code(private_cluster):
    mec = private_cluster.client()
    running = mec.execute("while True: pass", targets=1, block=False)
    queued = mec.execute("x = 1", targets=1, block=False)
    started(mec, 1, "execute(")
    mec.kill(targets=1, timeout=10)
    assert mec.get_ids() == [0]
    with pytest.raises(CompositeError):
        running.get_result(timeout=10)
    with pytest.raises(CompositeError) as caught:
        queued.get_result(timeout=10)
    assert isinstance(caught.value.elist[0][1], QueueCleared)


def test_aborting_a_running_task_interrupts_it(private_cluster):
    tc, mec = private_cluster.task_client(), private_cluster.client()
    tid = tc.run(client.StringTask("while True: pass"))
    wait_for(lambda: any("task(" in (running_on(mec, e) or "") for e in (0, 1)),
             "the task to start")
    tc.abort(tid)
    result = tc.get_task_result(tid, block=True, timeout=10)   # a StringTask's TaskResult
    assert isinstance(result.failure, TaskAborted)
    # its engine is free again: both answer at once
    assert mec.execute("pass", timeout=10) is not None


def test_ctrl_c_in_a_blocking_call_interrupts_its_engines(cluster, mec):
    script = textwrap.dedent(f"""
        from pympec import client
        from pympec.errors import CallInterrupted
        mec = client.MultiEngineClient({str(cluster.connection_file)!r})
        print("ready", flush=True)
        try:
            mec.execute("while True: pass", targets=0)
        except CallInterrupted as e:
            print("caught:", e, flush=True)
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert first_line(proc, "the client to start") == "ready\n"
        started(mec, 0, "execute(")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "caught: execute('while True: pass') was interrupted on engines [0]" in out, err
    assert mec.pull("id", targets=0, timeout=10) == [0]    # the engine is free again
