"""TaskClient against a real cluster: API-REFERENCE §3-4, method by method and option
by option, plus the executor, imap, timing metadata and the result cap."""
from __future__ import annotations

import re
import sys
import time

import cloudpickle
import pytest

from pympec import client
from pympec.errors import TaskAborted, TaskRejectError, TaskTimeout
from pympec.client.tasks import TaskResult
from pympec.client.taskclient import LEASE_MAX, SUBMIT_BATCH

from conftest import ENGINES, wait_for

pytestmark = pytest.mark.timeout(60)
cloudpickle.register_pickle_by_value(sys.modules[__name__])   # engines can't import it


@pytest.fixture
def tc(cluster):
    c = cluster.task_client()
    yield c
    c.close()


def square(x):
    return x * x


def nap(seconds):
    import time
    time.sleep(seconds)
    return seconds


def fail():
    return 1 / 0


# -- run, get_task_result, barrier ---------------------------------------------------

def test_run_returns_int_ids_and_results(tc):
    a = tc.run(client.MapTask(square, args=(10,)))
    b = tc.run(client.MapTask(square, (3,)))
    assert isinstance(a, int) and b == a + 1
    tc.barrier(a)
    assert tc.get_task_result(a) == 100
    assert tc.get_task_result(b, block=True) == 9
    assert tc.run(client.MapTask(square, kwargs={"x": 4}), block=True) == 16
    assert tc.run(client.MapTask(lambda: "lambda"), block=True) == "lambda"


def test_get_task_result_pending_and_unknown(tc):
    tid = tc.run(client.MapTask(nap, (0.5,)))
    assert tc.get_task_result(tid) is None            # still running
    assert tc.get_task_result(tid, block=True) == 0.5
    with pytest.raises(IndexError, match="not registered"):
        tc.get_task_result(10 ** 9)
    with pytest.raises(TypeError):
        tc.get_task_result("0")


def test_barrier_list_and_timeout(tc):
    ids = [tc.run(client.MapTask(square, (i,))) for i in range(5)]
    assert tc.barrier(ids) is None
    assert [tc.get_task_result(t) for t in ids] == [0, 1, 4, 9, 16]
    slow = tc.run(client.MapTask(nap, (1.0,)))
    with pytest.raises(TimeoutError):
        tc.barrier([slow], timeout=0.2)
    tc.barrier(slow)
    with pytest.raises(IndexError):
        tc.barrier([10 ** 9])


def test_maptask_failure_raises_with_engine(tc):
    tid = tc.run(client.MapTask(fail))
    with pytest.raises(ZeroDivisionError) as info:
        tc.get_task_result(tid, block=True)
    assert info.value._ipython_engine_info["engineid"] in range(ENGINES)
    assert "ZeroDivisionError" in info.value._ipython_traceback_text
    with pytest.raises(ZeroDivisionError):   # and again: results are cached here
        tc.get_task_result(tid)


def test_task_argument_checks():
    with pytest.raises(TypeError):
        client.MapTask(42)
    with pytest.raises(TypeError):
        client.MapTask(square, args=5)
    with pytest.raises(TypeError):
        client.MapTask(square, kwargs=[1])
    with pytest.raises(TypeError):
        client.StringTask(42)
    with pytest.raises(TypeError):
        client.StringTask("a=1", push=[1])
    with pytest.raises(ValueError):
        client.MapTask(square, (1,), retries=-1)
    with pytest.raises(TypeError):
        client.MapTask(square, (1,), recovery_task="no")


def test_run_needs_a_task(tc):
    with pytest.raises(TypeError):
        tc.run(square)


# -- StringTask and TaskResult -------------------------------------------------------

