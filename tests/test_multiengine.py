"""MultiEngineClient against a real cluster: API-REFERENCE §2, method by method."""
from __future__ import annotations

import numpy as np
import pytest

from pympec import client
from pympec.errors import (CompositeError, InvalidEngineID, NotAPendingResult, QueueCleared)
from pympec.client.results import PendingResult, ResultList

from conftest import ENGINES, running_on, wait_for


def test_get_ids_and_len(mec):
    assert mec.get_ids() == list(range(ENGINES))
    assert len(mec) == ENGINES


def test_seeded_namespace(mec):
    assert mec.pull("id") == list(range(ENGINES))
    mec.execute("size = comm.Get_size(); total = comm.allreduce(id); name = mpi.__name__")
    assert mec.pull("size") == [ENGINES] * ENGINES
    assert mec.pull("total") == [sum(range(ENGINES))] * ENGINES
    assert mec.pull("name", targets=0) == ["mpi4py.MPI"]


def test_execute_results_list(mec):
    before = mec.execute("pass", targets=0)[0]["number"]
    result = mec.execute('print("c =", 5 * id)', targets=[0, 1])
    assert isinstance(result, ResultList)
    n = before + 1
    assert repr(result) == (
        "<Results List>\n"
        f'[0] In [{n}]: print("c =", 5 * id)\n'
        f"[0] Out[{n}]: c = 0\n\n"
        f'[1] In [{result[1]["number"]}]: print("c =", 5 * id)\n'
        f'[1] Out[{result[1]["number"]}]: c = 5\n')
    record = result[0]
    assert record["id"] == 0 and record["input"]["raw"] == 'print("c =", 5 * id)'
    assert record["stdout"] == "c = 0\n" and "stderr" not in record


def test_execute_stderr_and_display(mec):
    result = mec.execute("import sys; sys.stderr.write('oops\\n'); 6 * 7", targets=0)
    assert result[0]["stderr"] == "oops\n"
    assert result[0]["display"]["repr"] == "42"
    assert "[0] Err[" in repr(result) and "oops" in repr(result)


def test_execute_counter_increments_on_failure(mec):
    n = mec.execute("pass", targets=1)[0]["number"]
    with pytest.raises(CompositeError):
        mec.execute("1/0", targets=1)
    assert mec.execute("pass", targets=1)[0]["number"] == n + 2


def test_targets_and_block_attributes(mec):
    assert mec.targets == "all" and mec.block is True
    mec.targets = [1, 2]
    assert mec.pull("id") == [1, 2]
    assert mec.pull("id", targets=3) == [3]           # per-call override, one-item list
    mec.block = False
    pending = mec.pull("id")
    assert isinstance(pending, PendingResult)
    assert pending.r == [1, 2]
    assert mec.pull("id", block=True) == [1, 2]


@pytest.mark.parametrize("bad", [1.5, {"a": 1}, None.__class__, [0, "x"], True])
def test_targets_validation(mec, bad):
    with pytest.raises(ValueError):
        mec.targets = bad


def test_block_validation(mec):
    for bad in ("yes", 1, 0):
        with pytest.raises(ValueError, match="block"):
            mec.execute("pass", block=bad)
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError):
            mec.block = bad


def test_invalid_engine_ids_raise_directly(mec):
    with pytest.raises(InvalidEngineID):
        mec.execute("pass", targets=ENGINES + 10)
    with pytest.raises(InvalidEngineID):
        mec.execute("pass", targets=-1)
    with pytest.raises(InvalidEngineID):
        mec.execute("pass", targets="some")
    assert mec.pull("id", targets=0) == [0]   # the cluster serves on


def test_push_pull(mec):
    mec.push(dict(a=5, b="text", c=[1, 2]))
    assert mec.pull("a") == [5] * ENGINES
    assert mec.pull(("a", "b"), targets=[0, 1]) == [[5, "text"], [5, "text"]]
    assert mec.pull(["c"], targets=0) == [[1, 2]]
    mec["d"] = 3.5
    assert mec["d"] == [3.5] * ENGINES
    with pytest.raises(TypeError):
        mec[1] = 2
    with pytest.raises(TypeError):
        mec[1]


