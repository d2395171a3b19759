"""Tasks and their results, as IPython 0.10 had them: MapTask, StringTask, TaskResult.

    MapTask(f, args=(10,))                    -> f(10), raised if it failed
    StringTask("y = x * 2", push={"x": 3}, pull="y") -> TaskResult: .ns.y == 6, .failure

A task becomes a JSON spec plus pickled frames (cloudpickle, so lambdas and closures
work), unpickled only on the engines.  :mod:`pympec.client.taskclient` submits them and
fetches their outcomes; :mod:`pympec.controller.tasks` balances them over the engines.
"""
from __future__ import annotations

import pickle
import time
from typing import Any, Callable, Sequence

import cloudpickle

from .. import display
from ..errors import RemoteError, safe_str, traceback_text
from ..protocol import serialize
from .checks import (MAX_RETRIES, check_count, check_flag, check_function, check_names,
                     check_namespace)
from .failures import rebuild
from .functions import pickled

MAX_RECOVERY = 4   # recovery tasks nested in one task (the registry's _task_spec)
_SIMPLE = frozenset({int, float, str, bytes, bool, type(None), complex})


# -- tasks ---------------------------------------------------------------------------

class BaseTask:
    """Options common to all tasks.

    ``clear_before``/``clear_after`` reset the engine namespace before/after the task
    (engine properties are kept); ``retries`` resubmits a failed task (to another
    engine when one is free); ``recovery_task`` runs, under the same id, when all
    retries failed (at most MAX_RECOVERY nested); ``depend(properties) -> bool`` says
    whether an engine may run it.  Bad options raise TypeError or ValueError here.
    """

    kind = "base"

    def __init__(self, clear_before: bool = False, clear_after: bool = False,
                 retries: int = 0, recovery_task: "BaseTask | None" = None,
                 depend: Callable[[dict], bool] | None = None) -> None:
        self.clear_before = check_flag(clear_before, "clear_before")
        self.clear_after = check_flag(clear_after, "clear_after")
        self.retries = check_count(retries, "retries", low=0, high=MAX_RETRIES)
        if recovery_task is not None and not isinstance(recovery_task, BaseTask):
            raise TypeError(f"recovery_task must be a task, not {type(recovery_task).__name__}")
        if depend is not None and not callable(depend):
            raise TypeError(f"depend must be a function of the properties dict, not "
                            f"{type(depend).__name__}")
        self.recovery_task = recovery_task
        self.depend = depend

    def _body(self, cache: dict) -> tuple[dict, list]:
        raise NotImplementedError

    def encode(self, cache: dict | None = None, timeout: float = 30.0,
               depth: int = 0) -> tuple[dict, list]:
        """The JSON spec and the frames (pickles) the controller forwards to an engine.
        ValueError when recovery tasks nest more than MAX_RECOVERY deep (or loop)."""
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
            if depth == MAX_RECOVERY:
                raise ValueError(f"recovery tasks nest at most {MAX_RECOVERY} deep; this "
                                 f"chain is longer (or loops back on itself)")
            rspec, rframes = self.recovery_task.encode(cache, timeout, depth + 1)
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
        check_function(function, "a MapTask")
        args = () if args is None else args
        kwargs = {} if kwargs is None else kwargs
        if not isinstance(args, (list, tuple)):
            raise TypeError(f"args must be a list or tuple, not {type(args).__name__}")
        if not isinstance(kwargs, dict):
            raise TypeError(f"kwargs must be a dict, not {type(kwargs).__name__}")
        for key in kwargs:
            if not isinstance(key, str):
                raise TypeError(f"kwargs keys are keyword names, so str, not "
                                f"{type(key).__name__} {key!r}")
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
        pull = () if pull is None else tuple(check_names(pull, "pull")[0])
        push = {} if push is None else check_namespace(push, "a StringTask's push")
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
    """The pickle of ``func`` (:mod:`.functions`), once per function per message."""
    key = id(func)
    if key not in cache:
        cache[key] = (func, pickled(func))
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

    def _repr_html_(self) -> str:
        """One row: the task, its engine, how long it ran, and its pulled values or (in
        red) its failure with the engine's traceback."""
        if self.failure is None:
            outcome = "".join(display.pre(f"{name} = {value!r}")
                              for name, value in self.results.items())
        else:
            failure = self.failure
            outcome = (display.span(f"{type(failure).__name__}: {failure}", display.RED, True)
                       + display.pre(traceback_text(failure), display.RED))
        return display.table(["task", "engine", "duration", "results"],
                             [[display.span(str(self.taskid)),
                               display.span(str(self.engineid), display.GREEN),
                               display.span(f"{self.duration:.3f} s"), outcome]],
                             f"TaskResult[ID:{self.taskid}]")


class Outcome:
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
            self.error = rebuild(info, frames, {"engineid": self.engine, "method": "task",
                                                "taskid": self.tid})
        if self.kind == "string":
            self.value = TaskResult(self.tid, self.engine, self.value or {}, self.error,
                                    self.timing)

    def result(self) -> Any:
        """The value, or the task's failure raised: as itself when it is an Exception;
        a SystemExit or KeyboardInterrupt of the task's code would end this program or
        look like the user's Ctrl-C, so those come wrapped in a RemoteError."""
        if self.kind != "string" and self.error is not None:
            if not isinstance(self.error, Exception):
                raise RemoteError(type(self.error).__name__, safe_str(self.error),
                                  traceback_text(self.error)) from self.error
            raise self.error
        return self.value
