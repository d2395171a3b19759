"""Exceptions, after IPython.kernel.error, plus the ones a network adds.

Remote failures reach the client as the original exception instance when it unpickles,
else as a :class:`RemoteError`; either way it carries ``_ipython_engine_info`` (engine id,
method) and ``_ipython_traceback_text`` (the formatted remote traceback), and a multi-engine
call raises them together in a :class:`CompositeError`.
"""
from __future__ import annotations

import sys
from typing import Any

from .display import RED, engines_label, pre, span, table


class KernelError(Exception):
    """Base of pympec's own errors."""


class EngineError(KernelError):
    """An engine was lost while it ran or held the call: its loop failed, or its
    process died.  The message names the engine, its rank, host and pid, and how."""


class CollectiveAborted(KernelError):
    """Another engine died during a collective call (a scatter, a gather, a push to
    several engines) this engine took part in: the call was cut short here, and may or
    may not have done this engine's part; the engine itself serves on."""


class InvalidEngineID(KernelError, ValueError):
    """A target id names no registered engine."""


class NoEnginesRegistered(KernelError):
    """``targets='all'`` while no engine is registered."""


class QueueCleared(KernelError):
    """A queued command was dropped: an earlier command failed, or clear_queue was called."""


class RequestLost(KernelError):
    """A request was lost with its connection before the controller read it: it did
    not run, and has no result."""


class ResultNotCompleted(KernelError):
    """A result was asked for before it was ready."""


class InvalidDeferredID(KernelError):
    """No stored result has this id."""


class NotAPendingResult(KernelError, TypeError):
    """barrier() was given something other than PendingResults."""


class TaskAborted(KernelError):
    """The task was aborted before it finished."""


class TaskTimeout(KernelError):
    """No engine could take the task in time."""


class TaskRejectError(KernelError):
    """Raised by a task to refuse this engine; with ``retries`` it is retried elsewhere."""


class InvalidProperty(KernelError):
    """An engine property value could not be stored."""


class SecurityError(KernelError):
    """Authentication with the controller failed."""


class ProtocolError(KernelError):
    """The peer sent bytes that are not a valid pympec frame."""


class MessageBroken(KernelError):
    """A request's payload did not arrive whole (its client's connection broke, or a
    signature failed), so the engines dropped it and the command did not run."""


class StopLocalExecution(KernelError):
    """Used by ``with mec: remote()`` to stop the local run of the block."""


class ClusterError(KernelError, ConnectionError):
    """The controller could not be reached, or the connection to it was lost."""


class RemoteError(KernelError):
    """A remote exception whose class could not be rebuilt on the client."""

    def __init__(self, ename: str, evalue: str, traceback: str = "") -> None:
        super().__init__(f"{ename}: {evalue}")
        self.ename, self.evalue, self.traceback = ename, evalue, traceback


def engine_info(exc: BaseException) -> dict:
    return getattr(exc, "_ipython_engine_info", None) or {}


def traceback_text(exc: BaseException) -> str:
    return getattr(exc, "_ipython_traceback_text", "") or ""