def test_zip_pull(mec):
    mec.execute("a = id; b = 10 * id")
    assert mec.zip_pull(("a", "b"), targets=[0, 1]) == [(0, 1), (0, 10)]
    assert mec.zip_pull(("a", "b"), targets=2) == [[2, 20]]


def test_push_numpy_is_writable_and_exact(mec):
    a = np.arange(12.0).reshape(3, 4)
    mec.push(dict(a=a), targets=[0, 1])
    mec.execute("a[0, 0] = 100.0; ok = a.flags.writeable", targets=[0, 1])
    assert mec.pull("ok", targets=[0, 1]) == [True, True]
    back = mec.pull("a", targets=0)[0]
    assert back[0, 0] == 100.0 and back.flags.writeable and np.array_equal(back[1:], a[1:])


def test_closures_and_lambdas_travel(mec):
    k = 7
    mec.push(dict(f=lambda x: x * k))
    mec.execute("y = f(6)")
    assert mec.pull("y") == [42] * ENGINES


def test_push_function_resolves_names_on_engines(mec):
    def scaled(x):
        return x * factor  # noqa: F821 - defined on the engines only

    mec.push_function(dict(scaled=scaled))
    mec.execute("factor = id + 1; r = scaled(10)")
    assert mec.pull("r") == [10 * (i + 1) for i in range(ENGINES)]
    back = mec.pull_function("scaled", targets=0)[0]
    assert callable(back)
    with pytest.raises(TypeError):
        mec.push_function(dict(x=3))


def test_scatter_gather_lists_and_tuples(mec):
    mec.scatter("a", list(range(10)))
    parts = mec.pull("a")
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]    # first L % q get one more
    assert mec.gather("a") == list(range(10))
    mec.scatter("t", tuple(range(6)), targets=[0, 1])
    assert mec.pull("t", targets=[0, 1]) == [(0, 1, 2), (3, 4, 5)]
    assert mec.gather("t", targets=[0, 1]) == list(range(6))


def test_scatter_flatten_and_empty_parts(mec):
    mec.scatter("x", [10, 20, 30], flatten=True)
    assert mec.pull("x") == [10, 20, 30, []]
    mec.scatter("x", [10, 20, 30, 40], flatten=False)
    assert mec.pull("x") == [[10], [20], [30], [40]]


def test_scatter_gather_numpy(mec):
    a = np.arange(100).reshape(25, 4)
    mec.scatter("a", a)
    shapes = mec.execute("s = a.shape")
    assert mec.pull("s") == [(7, 4), (6, 4), (6, 4), (6, 4)]
    mec.execute("b = a * 2")
    b = mec.gather("b")
    assert isinstance(b, np.ndarray) and np.array_equal(b, a * 2) and b.flags.writeable
    assert shapes


def test_gather_scalars_and_structured(mec):
    assert mec.gather("id") == list(range(ENGINES))
    rec = np.zeros(6, dtype=[("x", "f8"), ("n", "i4")])
    rec["n"] = np.arange(6)
    mec.scatter("r", rec)
    out = mec.gather("r")
    assert out.dtype == rec.dtype and np.array_equal(out["n"], np.arange(6))


def test_gather_noncontiguous_input(mec):
    a = np.arange(40.0).reshape(10, 4)[:, ::2]     # not contiguous
    mec.scatter("a", a)
    assert np.array_equal(mec.gather("a"), a)


def test_map_and_raw_map(mec):
    assert mec.map(lambda x: x * x, range(10)) == [x * x for x in range(10)]
    assert mec.map(lambda x, y: x + y, [1, 2, 3], [10, 20, 30]) == [11, 22, 33]
    assert mec.raw_map(pow, [[2, 3], [3, 2]]) == [8, 9]
    assert mec.map(abs, [-1, -2]) == [1, 2]     # fewer items than engines
    with pytest.raises(ValueError):
        mec.map(pow, [1, 2], [1])
    with pytest.raises(TypeError):
        mec.raw_map(pow, "notalist")


