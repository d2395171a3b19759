"""TaskClient: a load-balanced task farm over the engines (IPython 0.10's API).

    tc = client.TaskClient()
    tid = tc.run(client.MapTask(f, args=(10,)))     # an int id, from 0 per controller
    tc.barrier(tid); tc.get_task_result(tid)         # f(10)

The data flow::

    client                                   controller (pympec.taskqueue)
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
import pickle
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import cloudpickle

from . import serialize
from .errors import (CONTROLLER_ERRORS, ClusterError, RemoteError, TaskAborted,  # noqa: F401
                     TaskRejectError, TaskTimeout)
from .session import Session

SUBMIT_BATCH = 10000          # tasks per submit message
_SIMPLE = frozenset({int, float, str, bytes, bool, type(None), complex})


# -- tasks ---------------------------------------------------------------------------

class BaseTask:
    """Options common to all tasks.

    ``clear_before``/``clear_after`` reset the engine namespace before/after the task
    (engine properties are kept); ``retries`` resubmits a failed task (to another
    engine when one is free); ``recovery_task`` runs, under the same id, when all
    retries failed; ``depend(properties) -> bool`` says whether an engine may run it.
    """

    kind = "base"

    def __init__(self, clear_before: bool = False, clear_after: bool = False,
                 retries: int = 0, recovery_task: "BaseTask | None" = None,
                 depend: Callable[[dict], bool] | None = None) -> None:
        if not isinstance(retries, int) or retries < 0:
            raise TypeError(f"retries must be an int >= 0, not {retries!r}")
        if recovery_task is not None and not isinstance(recovery_task, BaseTask):
            raise TypeError(f"recovery_task must be a task, not {type(recovery_task).__name__}")
        if depend is not None and not callable(depend):
            raise TypeError(f"depend must be a function of the properties dict, not "
                            f"{type(depend).__name__}")
        self.clear_before = bool(clear_before)
        self.clear_after = bool(clear_after)
        self.retries = retries
        self.recovery_task = recovery_task
        self.depend = depend

    def _body(self, cache: dict) -> tuple[dict, list]:
        raise NotImplementedError

    def encode(self, cache: dict | None = None, timeout: float = 30.0) -> tuple[dict, list]:
        """The JSON spec and the frames (pickles) the controller forwards to an engine."""
        cache = {} if cache is None else cache
        spec, frames = self._body(cache)
        spec.update(kind=self.kind, timeout=timeout)
        if self.clear_before:
            spec["clear_before"] = True
        if self.clear_after:
            spec["clear_after"] = True
        if self.retries:
            spec["retries"] = self.retries
        if self.depend is not None:
            spec["depend"] = True
            frames.append(_function_pickle(self.depend, cache))
        spec["n"] = len(frames)
        if self.recovery_task is not None:
            rspec, rframes = self.recovery_task.encode(cache, timeout)
            spec["recovery"] = rspec
            frames.extend(rframes)
        return spec, frames


class MapTask(BaseTask):
    """``function(*args, **kwargs)`` on some engine; its result is the return value
    (and a failure raises)."""

    kind = "map"

    def __init__(self, function: Callable, args: Sequence | None = None,
                 kwargs: dict | None = None, clear_before: bool = False,
                 clear_after: bool = False, retries: int = 0,
                 recovery_task: BaseTask | None = None,
                 depend: Callable[[dict], bool] | None = None) -> None:
        if not callable(function):
            raise TypeError(f"a MapTask needs a function, not {type(function).__name__}")
        args = () if args is None else args
        kwargs = {} if kwargs is None else kwargs
        if not isinstance(args, (list, tuple)):
            raise TypeError(f"args must be a list or tuple, not {type(args).__name__}")
        if not isinstance(kwargs, dict):
            raise TypeError(f"kwargs must be a dict, not {type(kwargs).__name__}")
        super().__init__(clear_before, clear_after, retries, recovery_task, depend)
        self.function, self.args, self.kwargs = function, tuple(args), kwargs

    def _body(self, cache: dict) -> tuple[dict, list]:
        return {}, [_function_pickle(self.function, cache), _dumps((self.args, self.kwargs))]

    def __repr__(self) -> str:
        return f"MapTask({getattr(self.function, '__name__', self.function)!s}, {self.args!r})"


class ChunkTask(BaseTask):
    """Several calls in one task: ``[function(*a) for a in chunk]`` (used by map)."""

    kind = "chunk"

    def __init__(self, function: Callable, chunk: Sequence[tuple], **options: Any) -> None:
        super().__init__(**options)
        self.function, self.chunk = function, list(chunk)

    def _body(self, cache: dict) -> tuple[dict, list]:
        return {}, [_function_pickle(self.function, cache), _dumps(self.chunk)]


class StringTask(BaseTask):
    """Run ``expression`` (code) on some engine after pushing ``push`` (a dict), then
    pull the names in ``pull``; its result is a :class:`TaskResult`."""

    kind = "string"

    def __init__(self, expression: str, pull: str | Sequence[str] | None = None,
                 push: dict | None = None, clear_before: bool = False,
                 clear_after: bool = False, retries: int = 0,
                 recovery_task: BaseTask | None = None,
                 depend: Callable[[dict], bool] | None = None) -> None:
        if not isinstance(expression, str):
            raise TypeError(f"a StringTask needs code as a str, not {type(expression).__name__}")
        pull = () if pull is None else (pull,) if isinstance(pull, str) else tuple(pull)
        if not all(isinstance(p, str) for p in pull):
            raise TypeError(f"pull must be a name or a list of names, not {pull!r}")
        push = {} if push is None else push
        if not isinstance(push, dict):
            raise TypeError(f"push must be a dict, not {type(push).__name__}")
        super().__init__(clear_before, clear_after, retries, recovery_task, depend)
        self.expression, self.pull, self.push = expression, pull, push

    def _body(self, cache: dict) -> tuple[dict, list]:
        spec = {"code": self.expression, "pull": list(self.pull)}
        if self.push:
            spec["push"] = True
            return spec, [_dumps(self.push)]
        return spec, []

    def __repr__(self) -> str:
        return f"StringTask({self.expression!r})"


def _function_pickle(func: Any, cache: dict) -> bytes:
    """cloudpickle of ``func``, once per function per message."""
    key = id(func)
    if key not in cache:
        cache[key] = (func, cloudpickle.dumps(func, protocol=serialize.PROTOCOL))
    return cache[key][1]


def _dumps(obj: Any) -> bytes:
    """Plain pickle when ``obj`` holds only simple values (fast), else cloudpickle."""
    if _simple(obj):
        return pickle.dumps(obj, protocol=serialize.PROTOCOL)
    try:
        return cloudpickle.dumps(obj, protocol=serialize.PROTOCOL)
    except Exception as e:
        raise TypeError(f"cannot send {type(obj).__name__} object: {e}") from e


def _simple(obj: Any, depth: int = 0) -> bool:
    """True for values plain pickle sends exactly as cloudpickle would (no functions or
    classes that pickle by reference): scalars, str, bytes, and shallow containers."""
    t = type(obj)
    if t in _SIMPLE:
        return True
    if depth > 2:
        return False
    if t is tuple or t is list:
        return all(type(x) in _SIMPLE or _simple(x, depth + 1) for x in obj)
    if t is dict:
        return all(type(k) is str and (type(v) in _SIMPLE or _simple(v, depth + 1))
                   for k, v in obj.items())
    return False


# -- results -------------------------------------------------------------------------

def _stamp(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(t))


class ResultNS:
    """Read-only attribute access to a TaskResult's pulled values: ``tr.ns.a``."""

    def __init__(self, results: dict) -> None:
        object.__setattr__(self, "_results", dict(results))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._results[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._results[name]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a TaskResult's ns is read-only")

    def __repr__(self) -> str:
        return f"NS{self._results!r}"


class TaskResult:
    """What a StringTask gives: ``taskid``, ``engineid``, ``failure`` (None on success),
    ``results`` (pulled name -> value), ``keys``, ``submitted``/``completed``
    (``'%Y/%m/%d %H:%M:%S'``), ``duration`` (s), and ``timing`` (all the epoch stamps)."""

    def __init__(self, taskid: int, engineid: int | None, results: dict,
                 failure: BaseException | None, timing: dict) -> None:
        self.taskid = taskid
        self.engineid = engineid
        self.failure = failure
        self.results = {} if failure is not None else dict(results)
        self.keys = list(self.results)
        self.timing = timing
        self.submitted = _stamp(timing.get("submitted"))
        self.completed = _stamp(timing.get("completed"))
        start = timing.get("started") or timing.get("submitted")
        end = timing.get("completed")
        self.duration = (end - start) if start is not None and end is not None else 0.0

    @property
    def ns(self) -> ResultNS:
        """The pulled values as attributes; re-raises the failure if the task failed."""
        self.raise_exception()
        return ResultNS(self.results)

    def __getitem__(self, name: str) -> Any:
        """``tr['a']``: a pulled value; re-raises the task's failure if it failed."""
        self.raise_exception()
        return self.results[name]

    def raise_exception(self) -> None:
        """Re-raise the task's failure here (nothing if it succeeded)."""
        if self.failure is not None:
            raise self.failure

    def __repr__(self) -> str:
        shown = self.failure if self.failure is not None else self.results
        return f"TaskResult[ID:{self.taskid}]:{shown!r}"


class _Outcome:
    """A fetched result: its value or exception, and its timing."""

    __slots__ = ("kind", "value", "error", "timing", "engine", "tid")

    def __init__(self, info: dict, frames: list) -> None:
        self.tid = info["tid"]
        self.kind = info.get("kind")
        self.engine = info.get("engine")
        self.timing = {k: info.get(k) for k in ("submitted", "started", "completed")}
        self.timing["received"] = time.time()
        self.timing["engine"] = self.engine
        self.value: Any = None
        self.error: BaseException | None = None
        if info["status"] == "ok":
            self.value = serialize.decode(info["meta"], frames) if "meta" in info else None
        else:
            self.error = _exception(info, frames)
        if self.kind == "string":
            self.value = TaskResult(self.tid, self.engine, self.value or {}, self.error,
                                    self.timing)

    def result(self) -> Any:
        if self.kind != "string" and self.error is not None:
            raise self.error
        return self.value

    @property
    def failed(self) -> bool:
        return self.error is not None


def _exception(info: dict, frames: list) -> BaseException:
    exc: BaseException | None = None
    if frames:
        try:
            exc = pickle.loads(frames[0])
        except Exception:
            exc = None
    if exc is None:
        cls = CONTROLLER_ERRORS.get(info["ename"])
        exc = cls(info["evalue"]) if cls in (TaskAborted, TaskTimeout) else \
            RemoteError(info["ename"], info["evalue"], info.get("traceback", ""))
    exc._ipython_engine_info = {"engineid": info.get("engine"), "method": "task",
                                "taskid": info["tid"]}
    exc._ipython_traceback_text = info.get("traceback", "")
    return exc


# -- the client ----------------------------------------------------------------------

class TaskClient:
    """A load-balanced task farm on a pympec cluster.

    ``where`` is a connection file path, a profile name, or None for the default
    profile.  ``task_timeout`` (seconds, default 30 as in IPython 0.10) is how long a
    task may wait once every engine has rejected it by ``depend`` before it fails with
    TaskTimeout.  Raises FileNotFoundError when there is no connection file and
    ClusterError when the controller does not answer.
    """

    def __init__(self, where: str | os.PathLike | None = None, *, timeout: float = 10.0,
                 sshserver: str | None = None, task_timeout: float = 30.0) -> None:
        self._session = Session(where, timeout=timeout, sshserver=sshserver)
        self._where = where
        self.task_timeout = task_timeout
        self._results: dict[int, _Outcome] = {}
        self._mine: set[int] = set()

    # -- submitting ---------------------------------------------------------------------

    def run(self, task: BaseTask, block: bool = False) -> Any:
        """Submit ``task``; returns its int id at once, or with ``block=True`` its
        result (see :meth:`get_task_result`)."""
        if not isinstance(task, BaseTask):
            raise TypeError(f"run needs a MapTask or StringTask, not {type(task).__name__}")
        tid = self.run_many([task])[0]
        return self.get_task_result(tid, block=True) if block else tid

    def run_many(self, tasks: Sequence[BaseTask]) -> list[int]:
        """Submit several tasks in as few messages as possible; returns their ids."""
        ids: list[int] = []
        cache: dict = {}
        for start in range(0, len(tasks), SUBMIT_BATCH):
            specs, frames = [], []
            for task in tasks[start:start + SUBMIT_BATCH]:
                if not isinstance(task, BaseTask):
                    raise TypeError(f"not a task: {task!r}")
                spec, more = task.encode(cache, self.task_timeout)
                specs.append(spec)
                frames.extend(more)
            first, count = self._call_value({"verb": "task_submit", "tasks": specs}, frames)
            ids.extend(range(first, first + count))
        self._mine.update(ids)
        return ids

    def _call_value(self, header: dict, frames: list = ()) -> Any:
        request_id = self._session.send(header, list(frames))
        message = self._session.wait(request_id, timeout=max(self._session.timeout, 60.0))
        if message is None:
            raise ClusterError(f"the controller did not answer {header['verb']} in time")
        return message.header.get("value")

    # -- results ------------------------------------------------------------------------

    def _fetch(self, ids: list[int] | None = None, wait: float = 0.0) -> int:
        """Bring finished results here (``ids``, or all of this client's); with nothing
        ready, the controller waits up to ``wait`` s.  Returns how many came."""
        request_id = self._session.send({"verb": "task_fetch", "ids": ids, "wait": wait})
        message = self._session.wait(request_id,
                                     timeout=wait + max(self._session.timeout, 60.0))
        if message is None:
            raise ClusterError("the controller did not answer a task fetch in time")
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
            self._results[info["tid"]] = _Outcome(info, mine)
        infos = value["tasks"]
        return len(infos)

    def _check_id(self, taskid: Any) -> None:
        if isinstance(taskid, bool) or not isinstance(taskid, int):
            raise TypeError(f"task ids are int, not {type(taskid).__name__}")

    def _gather(self, taskids: list[int], block: bool, timeout: float | None = None) -> None:
        """Fetch until every id in ``taskids`` is here (or once, if not ``block``)."""
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

    def get_task_result(self, taskid: int, block: bool = False) -> Any:
        """The task's result: None while it is unfinished (``block=True`` waits).

        A MapTask gives its return value and raises its failure; a StringTask gives a
        TaskResult.  Unknown ids raise IndexError; ClusterError if the cluster died.
        """
        self._check_id(taskid)
        self._gather([taskid], block)
        outcome = self._results.get(taskid)
        return None if outcome is None else outcome.result()

    def get_task_info(self, taskid: int, block: bool = False) -> dict | None:
        """Timing of a finished task: epoch seconds ``submitted`` (controller),
        ``started``/``completed`` (engine), ``received`` (here), and ``engine``."""
        self._check_id(taskid)
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
        ids = [taskids] if isinstance(taskids, int) else list(taskids)
        for t in ids:
            self._check_id(t)
        self._gather(ids, True, timeout)

    def abort(self, taskid: int) -> None:
        """Abort a task: a queued one is dropped, a running one's result is discarded;
        either way its result becomes a TaskAborted failure.  IndexError if it already
        completed or was already aborted; TypeError for a non-int id."""
        self._check_id(taskid)
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
        value = self._session.call("task_status", verbose=bool(verbose))
        return value

    def clear(self, taskids: int | Sequence[int] | None = None) -> int:
        """Forget finished results (all, or ``taskids``), here and on the controller;
        returns how many.  KeyError for an id with no finished result."""
        if taskids is None:
            local = list(self._results)
            remote = None
        else:
            ids = [taskids] if isinstance(taskids, int) else list(taskids)
            local = [t for t in ids if t in self._results]
            remote = [t for t in ids if t not in self._results]
        count = self._call_value({"verb": "task_clear", "ids": remote, "forget": local})
        for t in local:
            del self._results[t]
            self._mine.discard(t)
        return count

    def configure(self, result_cap: int | None = None) -> dict:
        """Set the controller's cap on unfetched result bytes; returns the settings."""
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
        its ``map`` returns the task ids."""
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
        if not callable(func):
            raise TypeError(f"imap needs a function, not {type(func).__name__}")
        if chunksize < 1 or max_outstanding < 1:
            raise ValueError("chunksize and max_outstanding must be >= 1")
        source = iter(zip(*iterables))
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
        thread); see :class:`pympec.taskexecutor.TaskExecutor`."""
        from .taskexecutor import TaskExecutor
        return TaskExecutor(self._session.path, max_outstanding=max_outstanding,
                            task_timeout=self.task_timeout)

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
        self.client, self.options, self.block, self.chunksize = client, options, block, chunksize

    def map(self, func: Callable, *sequences: Sequence) -> Any:
        """One task per element (or per chunk); blocking: the results in order."""
        if not callable(func):
            raise TypeError(f"map needs a function, not {type(func).__name__}")
        if not sequences:
            raise TypeError("map needs at least one sequence")
        lengths = {len(s) for s in sequences}
        if len(lengths) > 1:
            raise ValueError(f"all sequences must have the same length, not {sorted(lengths)}")
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
