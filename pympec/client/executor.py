"""A ``concurrent.futures.Executor`` on the task farm: ``tc.executor()``.

    with tc.executor() as ex:               # like ProcessPoolExecutor / MPIPoolExecutor
        f = ex.submit(pow, 2, 10)           # a Future
        list(ex.map(f, range(1000), chunksize=50, timeout=60))

    caller threads                     executor thread (owns its own TaskClient)
    submit() -> Future, queued   --->  takes queued futures (set_running_or_notify_cancel),
                                       at most ``max_outstanding`` in flight; submits
                                       them in one message; fetches finished results
                                       (waiting up to 50 ms on the controller);
    Future resolves              <---  set_result / set_exception

A future can be cancelled while it is queued here (not yet sent).  If the cluster dies,
every unfinished future fails with the ClusterError.
"""
from __future__ import annotations

import collections
import concurrent.futures
import itertools
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from .checks import check_count
from .tasks import BaseTask, ChunkTask, MapTask

if TYPE_CHECKING:   # (taskclient makes executors: a run-time import would be circular)
    from .taskclient import TaskClient

FETCH_WAIT = 0.05


class TaskExecutor(concurrent.futures.Executor):
    """Run calls as load-balanced tasks through ``client``, a TaskClient of its own that
    its thread uses (``TaskClient.executor()`` makes both)."""

    def __init__(self, client: TaskClient, *, max_outstanding: int = 1000) -> None:
        check_count(max_outstanding, "max_outstanding")
        self._client = client
        self._max = max_outstanding
        self._queued: collections.deque = collections.deque()
        self._running: dict[int, concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._shutdown = False
        self._thread = threading.Thread(target=self._loop, name="pympec-executor",
                                        daemon=True)
        self._thread.start()

    # -- the Executor API -------------------------------------------------------------

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Queue ``fn(*args, **kwargs)``; returns its Future.  RuntimeError after
        shutdown."""
        return self._submit(MapTask(fn, args, kwargs))

    def _submit(self, task: BaseTask) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queued.append((future, task))
        self._wake.set()
        return future

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int | None = None) -> Iterator:
        """Like ``Executor.map``: results in order; ``chunksize`` calls per task, picked
        as ``tc.map`` does when None (about four tasks per engine), 1 for one task per
        item; TimeoutError if a result is not there ``timeout`` seconds after this call."""
        if chunksize is not None:
            check_count(chunksize, "chunksize")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        source = zip(*iterables)
        if chunksize is None:   # the engines as they were when this executor connected
            items = list(source)
            engines = max(1, len(self._client._session.welcome["engines"]))
            chunksize = max(1, math.ceil(len(items) / (4 * engines)))
            source = iter(items)
        futures = []
        while True:
            chunk = list(itertools.islice(source, chunksize))
            if not chunk:
                break
            futures.append(self._submit(ChunkTask(fn, chunk)))

        def results() -> Iterator:
            try:
                futures.reverse()
                while futures:
                    left = None if deadline is None else deadline - time.monotonic()
                    yield from futures.pop().result(left)
            finally:
                for f in futures:
                    f.cancel()
        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new submissions; with ``cancel_futures`` the queued ones are cancelled;
        with ``wait``, block until the rest have finished."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._queued:
                    self._queued.popleft()[0].cancel()
        self._wake.set()
        if wait:
            self._thread.join()

    # -- the executor thread ------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                self._send()
                if self._running:
                    self._receive()
                    continue
                with self._lock:
                    if self._shutdown and not self._queued:
                        return
                self._wake.wait(0.1)
                self._wake.clear()
        except BaseException as e:   # the cluster died: fail everything unfinished
            with self._lock:
                self._shutdown = True
                waiting = [f for f, _ in self._queued]
                self._queued.clear()
            for f in [*self._running.values(), *waiting]:
                if f.set_running_or_notify_cancel() if not f.running() else True:
                    f.set_exception(e)
            self._running.clear()
        finally:
            self._client.close()

    def _send(self) -> None:
        batch = []
        with self._lock:
            while self._queued and len(self._running) + len(batch) < self._max:
                future, task = self._queued.popleft()
                if future.set_running_or_notify_cancel():
                    batch.append((future, task))
        if batch:
            try:
                ids = self._client.run_many([task for _, task in batch])
            except BaseException:
                for future, _ in batch:   # let _loop fail them with the rest
                    self._running[id(future)] = future
                raise
            for tid, (future, _) in zip(ids, batch):
                self._running[tid] = future

    def _receive(self) -> None:
        client = self._client
        client._fetch(None, FETCH_WAIT)
        # (the fetched results, not every task in flight: those are up to max_outstanding)
        for tid in [t for t in client._results if t in self._running]:
            future = self._running.pop(tid)
            outcome = client._results.pop(tid)
            client._mine.discard(tid)
            if outcome.error is not None:
                future.set_exception(outcome.error)
            else:
                future.set_result(outcome.value)