def test_map_string_named_function(mec):
    mec.execute("def triple(x):\n    return 3 * x")
    assert mec.map("triple", range(5)) == [0, 3, 6, 9, 12]


def test_map_ignores_targets_but_honours_block(mec):
    mec.targets = 0
    mec.block = False
    pending = mec.map(lambda x: x + 1, range(8))
    assert isinstance(pending, PendingResult)
    assert pending.get_result() == list(range(1, 9))


def test_mapper_and_parallel(mec):
    mapper = mec.mapper(block=False)
    assert mapper.map(lambda x: -x, range(4)).r == [0, -1, -2, -3]

    @mec.parallel()
    def square(x):
        return x * x

    assert square(range(6)) == [0, 1, 4, 9, 16, 25]
    mec.execute("def neg(x):\n    return -x")
    assert mec.parallel()("neg")([1, 2]) == [-1, -2]


def test_get_result_history(mec):
    mec.execute("q = 1", targets=0)
    n = mec.execute("print('again')", targets=0)[0]["number"]
    latest = mec.get_result(targets=0)
    assert latest[0]["number"] == n and latest[0]["stdout"] == "again\n"
    assert mec.get_result(n - 1, targets=0)[0]["input"]["raw"] == "q = 1"
    with pytest.raises(CompositeError) as info:
        mec.get_result(10 ** 6, targets=0)
    assert isinstance(info.value.elist[0][1], IndexError)


def test_reset_and_keys(mec):
    mec.execute("zz = 1")
    assert all("zz" in k for k in mec.keys())
    mec.reset(targets=0)
    keys = mec.keys()
    assert "zz" not in keys[0] and "zz" in keys[1]
    assert set(keys[0]) == {"id", "mpi", "comm"}


def test_composite_error(mec):
    with pytest.raises(CompositeError) as info:
        mec.execute("1/0", targets=[0, 1])
    e = info.value
    assert str(e).splitlines() == [
        "one or more exceptions from call to method: execute",
        "[0:execute]: ZeroDivisionError: division by zero",
        "[1:execute]: ZeroDivisionError: division by zero"]
    assert len(e.elist) == 2
    with pytest.raises(ZeroDivisionError):
        e.raise_exception()
    with pytest.raises(IndexError):
        e.raise_exception(5)
    import io
    out = io.StringIO()
    e.print_tracebacks(file=out)
    assert "ZeroDivisionError" in out.getvalue() and "Traceback" in out.getvalue()


def test_pending_result_semantics(mec):
    mec.block = False
    slow = mec.execute("import time; time.sleep(0.5); v = 1", targets=0)
    assert slow.get_result(default="notyet", block=False) == "notyet"
    slow.add_callback(lambda r: len(r))
    assert slow.get_result() == 1
    assert slow.r == 1                       # cached
    bad = mec.execute("1/0", targets=0)
    with pytest.raises(CompositeError):
        bad.r
    with pytest.raises(CompositeError):      # the same exception, re-raised
        bad.get_result()
    assert sorted([bad, slow]) == sorted([slow, bad])


def test_barrier_and_flush(mec):
    mec.block = False
    pending = [mec.execute(f"x{i} = {i}", targets=i % ENGINES) for i in range(6)]
    failing = mec.execute("raise ValueError('later')", targets=0)
    mec.barrier(pending + [failing])       # swallows the failure...
    assert all(p.called for p in pending)
    with pytest.raises(CompositeError):   # ...which is raised on fetch
        failing.r
    with pytest.raises(NotAPendingResult):
        mec.barrier([1])
    mec.flush()
    mec.clear_pending_results()


def test_queue_cleared_after_failure(mec):
    mec.block = False
    fail = mec.execute("import time; time.sleep(0.3); 1/0", targets=0)
    queued = mec.execute("after = 1", targets=0)
    with pytest.raises(CompositeError):
        fail.r
    with pytest.raises(CompositeError) as info:
        queued.r
    assert isinstance(info.value.elist[0][1], QueueCleared)
    assert mec.pull("id", targets=0, block=True) == [0]


