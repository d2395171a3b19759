"""The clients as coroutines, for asyncio and Jupyter: today's form of IPython 0.10's
``IPython.kernel.asyncclient``, whose methods returned Twisted Deferreds.

    from pympec import asyncclient
    mec = asyncclient.AsyncMultiEngineClient()      # or: await get_multiengine_client()
    await mec.execute("a = id * 2")
    a0, a1 = await asyncio.gather(mec.pull("a", targets=0), mec.pull("a", targets=1))

    tc = asyncclient.AsyncTaskClient()
    squares = await tc.map(lambda x: x * x, range(10))

What it is, exactly: a thin layer over the blocking clients, used from the event loop's
thread (Jupyter's running loop included; it starts no thread and no loop of its own).

* An :class:`AsyncMultiEngineClient` call is sent at once, as with ``block=False``, and
  its result awaited: the loop sleeps until the connection has bytes to read (at most
  ``POLL`` seconds, then it looks anyway), and reads them without blocking.  So any
  number of calls can be in flight, and other coroutines run meanwhile.
* Sending blocks the loop until the request is written: nothing for small requests,
  as long as the bytes take for a push of large arrays.  Connecting blocks up to the
  client's ``timeout``.  ``get_ids``, ``queue_status``, ``status`` and ``clear_queue``
  are answered by the controller alone, at once, and are waited for in place.
* An :class:`AsyncTaskClient` submits at once and, to await results, asks the
  controller for finished tasks after sleeps that grow from 5 ms to ``POLL``.
* Bound a wait with ``asyncio.wait_for(call, seconds)``; cancelling an await leaves the
  call running on the engines (as a PendingResult that nobody fetches).
"""
from __future__ import annotations

import asyncio
import inspect
import os
import time
from typing import Any, Callable, Sequence

from ..errors import CompositeError
from .multiengine import MultiEngineClient
from .results import PendingResult
from .taskclient import TaskClient
from .tasks import BaseTask, MapTask, StringTask

POLL = 0.25        # seconds: the longest sleep between two looks at the connection

__all__ = ["AsyncMultiEngineClient", "AsyncTaskClient", "get_multiengine_client",
           "get_task_client", "MapTask", "StringTask", "CompositeError", "POLL"]

# MultiEngineClient methods that take ``block``: awaited as the engines answer
_ENGINE_CALLS = ("execute", "run", "push", "push_function", "push_serialized", "pull",
                 "pull_function", "pull_serialized", "zip_pull", "scatter", "gather",
                 "raw_map", "get_result", "reset", "keys", "kill", "set_properties",
                 "get_properties", "has_properties", "del_properties", "clear_properties")
# ... and those the controller answers alone, at once
_CONTROLLER_CALLS = ("get_ids", "queue_status", "status", "clear_queue")


class AsyncMultiEngineClient:
    """A MultiEngineClient whose calls are coroutines (see the module doc): ``await
    mec.execute(code)`` gives what ``execute(code, block=True)`` returns, or raises what
    it raises.  The calls take the blocking client's arguments, except ``block``.

    ``blocking`` is the MultiEngineClient underneath, on the same connection (inside
    IPython, the magics may use it).  Creating one connects, blocking at most
    ``timeout`` seconds; the arguments are MultiEngineClient's.
    """

    def __init__(self, where: str | os.PathLike | None = None, *, timeout: float = 10.0,
                 sshserver: str | None = None,
                 furl_or_file: str | os.PathLike | None = None) -> None:
        self.blocking = MultiEngineClient(where, timeout=timeout, sshserver=sshserver,
                                          furl_or_file=furl_or_file)
        self._waker: asyncio.Future | None = None    # done when the socket is readable
        self._waker_fd = -1

    @property
    def targets(self) -> Any:
        """The default targets, as on the blocking client."""
        return self.blocking.targets

    @targets.setter
    def targets(self, value: Any) -> None:
        self.blocking.targets = value

    async def map(self, func: Callable | str, *sequences: Sequence) -> list:
        """``MultiEngineClient.map``: block partitioned over all engines, in order."""
        return await self.result(self.blocking.raw_map(func, sequences, "b", "all", False))

    async def result(self, value: Any) -> Any:
        """What a call made with ``block=False`` gives: a PendingResult's result, awaited
        (its exception raised); any other value as it is."""
        if not isinstance(value, PendingResult):
            return value
        while not value.ready():     # reads what has arrived, never blocks
            await self._readable()
        return value.get_result()

    async def _readable(self) -> None:
        """Sleep until the connection has bytes to read, ``POLL`` seconds at the most.
        Every waiting call shares one reader on the socket."""
        loop = asyncio.get_running_loop()
        sock = self.blocking._session.sock
        if sock is None:          # broken: the next look reconnects
            return
        waker = self._waker
        if waker is None or waker.done() or waker.get_loop() is not loop \
                or self._waker_fd != sock.fileno():
            self._stop_reader()
            waker = loop.create_future()
            try:
                loop.add_reader(sock.fileno(), self._wake, waker)
            except NotImplementedError:   # a loop without readers (Windows' proactor)
                await asyncio.sleep(0.005)
                return
            self._waker, self._waker_fd = waker, sock.fileno()
        await asyncio.wait([waker], timeout=POLL)

    def _wake(self, waker: asyncio.Future) -> None:
        self._stop_reader()
        if not waker.done():
            waker.set_result(None)

    def _stop_reader(self) -> None:
        waker, self._waker = self._waker, None
        if waker is not None and not waker.get_loop().is_closed():
            waker.get_loop().remove_reader(self._waker_fd)

    def close(self) -> None:
        """Close the connection (calls still running keep their results on the controller)."""
        self._stop_reader()
        self.blocking.close()

    async def __aenter__(self) -> "AsyncMultiEngineClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