def test_string_task_result(tc):
    start = time.monotonic()
    tr = tc.run(client.StringTask("a = b * 2\nc = 'x'", pull=["a", "c"], push={"b": 21}),
                block=True)
    took = time.monotonic() - start
    assert isinstance(tr, TaskResult)
    assert tr.failure is None
    assert tr.results == {"a": 42, "c": "x"} and tr.keys == ["a", "c"]
    assert tr.ns.a == 42 and tr.ns["c"] == "x" and tr["a"] == 42
    assert repr(tr.ns) == "NS{'a': 42, 'c': 'x'}"
    with pytest.raises(AttributeError):
        tr.ns.a = 1
    assert tr.engineid in range(ENGINES)
    assert isinstance(tr.taskid, int)
    assert re.fullmatch(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d", tr.submitted)
    assert re.fullmatch(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d", tr.completed)
    assert 0 <= tr.duration <= took          # in seconds, within the call's own time
    assert repr(tr) == f"TaskResult[ID:{tr.taskid}]:{{'a': 42, 'c': 'x'}}"
    assert tr.raise_exception() is None
    single = tc.run(client.StringTask("v = 7", pull="v"), block=True)
    assert single.results == {"v": 7}


def test_string_task_failure_is_stored(tc):
    tr = tc.run(client.StringTask("a = undefined_name", pull="a"), block=True)
    assert isinstance(tr.failure, NameError)
    assert tr.results == {}
    with pytest.raises(NameError):
        tr.ns
    with pytest.raises(NameError):
        tr["a"]
    with pytest.raises(NameError):
        tr.raise_exception()
    assert "TaskResult[ID:" in repr(tr)


def test_timing_metadata(tc):
    tid = tc.run(client.MapTask(nap, (0.05,)))
    info = tc.get_task_info(tid, block=True)
    assert info["engine"] in range(ENGINES)
    assert info["submitted"] <= info["started"] + 0.5
    assert info["started"] <= info["completed"] <= info["received"] + 0.5
    assert info["completed"] - info["started"] >= 0.04


# -- abort ---------------------------------------------------------------------------

def test_abort_queued(tc):
    # a task no engine accepts stays queued until aborted
    tid = tc.run(client.MapTask(square, (1,), depend=lambda p: False))
    tc.abort(tid)
    with pytest.raises(TaskAborted):
        tc.get_task_result(tid, block=True)
    with pytest.raises(IndexError, match="Task Already Aborted"):
        tc.abort(tid)


def test_abort_running(tc):
    tid = tc.run(client.MapTask(nap, (1.0,)))
    wait_for(lambda: tid in tc.queue_status(verbose=True)["pending"], f"task {tid} to run")
    tc.abort(tid)
    with pytest.raises(IndexError, match="Task Already Aborted"):
        tc.abort(tid)
    with pytest.raises(TaskAborted):
        tc.get_task_result(tid, block=True)


def test_abort_done_and_bad_id(tc):
    tid = tc.run(client.MapTask(square, (2,)))
    tc.barrier(tid)
    with pytest.raises(IndexError, match="Task Already Completed"):
        tc.abort(tid)
    with pytest.raises(TypeError):
        tc.abort("x")
    with pytest.raises(IndexError):
        tc.abort(10 ** 9)


# -- spin, queue_status, clear -------------------------------------------------------

def test_spin_and_queue_status(tc):
    assert tc.spin() is None
    status = tc.queue_status()
    assert set(status) == {"pending", "failed", "succeeded", "scheduled"}
    assert all(isinstance(v, int) for v in status.values())
    ok = tc.run(client.MapTask(square, (3,)))
    bad = tc.run(client.MapTask(fail))
    tc.barrier([ok, bad])
    verbose = tc.queue_status(verbose=True)
    assert ok in verbose["succeeded"] and bad in verbose["failed"]
    slow = tc.run(client.MapTask(nap, (0.5,)))
    wait_for(lambda: slow in tc.queue_status(verbose=True)["pending"], f"task {slow} to run")
    tc.barrier(slow)


def test_clear(tc):
    ids = [tc.run(client.MapTask(square, (i,))) for i in range(3)]
    tc.barrier(ids)
    assert tc.clear(ids[0]) == 1
    with pytest.raises(IndexError):
        tc.get_task_result(ids[0])
    with pytest.raises(KeyError):
        tc.clear([ids[0]])
    assert ids[0] not in tc.queue_status(verbose=True)["succeeded"]
    assert tc.clear() >= 2
    with pytest.raises(IndexError):
        tc.get_task_result(ids[1])


# -- map, mapper, parallel, imap -----------------------------------------------------

def test_map(tc):
    assert tc.map(square, range(20)) == [x * x for x in range(20)]
    assert tc.map(lambda a, b: a + b, [1, 2, 3], [10, 20, 30]) == [11, 22, 33]
    assert tc.map(square, range(50), chunksize=7) == [x * x for x in range(50)]
    assert tc.map(square, range(1000)) == [x * x for x in range(1000)]
    with pytest.raises(ValueError):
        tc.map(square, [1, 2], [1])
    with pytest.raises(TypeError):
        tc.map("square", [1])
    with pytest.raises(ZeroDivisionError):
        tc.map(lambda x: 1 / x, [1, 0, 2])


def test_mapper_nonblocking_and_parallel(tc):
    ids = tc.mapper(block=False).map(square, range(5))
    assert len(ids) == 5 and all(isinstance(t, int) for t in ids)
    tc.barrier(ids)
    assert [tc.get_task_result(t) for t in ids] == [0, 1, 4, 9, 16]

    @tc.parallel()
    def cube(x):
        return x ** 3
    assert cube(range(4)) == [0, 1, 8, 27]
    assert cube.__name__ == "cube"

    @tc.parallel(retries=1, block=False)
    def ident(x):
        return x
    ids = ident([5, 6])
    tc.barrier(ids)
    assert [tc.get_task_result(t) for t in ids] == [5, 6]


def test_imap_is_lazy_and_ordered(tc):
    fed = []

    def source():
        for i in range(40):
            fed.append(i)
            yield i
    it = tc.imap(square, source(), max_outstanding=5)
    assert next(it) == 0
    assert len(fed) <= 6
    assert list(it) == [x * x for x in range(1, 40)]
    assert list(tc.imap(square, range(30), chunksize=4, max_outstanding=3)) == \
        [x * x for x in range(30)]


# -- task options --------------------------------------------------------------------

def test_clear_before_and_after(tc, mec):
    mec.push({"leftover": 1})
    tr = tc.run(client.StringTask("seen = 'leftover' in globals()", pull="seen",
                                  clear_before=True), block=True)
    assert tr.ns.seen is False
    tc.run(client.StringTask("trace = 1", clear_after=True), block=True)
    assert not any("trace" in keys for keys in mec.keys())
    tc.run(client.MapTask(fail, clear_after=True, retries=0))   # after a failure too
    mec.reset()


def reject_unless_last():
    from pympec.errors import TaskRejectError
    if id != 3:  # noqa: F821 (``id`` is the engine's id in its namespace)
        raise TaskRejectError(f"engine {id} cannot do this")  # noqa: F821
    return id  # noqa: F821


def test_retries_reach_another_engine(tc):
    ids = [tc.run(client.MapTask(reject_unless_last, retries=ENGINES - 1)) for _ in range(4)]
    tc.barrier(ids)
    assert [tc.get_task_result(t) for t in ids] == [3] * 4
    # without retries a rejecting engine's TaskRejectError is the result
    no_retry = [tc.run(client.MapTask(reject_unless_last)) for _ in range(8)]
    tc.barrier(no_retry)
    errors = []
    for t in no_retry:
        try:
            tc.get_task_result(t)
        except TaskRejectError as e:
            errors.append(e)
    assert errors, "some of 8 tasks should have landed on engines 0-2"


def test_recovery_task(tc):
    recovered = client.MapTask(lambda: "recovered")
    tid = tc.run(client.MapTask(fail, retries=1, recovery_task=recovered))
    assert tc.get_task_result(tid, block=True) == "recovered"
    # a StringTask recovery under the same id
    tr = tc.run(client.StringTask("a = 1/0", pull="a",
                                  recovery_task=client.StringTask("a = 'ok'", pull="a")),
                block=True)
    assert tr.ns.a == "ok"
    # a recovery task that fails too: its failure is the result
    tid = tc.run(client.MapTask(fail, recovery_task=client.MapTask(fail)))
    with pytest.raises(ZeroDivisionError):
        tc.get_task_result(tid, block=True)


def test_depend_steers_tasks(tc, mec):
    mec.clear_properties()
    mec.set_properties({"gpu": True}, targets=[1, 2])
    assert mec.get_properties(targets=1) == [{"gpu": True}]
    assert mec.has_properties(["gpu"], targets=0) == [[False]]
    tasks = [client.StringTask("where = id", pull="where", depend=lambda p: p.get("gpu"))
             for _ in range(12)]
    ids = tc.run_many(tasks)
    tc.barrier(ids)
    engines = {tc.get_task_result(t).ns.where for t in ids}
    assert engines <= {1, 2}
    # a depend that raises counts as False
    tid = tc.run(client.MapTask(square, (2,), depend=lambda p: p["gpu"]))
    assert tc.get_task_info(tid, block=True)["engine"] in (1, 2)
    mec.del_properties(["gpu"], targets=[1, 2])
    mec.clear_properties()


def test_impossible_depend_times_out(cluster):
    with cluster.task_client(task_timeout=1.0) as tc:
        tid = tc.run(client.MapTask(square, (1,), depend=lambda p: p.get("no such")))
        with pytest.raises(TaskTimeout, match="depend"):   # not a wait for ever
            tc.get_task_result(tid, block=True)


def test_tasks_and_direct_commands_share_engines(tc, mec):
    ids = tc.run_many([client.MapTask(square, (i,)) for i in range(300)])
    for i in range(5):   # direct commands keep their per-engine order between tasks
        mec.execute(f"counter = {i}")
        mec.execute("counter += 100")
        assert mec.pull("counter") == [i + 100] * ENGINES
    tc.barrier(ids)
    assert [tc.get_task_result(t) for t in ids] == [i * i for i in range(300)]
    mec.reset()


def test_more_tasks_than_one_submission_holds(cluster):
    """run_many past SUBMIT_BATCH within one lease of ids (as a long-lived client has):
    the tasks go in several messages, each once."""
    with cluster.task_client() as tc:
        tc._lease = LEASE_MAX   # (as after a few runs)
        n = SUBMIT_BATCH + 5
        ids = tc.run_many([client.MapTask(abs, (-i,)) for i in range(n)])
        tc._settle_submits()   # the controller's answers: none refused
        assert not [t for t in ids if t in tc._results]
        tc.barrier(ids, timeout=120)
        assert [tc.get_task_result(t) for t in ids] == list(range(n))


def test_another_client_can_fetch(tc, cluster):
    tid = tc.run(client.MapTask(square, (6,)))
    with cluster.task_client() as other:
        assert other.get_task_result(tid, block=True) == 36


def test_result_cap(tc):
    settings = tc.configure()
    old, held = settings["result_cap"], settings["held_bytes"]   # other tests' leftovers
    try:
        tc.configure(result_cap=held + 10)
        tid = tc.run(client.MapTask(lambda: "x" * 1000))
        wait_for(lambda: tid in tc.queue_status(verbose=True)["succeeded"], f"task {tid} to succeed")
        refused = tc.run(client.MapTask(square, (1,)))   # (tc.run does not wait: the
        with pytest.raises(MemoryError, match=f"cap {held + 10}"):   # error is its result)
            tc.get_task_result(refused, block=True)
        assert tc.get_task_result(tid) == "x" * 1000   # fetching frees the store
        assert tc.run(client.MapTask(square, (3,)), block=True) == 9
    finally:
        tc.configure(result_cap=old)


# -- the executor --------------------------------------------------------------------

def test_executor_futures(tc):
    with tc.executor() as ex:
        f = ex.submit(pow, 2, 10)
        assert f.result(timeout=20) == 1024
        g = ex.submit(fail)
        assert isinstance(g.exception(timeout=20), ZeroDivisionError)
        with pytest.raises(ZeroDivisionError):
            g.result()
        assert list(ex.map(square, range(20))) == [x * x for x in range(20)]
        assert list(ex.map(square, range(50), chunksize=6, timeout=30)) == \
            [x * x for x in range(50)]
        slow = ex.map(nap, [2.0], timeout=0.2)
        with pytest.raises(TimeoutError):
            next(slow)
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)


def test_executor_map_picks_chunks(tc):
    """No chunksize: about four tasks per engine, results in order, as tc.map."""
    with tc.executor() as ex:
        assert list(ex.map(pow, range(1000), [2] * 1000, timeout=30)) == \
            [x * x for x in range(1000)]
        assert list(ex.map(square, [])) == []
        with pytest.raises(ValueError):
            ex.map(square, range(3), chunksize=0)


def test_executor_cancel(tc):
    ex = tc.executor(max_outstanding=1)
    first = ex.submit(nap, 0.5)
    wait_for(first.running, "the first task to be sent")   # the one task allowed in flight
    queued = [ex.submit(square, i) for i in range(3)]
    assert queued[0].cancel()          # still queued here: cancellable
    assert queued[0].cancelled()
    assert not first.cancel()          # running: not
    ex.shutdown(wait=True, cancel_futures=True)
    assert first.result() == 0.5
    assert all(f.cancelled() for f in queued)