def test_calls_in_a_burst_run_in_order_on_each_engine(mec):
    """block=False calls go to a busy engine ahead of its answers (up to
    engines.AHEAD at a time): each engine still runs them one by one, in order."""
    mec.execute("seen = []")
    calls = [mec.execute(f"seen.append({i})", block=False) for i in range(300)]
    for call in calls:
        call.get_result(timeout=60)
    assert mec.pull("seen") == [list(range(300))] * len(mec.get_ids())


def test_a_failure_clears_the_calls_sent_ahead(mec):
    """The calls behind a failing one were sent to its engine while it ran: they fail
    as QueueCleared and do not run, and the next call runs."""
    mec.execute("ahead = []", targets=0)
    fail = mec.execute("import time; time.sleep(0.3); 1/0", targets=0, block=False)
    queued = [mec.execute(f"ahead.append({i})", targets=0, block=False) for i in range(5)]
    wait_for(lambda: "sleep" in (running_on(mec, 0) or ""), "the sleep to start")
    with pytest.raises(CompositeError):
        fail.get_result(timeout=30)
    for call in queued:
        with pytest.raises(CompositeError) as info:
            call.get_result(timeout=30)
        assert isinstance(info.value.elist[0][1], QueueCleared)
        assert "earlier command failed on engine 0: ZeroDivisionError" in str(info.value)
    assert mec.pull("ahead", targets=0) == [[]]
    mec.execute("ahead.append('next')", targets=0)
    assert mec.pull("ahead", targets=0) == [["next"]]


def test_interrupting_a_call_sent_ahead(mec):
    """A call waiting behind a running one on its engine is interrupted before it
    starts: it raises KeyboardInterrupt, the running one finishes, and the calls
    queued behind the interrupted one are cleared."""
    mec.execute("order = []", targets=1)
    running = mec.execute("import time; time.sleep(0.5); order.append('first')",
                          targets=1, block=False)
    ahead = mec.execute("order.append('ahead')", targets=1, block=False)
    behind = mec.execute("order.append('behind')", targets=1, block=False)
    wait_for(lambda: "sleep" in (running_on(mec, 1) or ""), "the sleep to start")
    mec._session.call("interrupt", request=ahead.result_id)   # (as Ctrl-C does)
    with pytest.raises(CompositeError) as info:
        ahead.get_result(timeout=30)
    assert "KeyboardInterrupt" in str(info.value)
    with pytest.raises(CompositeError):
        behind.get_result(timeout=30)
    running.get_result(timeout=30)   # (raises if it failed)
    assert mec.pull("order", targets=1) == [["first"]]


def test_queue_status_and_clear_queue(mec):
    mec.execute("cleared = []", targets=1)
    mec.block = False
    running = mec.execute("import time; time.sleep(1.0)", targets=1)
    queued = [mec.execute(f"cleared.append({i})", targets=1) for i in range(3)]
    wait_for(lambda: running_on(mec, 1), "engine 1 to start the sleep")
    status = dict(mec.queue_status(targets=1))
    assert status[1]["pending"].startswith("execute(")
    assert len(status[1]["queue"]) == 3
    assert status[1]["queue"][0] == "execute('cleared.append(0)')"
    mec.clear_queue(targets=1)
    after = mec.execute("cleared.append('after')", targets=1)   # (runs: sent afterwards)
    for p in queued:
        with pytest.raises(CompositeError) as info:
            p.r
        assert isinstance(info.value.elist[0][1], QueueCleared)
    assert running.r[0]["number"] >= 1
    after.r   # (raises if it failed)
    assert mec.pull("cleared", targets=1, block=True) == [["after"]]   # no cleared one ran


def test_run_file(mec, tmp_path):
    script = tmp_path / "script.py"
    script.write_text("ran = id * 3\nprint('ran', ran)\n")
    result = mec.run(str(script), targets=[0, 1])
    assert result[1]["stdout"] == "ran 3\n"
    bad = tmp_path / "bad.py"
    bad.write_text("def (:\n")
    with pytest.raises(SyntaxError):       # compiled locally first
        mec.run(str(bad))


