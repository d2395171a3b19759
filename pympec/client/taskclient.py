"""TaskClient: a load-balanced task farm over the engines (IPython 0.10's API).

    tc = client.TaskClient()
    tid = tc.run(client.MapTask(f, args=(10,)))     # an int id, from 0 per controller
    tc.barrier(tid); tc.get_task_result(tid)         # f(10)

The data flow::

    client                                   controller (pympec.controller.tasks)
    MapTask / StringTask -> JSON spec + pickled frames
    run / map: many tasks, one message  -->  task_submit: ids, queued, load balanced
    get_task_result / barrier / imap:   -->  task_fetch: every finished result of this
      results cached here, by id        <--    client (or the ids asked), many per message

Task functions, arguments and ``depend`` travel pickled (cloudpickle, so lambdas and
closures work) and are unpickled only on the engines.  A result is held by the controller
until this client fetches it (then it is cached here) or until ``clear``.

Failures: a MapTask's result raises the remote exception; a StringTask's result is a
:class:`TaskResult` whose ``failure`` holds it.  If the cluster dies (with MPICH's hydra,
a task that kills its engine process ends the whole MPI job), every call raises
ClusterError naming the lost controller: the farm fails fast.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..errors import ClusterError, TaskAborted
from .checks import (check_block, check_count, check_flag, check_function, check_seconds,
                     check_optional, check_sequences, check_task_id, check_task_ids)
from .session import Session
from .executor import TaskExecutor
from .multiengine import connection_argument
from .tasks import BaseTask, ChunkTask, MapTask, Outcome

SUBMIT_BATCH = 10000          # tasks per submit message, at most
LEASE_MIN, LEASE_MAX = 64, 1 << 16   # task ids reserved per round trip: doubling


# -- the client ----------------------------------------------------------------------

class TaskClient:
    """A load-balanced task farm on a pympec cluster.

    ``where`` (or IPython 0.10's keyword ``furl_or_file``) is a connection file path, a
    profile name, or None for the default profile.  ``task_timeout`` (seconds, default
    30 as in IPython 0.10) is how long a task may wait once every engine has rejected it
    by ``depend`` before it fails with TaskTimeout.  Raises FileNotFoundError when there
    is no connection file and ClusterError when the controller does not answer.
    """

    def __init__(self, where: str | os.PathLike | None = None, *, timeout: float = 10.0,
                 sshserver: str | None = None, task_timeout: float = 30.0,
                 furl_or_file: str | os.PathLike | None = None) -> None:
        self._session = Session(connection_argument(where, furl_or_file), timeout=timeout,
                                sshserver=sshserver)
        self.task_timeout = task_timeout
        self._results: dict[int, Outcome] = {}
        self._mine: set[int] = set()
        self._ids = range(0)                 # task ids leased, not used yet
        self._lease = LEASE_MIN
        self._pending: list[tuple[int, dict, list]] = []   # (id, spec, frames), not sent
        self._submits: dict[str, list[int]] = {}          # submit request id -> task ids
        self._session.batchers.append(self._submit_pending)

    @property
    def task_timeout(self) -> float:
        """Seconds a task every engine rejected by ``depend`` waits before TaskTimeout."""
        return self._task_timeout

    @task_timeout.setter
    def task_timeout(self, value: float) -> None:
        self._task_timeout = check_seconds(value, "task_timeout")

    # -- submitting ---------------------------------------------------------------------

    def run(self, task: BaseTask, block: bool = False) -> Any:
        """Submit ``task``; returns its int id at once, or with ``block=True`` its
        result (see :meth:`get_task_result`).

        It does not wait for the controller: ids are reserved ahead (a round trip per
        few thousand tasks), and tasks submitted in a burst go in one message, within
        about a millisecond or before any blocking call.  An error the controller finds
        with a submission (MemoryError past the result cap) becomes its tasks' results.
        """
        if not isinstance(task, BaseTask):
            raise TypeError(f"run needs a MapTask or StringTask, not {type(task).__name__}")
        check_block(block)
        tid = self._add(task, {})
        if block:
            return self.get_task_result(tid, block=True)
        self._session.later()
        return tid

    def run_many(self, tasks: Sequence[BaseTask]) -> list[int]:
        """Submit several tasks in as few messages as possible; returns their ids once
        the submissions are written (a function sent with many tasks is pickled once)."""
        tasks = list(tasks)
        for task in tasks:
            if not isinstance(task, BaseTask):
                raise TypeError(f"not a task: {task!r}")
        cache: dict = {}
        ids = [self._add(task, cache) for task in tasks]
        self._session.write_out()
        return ids

    def _add(self, task: BaseTask, cache: dict) -> int:
        """Number ``task`` and put it with the submissions to send."""
        spec, frames = task.encode(cache, self.task_timeout)
        with self._session.lock:
            if not self._ids:
                first, count = self._call_value({"verb": "task_lease", "count": self._lease})
                self._ids, self._lease = range(first, first + count), min(2 * self._lease,
                                                                          LEASE_MAX)
            tid, self._ids = self._ids[0], self._ids[1:]
            self._pending.append((tid, spec, frames))
            if len(self._pending) >= SUBMIT_BATCH:
                self._submit_pending()
        self._mine.add(tid)
        return tid

    def _submit_pending(self) -> None:
        """Queue the tasks not sent yet, one message per run of consecutive ids (the
        session calls it, locked, before each write)."""
        pending, self._pending = self._pending, []   # (queue() calls this again)
        try:
            while pending:
                run = 1
                while run < len(pending) and pending[run][0] == pending[0][0] + run:
                    run += 1
                batch = pending[:run]
                header = {"verb": "task_submit", "first": batch[0][0],
                          "tasks": [spec for _, spec, _ in batch]}
                self._session.queue(header, [f for _, _, frames in batch for f in frames])
                del pending[:run]
                self._submits[header["id"]] = [tid for tid, _, _ in batch]
        finally:   # what could not be queued stays, first: a failure loses no task
            self._pending[:0] = pending

    def _settle_submits(self) -> None:
        """Wait for the submissions' answers (given at once): a refused one makes its
        tasks' results the error the controller gave."""
        for request_id, ids in list(self._submits.items()):
            try:
                self._session.wait(request_id)
            except (ClusterError, TimeoutError):
                raise
            except Exception as e:   # (the controller's error, rebuilt by name)
                for tid in ids:
                    self._results[tid] = Outcome({"tid": tid, "status": "error",
                                                  "ename": type(e).__name__,
                                                  "evalue": str(e)}, [])
            del self._submits[request_id]

    def _call_value(self, header: dict, frames: list = ()) -> Any:
        """A farm request's value (answered at once; the session's liveness check
        bounds the wait)."""
        request_id = self._session.send(header, list(frames))
        return self._session.wait(request_id).header.get("value")

    # -- results ------------------------------------------------------------------------

    def _fetch(self, ids: list[int] | None = None, wait: float = 0.0) -> int:
        """Bring finished results here (``ids``, or all of this client's); with nothing
        ready, the controller waits up to ``wait`` s.  Returns how many came."""
        request_id = self._session.send({"verb": "task_fetch", "ids": ids, "wait": wait})
        message = self._session.wait(request_id)
        value = message.header["value"]
        frames, i = message.frames, 0
        if value.get("packed"):   # small results come joined in the first frame
            packed, i = frames[0], 1
        for info in value["tasks"]:
            n = info["nframes"]
            if "span" in info:
                start, length = info["span"]
                mine = [packed[start:start + length]]
            else:
                mine = frames[i:i + n]
                i += n
            self._results[info["tid"]] = Outcome(info, mine)
        infos = value["tasks"]
        return len(infos)

    def _gather(self, taskids: list[int], block: bool, timeout: float | None = None) -> None:
        """Fetch until every id in ``taskids`` is here (or once, if not ``block``)."""
        self._session.write_out()
        self._settle_submits()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            missing = [t for t in taskids if t not in self._results]
            if not missing:
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"{len(missing)} tasks not finished in {timeout:g} s "
                                   f"(first: {missing[0]})")
            wait = 0.0 if not block else min(1.0, left if left is not None else 1.0)
            others = [t for t in missing if t not in self._mine]
            if others:
                self._fetch(others, wait=0.0 if len(others) < len(missing) else wait)
            if len(others) < len(missing):
                self._fetch(None, wait)
            if not block:
                return

    def get_task_result(self, taskid: int, block: bool = False,
                        timeout: float | None = None) -> Any:
        """The task's result: None while it is unfinished (``block=True`` waits, at most
        ``timeout`` seconds if given, then raises TimeoutError; the task goes on).

        A MapTask gives its return value and raises its failure; a StringTask gives a
        TaskResult.  Unknown ids raise IndexError; ClusterError if the cluster died.
        """
        taskid = check_task_id(taskid)
        check_block(block)
        self._gather([taskid], block, timeout)
        outcome = self._results.get(taskid)
        return None if outcome is None else outcome.result()

    def get_task_info(self, taskid: int, block: bool = False) -> dict | None:
        """Timing of a finished task: epoch seconds ``submitted`` (controller),
        ``started``/``completed`` (engine), ``received`` (here), and ``engine``."""
        taskid = check_task_id(taskid)
        check_block(block)
        self._gather([taskid], block)
        outcome = self._results.get(taskid)
        return None if outcome is None else dict(outcome.timing)

    def wait_interactive(self, taskids: int | Sequence[int], *, interval: float = 0.2,
                         timeout: float | None = None, **options: Any) -> bool:
        """Wait for ``taskids`` showing a progress bar of finished tasks (tqdm when it is
        installed, else plain text); returns whether all finished within ``timeout``."""
        from .progress import wait_tasks
        return wait_tasks(self, taskids, interval=interval, timeout=timeout, **options)

    def barrier(self, taskids: int | Sequence[int], timeout: float | None = None) -> None:
        """Block until every listed task has finished, successfully or not.  Raises
        IndexError for unknown ids, TimeoutError after ``timeout`` seconds (if given)."""
        self._gather(check_task_ids(taskids), True, timeout)

    def abort(self, taskid: int) -> None:
        """Abort a task: a queued one is dropped, a running one's result is discarded;
        either way its result becomes a TaskAborted failure.  IndexError if it already
        completed or was already aborted; TypeError for a non-int id."""
        taskid = check_task_id(taskid)
        outcome = self._results.get(taskid)
        if outcome is not None:
            raise IndexError("Task Already Aborted" if isinstance(outcome.error, TaskAborted)
                             else "Task Already Completed")
        self._call_value({"verb": "task_abort", "tid": taskid})

    def spin(self) -> None:
        """Nudge the farm: one round trip that also brings finished results here."""
        self._fetch(None, 0.0)

    def queue_status(self, verbose: bool = False) -> dict:
        """``{'pending', 'failed', 'succeeded', 'scheduled'}``: counts, or lists of ids
        with ``verbose``.  pending = running on an engine, scheduled = waiting."""
        return self._session.call("task_status", verbose=check_flag(verbose, "verbose"))

    def clear(self, taskids: int | Sequence[int] | None = None) -> int:
        """Forget finished results (all, or ``taskids``), here and on the controller;
        returns how many.  KeyError for an id with no finished result."""
        if taskids is None:
            local = list(self._results)
            remote = None
        else:
            ids = check_task_ids(taskids)
            local = [t for t in ids if t in self._results]
            remote = [t for t in ids if t not in self._results]
        count = self._call_value({"verb": "task_clear", "ids": remote, "forget": local})
        for t in local:
            del self._results[t]
            self._mine.discard(t)
        return count

    def configure(self, result_cap: int | None = None) -> dict:
        """Set the controller's cap on unfetched result bytes; returns the settings."""
        check_optional(result_cap, check_count, "result_cap", 0)
        return self._session.call("task_config", result_cap=result_cap)

    # -- map ----------------------------------------------------------------------------

    def map(self, func: Callable, *sequences: Sequence, chunksize: int | None = None) -> list:
        """Load-balanced ``map``: results in input order; a failure raises.
        ``chunksize`` calls go in one task (picked automatically when None)."""
        return self.mapper(chunksize=chunksize).map(func, *sequences)

    def mapper(self, clear_before: bool = False, clear_after: bool = False, retries: int = 0,
               recovery_task: BaseTask | None = None,
               depend: Callable[[dict], bool] | None = None, block: bool = True,
               chunksize: int | None = None) -> "TaskMapper":
        """A mapper whose ``map`` makes tasks with these options; with ``block=False``
        its ``map`` returns the task ids.  Bad options raise here, not at ``map``."""
        BaseTask(clear_before, clear_after, retries, recovery_task, depend)   # checks them
        return TaskMapper(self, dict(clear_before=clear_before, clear_after=clear_after,
                                     retries=retries, recovery_task=recovery_task,
                                     depend=depend), block, chunksize)

    def parallel(self, clear_before: bool = False, clear_after: bool = False,
                 retries: int = 0, recovery_task: BaseTask | None = None,
                 depend: Callable[[dict], bool] | None = None, block: bool = True,
                 chunksize: int | None = None) -> Callable:
        """Decorator: ``@tc.parallel()`` makes ``f`` into ``pf(*seqs)``, a load-balanced map."""
        mapper = self.mapper(clear_before, clear_after, retries, recovery_task, depend,
                             block, chunksize)

        def decorate(func: Callable) -> Callable:
            def parallel_function(*sequences: Sequence) -> Any:
                return mapper.map(func, *sequences)
            parallel_function.__name__ = getattr(func, "__name__", "parallel_function")
            parallel_function.__doc__ = getattr(func, "__doc__", None)
            return parallel_function
        return decorate

    def imap(self, func: Callable, *iterables: Iterable, chunksize: int = 1,
             max_outstanding: int = 1000) -> Iterator:
        """Lazy load-balanced map over iterables of any length: results in order, with
        at most ``max_outstanding`` tasks submitted and not yet yielded."""
        check_function(func, "imap")
        check_count(chunksize, "chunksize")
        check_count(max_outstanding, "max_outstanding")
        if not iterables:
            raise TypeError("imap needs at least one iterable")
        try:
            source = zip(*iterables)
        except TypeError:
            kinds = ", ".join(type(i).__name__ for i in iterables)
            raise TypeError(f"imap needs iterables, not {kinds}") from None
        return self._imap(func, source, chunksize, max_outstanding)

    def _imap(self, func: Callable, source: Iterator, chunksize: int,
              max_outstanding: int) -> Iterator:
        window: list[int] = []
        exhausted = False
        while True:
            if not exhausted and len(window) < max_outstanding:
                tasks = []
                while len(window) + len(tasks) < max_outstanding:
                    chunk = [args for _, args in zip(range(chunksize), source)]
                    if not chunk:
                        exhausted = True
                        break
                    tasks.append(MapTask(func, chunk[0]) if chunksize == 1
                                 else ChunkTask(func, chunk))
                if tasks:
                    window.extend(self.run_many(tasks))
            if not window:
                return
            tid = window.pop(0)
            self._gather([tid], True)
            outcome = self._results.pop(tid)
            self._mine.discard(tid)
            value = outcome.result()
            if chunksize == 1:
                yield value
            else:
                yield from value

    def executor(self, max_outstanding: int = 1000) -> "Any":
        """A ``concurrent.futures.Executor`` on this cluster (its own connection and
        thread); see :class:`pympec.client.executor.TaskExecutor`."""
        check_count(max_outstanding, "max_outstanding")
        return TaskExecutor(TaskClient(self._session.path, task_timeout=self.task_timeout),
                            max_outstanding=max_outstanding)

    # -- the connection -----------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (unfetched results stay on the controller)."""
        self._session.close()

    def __enter__(self) -> "TaskClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class TaskMapper:
    """``map`` bound to a TaskClient and task options."""

    def __init__(self, client: TaskClient, options: dict, block: bool = True,
                 chunksize: int | None = None) -> None:
        check_block(block)
        check_optional(chunksize, check_count, "chunksize")
        self.client, self.options, self.block, self.chunksize = client, options, block, chunksize

    def map(self, func: Callable, *sequences: Sequence) -> Any:
        """One task per element (or per chunk); blocking: the results in order."""
        check_function(func, "map")
        check_sequences(sequences, "map")
        items = list(zip(*sequences))
        size = self.chunksize
        if size is None:
            engines = max(1, len(self.client._session.call("get_ids")))
            size = max(1, math.ceil(len(items) / (4 * engines))) if self.block else 1
        if size == 1:
            tasks = [MapTask(func, args, **self.options) for args in items]
        else:
            tasks = [ChunkTask(func, items[i:i + size], **self.options)
                     for i in range(0, len(items), size)]
        ids = self.client.run_many(tasks)
        if not self.block:
            return ids
        self.client.barrier(ids)
        results = [self.client.get_task_result(t) for t in ids]
        return results if size == 1 else [x for chunk in results for x in chunk]
