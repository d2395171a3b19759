"""A client never loses a reply, whatever breaks around it.

Against one private cluster of 2 engines for the module:
- a controller-level reply lost with the connection (task ids leased, task results
  fetched) comes again when the client reconnects: the request ran, and says so;
- a reconnect interrupted by Ctrl-C, or one with more outstanding requests than one
  message may name, still resolves every request;
- a ``stream=`` callback that raises loses no reply;
- work the outbox thread cannot write (a bug, a value JSON cannot hold) comes out as an
  error of the caller's next write, and the thread and the queued tasks survive;
- a client dropped without ``close()`` leaves no thread, socket or connection behind,
  and a call it made just before still runs;
- ``close()`` closes all, even after an outbox error, and frees what was kept for it;
- a reply taken, then sent again after a reconnect, is acknowledged again, not kept.
"""
from __future__ import annotations

import gc
import threading
import time
import warnings
import weakref

import numpy as np
import pytest

import pympec
from pympec import client
from pympec.client.session import MAX_IDS
from pympec.errors import RequestLost

from conftest import wait_for

LIMIT = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    path = tmp_path_factory.mktemp("lost") / "c.json"
    with pympec.Cluster(n=2, connection_file=path, timeout=120) as cluster:
        yield cluster


def test_a_controller_reply_lost_on_the_wire_comes_again(cluster):
    """The request ran (ids were leased): its reply comes again on reconnect, instead of
    a RequestLost saying it did not run."""
    with cluster.task_client() as tc:
        session = tc._session
        request_id = session.send({"verb": "task_lease", "count": 7})
        session.disconnect()   # before the reply is read
        first, count = session.wait(request_id, timeout=LIMIT).header["value"]
        assert count == 7 and first >= 0
        leased = session.call("task_lease", count=1)   # the next lease follows it
        assert leased[0] >= first + 7


def test_results_of_a_fetch_lost_on_the_wire_come_again(cluster):
    """A fetch takes finished results out of the farm; if its reply is lost, the
    results come again on reconnect instead of being gone for good."""
    with cluster.task_client() as tc:
        tid = tc.run(client.MapTask(abs, (-5,)))
        wait_for(lambda: tc.queue_status()["succeeded"] >= 1, "the task to finish",
                 timeout=LIMIT)
        session = tc._session
        request_id = session.send({"verb": "task_fetch", "ids": [tid], "wait": 0})
        session.disconnect()
        reply = session.wait(request_id, timeout=LIMIT)
        assert [info["tid"] for info in reply.header["value"]["tasks"]] == [tid]


def test_ctrl_c_inside_a_reconnect_leaves_nothing_waiting(cluster):
    mec = cluster.client()
    session = mec._session
    session.outstanding["lost-on-the-wire"] = None   # sent as the link broke: never read
    session.disconnect()
    real_call = session.call

    def interrupted(verb, **fields):
        if verb == "result":   # after the hello, before the question
            raise KeyboardInterrupt
        return real_call(verb, **fields)

    session.call = interrupted
    with pytest.raises(KeyboardInterrupt):
        session.wait("lost-on-the-wire", timeout=LIMIT)
    del session.call
    with pytest.raises(RequestLost, match="did not run"):
        session.wait("lost-on-the-wire", timeout=LIMIT)
    assert mec.pull("id") == [0, 1]
    mec.close()


def test_a_reconnect_with_more_outstanding_ids_than_one_message_holds(cluster):
    mec = cluster.client()
    session = mec._session
    lost = [f"lost-{i}" for i in range(MAX_IDS + 4000)]
    session.outstanding.update(dict.fromkeys(lost))
    session.disconnect()
    for request_id in (lost[0], lost[MAX_IDS], lost[-1]):
        with pytest.raises(RequestLost, match="did not run"):
            session.wait(request_id, timeout=LIMIT)
    assert len(session.lost) == len(lost) - 3
    session.lost.clear()
    session.outstanding.clear()
    assert mec.pull("id") == [0, 1]
    mec.close()


def test_a_stream_callback_that_raises_loses_no_reply(cluster):
    """Output and the reply arrive in one read (the client reads nothing while the call
    runs); the callback raises on the first piece: the error comes out of the wait, and
    the reply is there for the next one."""
    with cluster.client() as mec:
        seen = []

        def broken(engine, name, text):
            seen.append(text)
            raise ValueError("the callback broke")

        pending = mec.execute("print('a', flush=True); print('b')", targets=0,
                              block=False, stream=broken)
        time.sleep(1.0)   # all of it arrives before the client reads
        with pytest.raises(ValueError, match="the callback broke"):
            pending.get_result(timeout=LIMIT)
        records = pending.get_result(timeout=LIMIT)
        assert records[0]["stdout"] == "a\nb\n"
        assert seen
        assert mec.pull("id", targets=1) == [1]


def test_a_numpy_task_timeout_is_a_number_and_a_str_is_refused(cluster):
    with cluster.task_client(task_timeout=np.float32(5)) as tc:
        assert tc.task_timeout == 5.0 and type(tc.task_timeout) is float
        tids = [tc.run(client.MapTask(abs, (-i,))) for i in range(20)]
        tc.barrier(tids, timeout=LIMIT)
        assert [tc.get_task_result(t) for t in tids] == list(range(20))
        with pytest.raises(TypeError, match="task_timeout must be a number"):
            tc.task_timeout = "5"
        with pytest.raises(ValueError, match="task_timeout must be in"):
            tc.task_timeout = float("nan")