def test_properties(mec):
    mec.set_properties(dict(kind="gpu"), targets=0)
    assert mec.get_properties(targets=0) == [{"kind": "gpu"}]
    assert mec.has_properties(["kind"], targets=[0, 1]) == [[True], [False]]
    mec.del_properties(["kind"], targets=0)
    assert mec.get_properties(targets=0) == [{}]
    mec.set_properties(dict(a=1))
    mec.clear_properties()
    assert mec.get_properties() == [{}] * ENGINES


def test_benchmark_method(mec):
    figures = mec.benchmark(push_size=1000)
    assert figures["single_engine_latency_ms"] > 0 and figures["all_engine_push_MBps"] > 0


def test_status(mec):
    status = mec.status()
    assert [e["id"] for e in status["engine_status"]] == list(range(ENGINES))
    assert status["uptime"] > 0


def test_launch_directory_on_path(mec):
    import os
    paths = mec.execute("import sys, os; cwd_on_path = os.getcwd() in sys.path", targets=0)
    assert paths and mec.pull("cwd_on_path", targets=0) == [True]
    assert os.getcwd()


def test_seed_client_module_exports():
    for name in ("MultiEngineClient", "CompositeError", "PendingResult", "ResultList"):
        assert hasattr(client, name), name


def test_with_remote_block(mec):
    from pympec.client import remote
    with mec:
        remote()
        block_value = id * 11
    assert "block_value" not in locals()     # the block did not run here
    assert mec.pull("block_value") == [11 * i for i in range(ENGINES)]
    assert isinstance(mec._with_context_result, ResultList)
    assert mec.get_ids() == list(range(ENGINES))   # still connected


def test_execute_streams_output_while_running(mec, tmp_path):
    """Each engine prints a tick, then waits (30 s at most) until the client has seen it: it
    can only print "seen" if its output streamed while the code still ran."""
    code = (
        "import os, time\n"
        "print('tick', flush=True)\n"
        "flag = os.path.join(flags, f'seen{id}')\n"
        "deadline = time.monotonic() + 30\n"
        "while not os.path.exists(flag) and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
        "print('seen' if os.path.exists(flag) else 'not seen', flush=True)\n")
    seen = []

    def stream(engine, name, text):
        seen.append((engine, name, text))
        if name == "stdout" and "tick" in text:
            (tmp_path / f"seen{engine}").touch()
    mec.push({"flags": str(tmp_path)}, targets=[0, 1])
    result = mec.execute(code, targets=[0, 1], stream=stream)
    assert [r["stdout"] for r in result] == ["tick\nseen\n"] * 2
    assert "".join(x[2] for x in seen if x[0] == 0) == result[0]["stdout"]


def test_execute_stream_prints_labelled_lines(mec, capsys):
    mec.execute("print('hello'); print('world')", targets=1, stream=True)
    out = capsys.readouterr().out
    assert "[stdout:1] hello\n[stdout:1] world\n" in out


def test_reused_buffers_never_alias_live_arrays(mec):
    """Large buffers are reused once free (pympec.protocol.buffers): pushing and gathering again
    and again must leave every array still held, on engines and client, as it was."""
    n = 3 << 20   # 24 MB of float64: pooled, and streamed
    kept = np.full(n, 1.0)
    mec.push({"a": kept}, targets=0)
    for value in (2.0, 3.0, 4.0):   # b's old buffers fall free and are reused
        mec.push({"b": np.full(n, value)}, targets=0)
    mec.execute("s = (float(a.sum()), float(b.sum()))", targets=0)
    assert mec.pull("s", targets=0) == [(float(n), 4.0 * n)]
    mec.scatter("g", np.arange(2 * n, dtype=np.float64))
    first = mec.gather("g")
    mec.execute("g += 1.0")
    second = mec.gather("g")
    mec.execute("g += 1.0")
    third = mec.gather("g")
    expected = np.arange(2 * n, dtype=np.float64)
    assert np.array_equal(first, expected) and np.array_equal(second, expected + 1)
    assert np.array_equal(third, expected + 2)


