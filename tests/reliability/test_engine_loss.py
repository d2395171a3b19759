"""An engine that goes out of service takes only its own calls with it (issue 12's
"the engine's loop never exits"; issue 15's "outlive a dead engine").

Here an engine's loop itself fails (its replies cannot be sent): it tells the
controller and parks until shutdown.  The controller fails what it ran and what waited
for it with EngineError naming it (id, rank, pid, host, why), drops it from 'all', moves
its tasks to the others, and every other engine keeps its namespace and serves on.
"""
from __future__ import annotations

import pytest

from pympec import client
from pympec.errors import CompositeError, EngineError, InvalidEngineID

from conftest import running_on, wait_for


BREAK_REPLIES = "import pympec.engine.loop as l; l.Engine.send_reply = lambda *a: 1 / 0"


def test_an_engine_out_of_service_takes_only_its_calls(private_cluster):
    mec, tc = private_cluster.client(), private_cluster.task_client()
    mec.execute("kept = id * 10")
    breaking = mec.execute(BREAK_REPLIES, targets=1, block=False)
    queued = mec.execute("x = 1", targets=1, block=False)
    with pytest.raises(CompositeError) as caught:
        breaking.get_result(timeout=10)
    error = caught.value.elist[0][1]
    assert isinstance(error, EngineError)
    assert "engine 1 (rank 2, pid" in str(error) and "ZeroDivisionError" in str(error)
    with pytest.raises(CompositeError):               # queued behind it: fails too
        queued.get_result(timeout=10)
    assert mec.get_ids() == [0] and mec.pull("kept") == [0]
    with pytest.raises(InvalidEngineID, match="engine 1 .* is out of service"):
        mec.execute("pass", targets=1)
    assert tc.map(lambda v: v + 1, range(20)) == list(range(1, 21))
    gone = [e for e in mec.status()["engine_status"] if e["gone"]]
    assert [e["id"] for e in gone] == [1] and "its loop failed" in gone[0]["gone"]


def test_a_task_on_a_lost_engine_completes_elsewhere(private_cluster):
    """The task breaks engine 1 (the only one free to take it), which is lost; the task
    goes to engine 0 once that is free, and completes there."""
    mec, tc = private_cluster.client(), private_cluster.task_client()
    busy = mec.execute("import time; time.sleep(2)", targets=0, block=False)
    wait_for(lambda: running_on(mec, 0), "engine 0 to be busy")
    tid = tc.run(client.StringTask(f"if id == 1:\n    {BREAK_REPLIES}\ndone = id",
                                   pull="done"))
    result = tc.get_task_result(tid, block=True, timeout=60)
    assert result.failure is None and result.ns.done == 0
    assert mec.get_ids() == [0] and busy.get_result(timeout=10) is not None