def test_an_error_in_the_outbox_thread_reaches_the_caller(cluster):
    """A batcher that fails in the outbox thread (a bug, a value JSON cannot hold): its
    error comes out of the caller's next write, the thread lives, no task is lost."""
    with cluster.task_client() as tc:
        session = tc._session
        tc.barrier([tc.run(client.MapTask(abs, (-2,)))], timeout=LIMIT)   # ids leased
        failing = threading.Event()

        def broken():
            if not failing.is_set():
                failing.set()
                raise RuntimeError("the batcher broke")

        session.batchers.insert(0, broken)
        tid = tc.run(client.MapTask(abs, (-3,)))   # the outbox writes it, and fails
        wait_for(lambda: session.outbox_error is not None, "the outbox to fail",
                 timeout=LIMIT)
        with pytest.raises(RuntimeError, match="the batcher broke"):
            tc.barrier([tid], timeout=LIMIT)
        assert tc.get_task_result(tid, block=True, timeout=LIMIT) == 3
        assert session.outbox.is_alive()
        tid = tc.run(client.MapTask(abs, (-4,)))   # the outbox still works
        wait_for(lambda: not tc._pending and not session.writer.pending,
                 "the outbox to write the task", timeout=LIMIT)
        assert tc.get_task_result(tid, block=True, timeout=LIMIT) == 4


def test_a_client_dropped_without_close_leaves_nothing_behind(cluster):
    with cluster.client() as observer:
        before = observer.status()["clients"]
        mec = cluster.client()
        pending = mec.execute("x = 1", block=False)   # starts the outbox thread
        outbox, session = mec._session.outbox, weakref.ref(mec._session)
        wait_for(lambda: not mec._session.writer.pending, "the outbox to write",
                 timeout=LIMIT)
        assert observer.status()["clients"] == before + 1
        with warnings.catch_warnings():   # (ResourceWarning: its socket was never closed)
            warnings.simplefilter("ignore")
            del mec, pending
            gc.collect()
        assert session() is None
        outbox.join(LIMIT)
        assert not outbox.is_alive()
        wait_for(lambda: observer.status()["clients"] == before,
                 "the controller to see the connection go", timeout=LIMIT)


def test_a_call_made_just_before_its_client_is_dropped_still_runs(cluster):
    """block=False, then the client is dropped at once: the outbox holds the session
    until the call is written (then lets it go)."""
    with cluster.client() as observer:
        observer.execute("fired = 0")

        def fire_and_forget() -> None:
            mec = cluster.client()
            mec.execute("fired += 1", block=False)

        with warnings.catch_warnings():   # (ResourceWarning: sockets never closed)
            warnings.simplefilter("ignore")
            for _ in range(5):
                fire_and_forget()
            gc.collect()
        wait_for(lambda: observer.pull("fired") == [5, 5], "the five calls to run",
                 timeout=LIMIT)


def test_close_closes_even_after_an_outbox_error_and_frees_what_it_held(cluster):
    with cluster.client() as observer:
        before = observer.status()
        tc = cluster.task_client()
        # ids leased, a result fetched: kept replies, which close() acknowledges
        tc.barrier([tc.run(client.MapTask(abs, (-1,)))], timeout=LIMIT)
        session = tc._session

        def broken():
            session.batchers.remove(broken)
            raise RuntimeError("the batcher broke")

        session.batchers.insert(0, broken)
        session.later()   # the outbox's turn, with nothing else to write
        wait_for(lambda: session.outbox_error is not None, "the outbox to fail",
                 timeout=LIMIT)
        with pytest.raises(RuntimeError, match="the batcher broke"):
            tc.close()
        assert session.sock is None and session.outbox is None
        wait_for(lambda: observer.status()["clients"] == before["clients"],
                 "the controller to see the client go", timeout=LIMIT)
        held = observer.status()["held"]
        assert held["clients"].get(session.client_id) is None, held   # nothing kept


def test_a_reply_taken_then_sent_again_is_not_kept(cluster):
    """The acknowledgement of a fetch reply rides on a request lost with the link: on
    reconnect the controller sends the reply again; the client acknowledges it again
    instead of keeping it for ever."""
    with cluster.task_client() as tc:
        session = tc._session
        tids = [tc.run(client.MapTask(abs, (-i,))) for i in range(20)]
        tc.barrier(tids, timeout=LIMIT)
        assert [tc.get_task_result(t) for t in tids] == list(range(20))
        assert session.pending_acks   # the fetch reply, acknowledged with the next request
        with session.lock:   # that request is queued, then the link breaks
            session.queue({"verb": "task_status"})
        lost = list(session.outstanding)[-1]
        session.disconnect()
        with pytest.raises(RequestLost):
            session.wait(lost, timeout=LIMIT)
        time.sleep(0.5)   # the reply sent again on reconnect has arrived
        session.receive()
        assert session.replies == {}
        tc.queue_status()   # (carries the acknowledgements)
        wait_for(lambda: session.client_id not in session.call("status")["held"]["clients"],
                 "the controller to free the reply", timeout=LIMIT)


@pytest.mark.parametrize("end", ["reader", "writer"])
def test_a_stream_left_interrupted_is_dropped_and_the_next_call_works(cluster, end):
    """A second Ctrl-C can land in the handler that drops a link whose read or write
    the first one cut short (bug 23 of docs/reliability.md): the session then finds
    the stream marked at its next use, drops it, and the call goes on a fresh one."""
    mec = cluster.client(timeout=LIMIT)
    try:
        assert mec.pull("id") == list(range(len(mec.get_ids())))
        session = mec._session
        before = session.sock
        setattr(getattr(session, end), "interrupted", True)   # as a cut-short read leaves it
        assert mec.pull("id", block=False).get_result(timeout=LIMIT) == \
            list(range(len(mec.get_ids())))
        assert session.sock is not before and session.sock is not None
        assert not session.reader.interrupted and not session.writer.interrupted
    finally:
        mec.close()