def test_streamed_output_is_not_repeated_in_the_display(mec, capsys):
    result = mec.execute("import sys; print('out'); print('err', file=sys.stderr)",
                         targets=[0, 1], stream=True)
    n = result[0]["number"]
    assert repr(result).startswith("<Results List>\n[0] In [")
    assert "Out[" not in repr(result) and "Err[" not in repr(result)
    assert [r["stdout"] for r in result] == ["out\n"] * 2     # the records keep it
    assert result.shown[(0, "stdout")] == 4 and result.shown[(1, "stderr")] == 4
    assert f"[0] In [{n}]" in repr(result)
    assert "out\n</pre>" not in result._repr_html_()


def test_furl_or_file_keyword(cluster):
    path = str(cluster.connection_file)
    with client.MultiEngineClient(furl_or_file=path) as mec:
        assert mec.get_ids() == list(range(ENGINES))
    with client.TaskClient(furl_or_file=path) as tc:
        assert tc.queue_status()["pending"] == 0
    with pytest.raises(TypeError, match="not both"):
        client.MultiEngineClient(path, furl_or_file=path)
    with pytest.raises(ValueError, match="FURLs were IPython 0.10's"):
        client.TaskClient(furl_or_file="pb://abc@127.0.0.1:1/xyz")


def test_push_and_pull_serialized(mec):
    from pympec.client.serialized import Serialized, serialize, unserialize
    array, pair = serialize(np.arange(6.0).reshape(2, 3)), serialize({"k": [1, 2]})
    assert array.meta["kind"] == "array" and array.nbytes == 48
    mec.push_serialized({"a": array}, targets=0)
    mec.push_serialized({"a": array, "p": pair}, targets=[1, 2])   # the same bytes again
    assert all(np.array_equal(a, np.arange(6.0).reshape(2, 3))
               for a in mec.pull("a", targets=[0, 1, 2]))
    assert mec.pull("p", targets=2) == [{"k": [1, 2]}]
    pulled = mec.pull_serialized("a", targets=[0, 1])
    assert all(isinstance(s, Serialized) for s in pulled)
    assert np.array_equal(unserialize(pulled[1]), np.arange(6.0).reshape(2, 3))
    both = mec.pull_serialized(("a", "p"), targets=2, block=False).r
    assert unserialize(both[0][1]) == {"k": [1, 2]}
    mec.push_serialized({"q": both[0][1]}, targets=3)    # pulled bytes go back out as they are
    assert mec.pull("q", targets=3) == [{"k": [1, 2]}]
    with pytest.raises(TypeError):
        mec.push_serialized({"x": 1})
    with pytest.raises(TypeError):
        unserialize(b"bytes")


def test_composite_error_collapses_identical_tracebacks(mec):
    with pytest.raises(CompositeError) as info:
        mec.execute("x = [1][id - 1]")       # IndexError on engines 2 and 3
    e = info.value
    assert str(e).splitlines()[1:] == [     # str(e): a line per engine, as in 0.10
        "[2:execute]: IndexError: list index out of range",
        "[3:execute]: IndexError: list index out of range"]
    assert [ids for ids, *_ in e.groups()] == [[2, 3]]
    with pytest.raises(CompositeError) as info:
        mec.execute("1/0 if id else undefined_name")
    lines = info.value._render_traceback_()
    assert lines[0] == "CompositeError: one or more exceptions from call to method: execute"
    assert "engine 0: NameError: name 'undefined_name' is not defined" in lines
    assert "engines 1-3: ZeroDivisionError: division by zero" in lines
    assert lines.count("Traceback (most recent call last):") == 2
    assert lines[-1] == "(identical tracebacks are shown once; print_tracebacks() prints all 4)"
    import io
    full = io.StringIO()
    info.value.print_tracebacks(file=full)
    assert full.getvalue().count("Traceback (most recent call last):") == ENGINES
