"""pympec.asyncclient against the real cluster: calls are coroutines, many in flight at
once on one connection, and the event loop keeps running while they wait."""
from __future__ import annotations

import asyncio
import sys

import cloudpickle
import numpy as np
import pytest

from pympec import client
from pympec.client.asyncclient import AsyncMultiEngineClient, AsyncTaskClient

from conftest import ENGINES

pytestmark = pytest.mark.timeout(120)
cloudpickle.register_pickle_by_value(sys.modules[__name__])   # engines can't import it

WAIT_FOR_FLAGS = ("import os, time\n"
                  "deadline = time.monotonic() + 30\n"
                  "while not all(map(os.path.exists, flags)) and time.monotonic() < deadline:\n"
                  "    time.sleep(0.01)\n"
                  "seen = all(map(os.path.exists, flags))\n")


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def inc(x):
    return x + 1


def test_seed_spelling():
    from pympec import asyncclient
    assert asyncclient.AsyncMultiEngineClient is AsyncMultiEngineClient
    assert asyncclient.MapTask is client.MapTask and asyncclient.CompositeError is \
        client.CompositeError


def test_calls_are_in_flight_together_and_the_loop_runs(cluster, tmp_path):
    """Engine 0 waits for two flags: one that engine 1 creates, so the second call must be
    sent while the first is awaited, and one that a coroutine here creates, so the event
    loop must run meanwhile."""
    async def main():
        async with AsyncMultiEngineClient(str(cluster.connection_file)) as mec:
            await mec.reset()
            await mec.push({"flags": [str(tmp_path / "remote"), str(tmp_path / "local")]})

            async def touch():
                await asyncio.sleep(0.01)
                (tmp_path / "local").touch()
            await asyncio.gather(mec.execute(WAIT_FOR_FLAGS, targets=0),
                                 mec.execute("open(flags[0], 'w').close()", targets=1),
                                 touch())
            assert await mec.pull("seen", targets=0) == [True]
            return await mec.get_ids()
    assert run(main()) == list(range(ENGINES))


def test_results_errors_and_arrays(cluster):
    async def main():
        mec = AsyncMultiEngineClient(furl_or_file=str(cluster.connection_file))
        try:
            records = await mec.execute("a = id * 2; print(a)", stream=True)
            assert [r["stdout"] for r in records] == [f"{2 * i}\n" for i in range(ENGINES)]
            assert await mec.pull("a") == [0, 2, 4, 6]
            await mec.scatter("x", np.arange(8.0))
            assert np.array_equal(await mec.gather("x"), np.arange(8.0))
            assert await mec.map(inc, range(6)) == [1, 2, 3, 4, 5, 6]
            assert await mec.zip_pull(("a", "id"), targets=[0, 1]) == [(0, 2), (0, 1)]
            with pytest.raises(client.CompositeError) as info:
                await mec.execute("1/0", targets=[1, 2])
            assert [ids for ids, *_ in info.value.groups()] == [[1, 2]]
            with pytest.raises(asyncio.TimeoutError):   # a bound on one await
                await asyncio.wait_for(mec.execute("import time; time.sleep(0.5)"), 0.05)
            assert (await mec.queue_status(targets=0))[0][0] == 0
            assert await mec.execute("b = 1", targets=3)   # served after the sleep
        finally:
            mec.close()
    run(main())


def test_async_task_client(cluster, tmp_path):
    async def main():
        async with AsyncTaskClient(str(cluster.connection_file)) as tc:
            assert await tc.map(inc, range(10)) == list(range(1, 11))
            result = await tc.run(client.StringTask("y = 6 * 7", pull="y"), block=True)
            assert result.ns.y == 42
            with pytest.raises(ZeroDivisionError):
                await tc.run(client.MapTask(lambda: 1 / 0), block=True)
            tid = await tc.run(client.StringTask(WAIT_FOR_FLAGS, push={
                "flags": [str(tmp_path / "flag")]}, pull="seen"))
            with pytest.raises(TimeoutError):
                await tc.barrier(tid, timeout=0.05)
            (tmp_path / "flag").touch()
            assert (await tc.get_task_result(tid, block=True)).ns.seen is True
            assert (await tc.queue_status())["scheduled"] == 0
    run(main())


def test_get_clients_by_the_default_profile(default_profile):
    from pympec import asyncclient

    async def main():
        mec = await asyncclient.get_multiengine_client()
        tc = await asyncclient.get_task_client("")
        try:
            return await mec.get_ids(), await tc.map(inc, [1])
        finally:
            mec.close()
            tc.close()
    assert run(main()) == (list(range(ENGINES)), [2])