def _engine_call(name: str) -> Callable:
    blocking = getattr(MultiEngineClient, name)

    async def call(self: AsyncMultiEngineClient, *args: Any, **kwargs: Any) -> Any:
        return await self.result(getattr(self.blocking, name)(*args, block=False, **kwargs))
    return _like(call, blocking, "sent at once, its result awaited")


def _controller_call(name: str) -> Callable:
    blocking = getattr(MultiEngineClient, name)

    async def call(self: AsyncMultiEngineClient, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.blocking, name)(*args, **kwargs)
    return _like(call, blocking, "answered by the controller at once, waited for in place")


def _like(call: Callable, blocking: Callable, how: str) -> Callable:
    """``call`` named, documented and signed as ``blocking``, without its ``block``."""
    signature = inspect.signature(blocking)
    call.__name__ = call.__qualname__ = blocking.__name__
    call.__signature__ = signature.replace(parameters=[
        p for p in signature.parameters.values() if p.name != "block"])
    call.__doc__ = f"``MultiEngineClient.{blocking.__name__}``, awaited: {how}."
    return call


for _name in _ENGINE_CALLS:
    setattr(AsyncMultiEngineClient, _name, _engine_call(_name))
for _name in _CONTROLLER_CALLS:
    setattr(AsyncMultiEngineClient, _name, _controller_call(_name))


class AsyncTaskClient:
    """A TaskClient whose calls are coroutines (see the module doc).  ``blocking`` is
    the TaskClient underneath; the arguments are TaskClient's."""

    def __init__(self, where: str | os.PathLike | None = None, *, timeout: float = 10.0,
                 sshserver: str | None = None, task_timeout: float = 30.0,
                 furl_or_file: str | os.PathLike | None = None) -> None:
        self.blocking = TaskClient(where, timeout=timeout, sshserver=sshserver,
                                   task_timeout=task_timeout, furl_or_file=furl_or_file)

    async def run(self, task: BaseTask, block: bool = False) -> Any:
        """Submit ``task``: its id, or with ``block=True`` its result, awaited."""
        tid = self.blocking.run(task)
        return await self.get_task_result(tid, block=True) if block else tid

    async def get_task_result(self, taskid: int, block: bool = False) -> Any:
        """``TaskClient.get_task_result``; with ``block=True`` the finished task is
        awaited.  A MapTask's failure raises; a StringTask gives a TaskResult."""
        if block:
            await self.barrier(taskid)
        return self.blocking.get_task_result(taskid)

    async def barrier(self, taskids: int | Sequence[int], timeout: float | None = None) -> None:
        """Await every listed task's end, successful or not.  Raises IndexError for an
        unknown id, TimeoutError after ``timeout`` seconds (if given)."""
        ids = [taskids] if isinstance(taskids, int) else list(taskids)
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        for tid in ids:   # each look brings every finished task of this client here
            while self.blocking.get_task_info(tid) is None:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"task {tid} not finished in {timeout:g} s")
                await asyncio.sleep(delay)
                delay = min(2 * delay, POLL)

    async def map(self, func: Callable, *sequences: Sequence) -> list:
        """Load-balanced ``map``, one task per element: the results, in order (the
        first failure raises)."""
        ids = self.blocking.mapper(block=False, chunksize=1).map(func, *sequences)
        await self.barrier(ids)
        return [self.blocking.get_task_result(t) for t in ids]

    async def abort(self, taskid: int) -> None:
        """``TaskClient.abort`` (one round trip to the controller)."""
        self.blocking.abort(taskid)

    async def queue_status(self, verbose: bool = False) -> dict:
        """``TaskClient.queue_status`` (one round trip to the controller)."""
        return self.blocking.queue_status(verbose)

    async def clear(self, taskids: int | Sequence[int] | None = None) -> int:
        """``TaskClient.clear`` (one round trip to the controller)."""
        return self.blocking.clear(taskids)

    def close(self) -> None:
        """Close the connection (unfetched results stay on the controller)."""
        self.blocking.close()

    async def __aenter__(self) -> "AsyncTaskClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


async def get_multiengine_client(furl_or_file: str | os.PathLike = "",
                                 **options: Any) -> AsyncMultiEngineClient:
    """IPython 0.10's spelling: an AsyncMultiEngineClient (``''``: the default profile)."""
    return AsyncMultiEngineClient(furl_or_file=furl_or_file, **options)


async def get_task_client(furl_or_file: str | os.PathLike = "",
                          **options: Any) -> AsyncTaskClient:
    """IPython 0.10's spelling: an AsyncTaskClient (``''``: the default profile)."""
    return AsyncTaskClient(furl_or_file=furl_or_file, **options)