class CompositeError(KernelError):
    """One or more engines failed during one call.

    ``elist`` holds ``(etype, evalue, traceback_text)`` per failure, in target order.
    ``str(e)`` is the message plus a line ``[<id>:<method>]: <Type>: <value>`` per failure.
    """

    def __init__(self, message: str, elist: list[tuple[type, BaseException, str]]) -> None:
        super().__init__(message, elist)
        self.message = message
        self.elist = []
        for etype, evalue, tb in elist:  # nested CompositeErrors are flattened into one
            if isinstance(evalue, CompositeError):
                self.elist.extend(evalue.elist)
            else:
                self.elist.append((etype, evalue, tb))

    @classmethod
    def from_exceptions(cls, method: str, exceptions: list[BaseException]) -> "CompositeError":
        """The CompositeError of ``method`` for remote exceptions tagged with engine info."""
        return cls(f"one or more exceptions from call to method: {method}",
                   [(type(e), e, traceback_text(e)) for e in exceptions])

    def __str__(self) -> str:
        lines = [self.message]
        for etype, evalue, _ in self.elist:
            info = engine_info(evalue)
            where = (f"[{info['engineid']}:{info['method']}]" if "engineid" in info
                     else "[Engine Exception]")
            value = evalue.evalue if isinstance(evalue, RemoteError) else safe_str(evalue)
            lines.append(f"{where}: {_type_name(etype, evalue)}: {value}")
        return "\n".join(lines)

    __repr__ = __str__

    def groups(self) -> list[tuple[list, str, str, str]]:
        """The failures with identical tracebacks put together, in order of first
        appearance: ``(engine ids, type name, value, traceback text)`` per group (an
        id is None where the engine is unknown)."""
        found: dict[tuple[str, str, str], list] = {}
        for etype, evalue, tb in self.elist:
            value = evalue.evalue if isinstance(evalue, RemoteError) else safe_str(evalue)
            found.setdefault((_type_name(etype, evalue), value, tb), []).append(
                engine_info(evalue).get("engineid"))
        return [(ids, name, value, tb) for (name, value, tb), ids in found.items()]

    def _render_traceback_(self) -> list[str]:
        """What IPython and Jupyter show when this is raised: the message, then each
        distinct remote traceback once, under the engines that raised it (``engines
        0-63: ZeroDivisionError: division by zero``); not the client's own frames."""
        lines = [f"{type(self).__name__}: {self.message}"]
        groups = self.groups()
        for i, (ids, name, value, tb) in enumerate(groups):
            lines.extend([""] * (i > 0) + [f"{_engines(ids)}: {name}: {value}"])
            lines.extend((tb or f"{name}: {value}").rstrip("\n").splitlines())
        if len(groups) < len(self.elist):
            lines.append(f"(identical tracebacks are shown once; print_tracebacks() "
                         f"prints all {len(self.elist)})")
        return lines

    def _repr_html_(self) -> str:
        """One row per distinct failure: the engines, the error and its traceback."""
        rows = [[span(_engines(ids)), span(f"{name}: {value}", RED, bold=True) + pre(tb, RED)]
                for ids, name, value, tb in self.groups()]
        return table(["engines", "error"], rows, f"{type(self).__name__}: {self.message}")

    def print_tracebacks(self, excid: int | None = None, file: Any = None) -> None:
        """Print every remote traceback, or only the ``excid``-th."""
        file = file or sys.stdout
        chosen = self.elist if excid is None else [self._pick(excid)]
        for i, (etype, evalue, tb) in enumerate(chosen):
            info = engine_info(evalue)
            print(f"[{info.get('engineid', '?')}:{info.get('method', '?')}]: "
                  f"{_type_name(etype, evalue)}", file=file)
            print(tb or f"{safe_str(evalue)}\n", file=file)

    def raise_exception(self, excid: int = 0) -> None:
        """Re-raise the ``excid``-th remote exception here (IndexError if out of range)."""
        raise self._pick(excid)[1]

    def _pick(self, excid: int) -> tuple:
        try:
            return self.elist[excid]
        except IndexError:
            raise IndexError(f"an exception with index {excid} does not exist "
                             f"({len(self.elist)} in this CompositeError)") from None


def _type_name(etype: type, evalue: BaseException) -> str:
    return evalue.ename if isinstance(evalue, RemoteError) else etype.__name__


def safe_str(evalue: BaseException) -> str:
    """``str(evalue)``, or a placeholder when its ``__str__`` raises."""
    try:
        return str(evalue)
    except Exception:
        return f"<unprintable {type(evalue).__name__} object>"


def _engines(ids: list) -> str:
    known = [i for i in ids if isinstance(i, int)]
    return engines_label(known) if len(known) == len(ids) else "[Engine Exception]"


# Exceptions the controller names in its JSON replies, rebuilt by name on the client.
CONTROLLER_ERRORS = {cls.__name__: cls for cls in (
    InvalidEngineID, NoEnginesRegistered, QueueCleared, InvalidDeferredID, TaskAborted,
    TaskTimeout, ProtocolError, KernelError, ValueError, TypeError, KeyError, IndexError,
    MemoryError, KeyboardInterrupt, EngineError, CollectiveAborted)}


class CallInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a blocking call; the message says whether its engines stopped
    too, and what to do if not.  IPython shows it as this one line."""

    def _render_traceback_(self) -> list[str]:
        return [f"KeyboardInterrupt: {self}"]


class WalltimeWarning(UserWarning):
    """The cluster's batch job is about to reach its walltime."""


class UserError(Exception):
    """A request that cannot be met as asked: a bad option or setting, a cluster already
    running, an mpiexec that does not run. The ``pympec`` command prints the message as one
    line and exits with status 2 (``--debug`` shows the traceback)."""


class UsageError(UserError, ValueError):
    """A value that cannot be used as given; the message names it and says what would do."""


class ClusterRunning(UserError, RuntimeError):
    """A cluster already answers on the connection file a new one would use."""
