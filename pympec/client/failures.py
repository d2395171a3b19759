"""Remote failures, rebuilt on the client (the engine side is pympec.engine.failure).

    {"ename", "evalue", "traceback"} + [pickled exception]  ──>  rebuild(...)
        the exception itself when it unpickles, else the pympec error the controller
        named (QueueCleared, TaskAborted...), else a RemoteError carrying the names;
        in every case ``__cause__`` is a RemoteTraceback holding the engine's traceback,
        so pytest, logging and IPython show the engine's frames under the local ones,
        as concurrent.futures does for its worker processes.
"""
from __future__ import annotations

import pickle
from ..errors import CONTROLLER_ERRORS, RemoteError


_HEADER = "Traceback (most recent call last):\n"


class RemoteTraceback(Exception):
    """The traceback text of an exception raised on an engine (``tb``), and where
    (``where``: engine id, method, task id).

    Shown as the cause of the exception rebuilt here, it reads ``RemoteTraceback: on
    engine 3 (execute):`` then the engine's frames, so the engine is named and the
    traceback header that Python and IPython print anyway is not repeated.
    """

    def __init__(self, tb: str, where: dict | None = None) -> None:
        super().__init__(tb)
        self.tb = tb
        self.where = where or {}

    def __str__(self) -> str:
        where = self.where
        label = f"engine {where['engineid']}" if where.get("engineid") is not None \
            else "an engine"
        if where.get("taskid") is not None:
            label += f" (task {where['taskid']})"
        elif where.get("method"):
            label += f" ({where['method']})"
        body = self.tb[len(_HEADER):] if self.tb.startswith(_HEADER) else self.tb
        return f"on {label}:\n{body.rstrip()}"


def rebuild(info: dict, frames: list, where: dict) -> BaseException:
    """The exception ``info`` and ``frames`` describe, tagged with ``where`` it was
    raised (``_ipython_engine_info``: engine id, method, task id)."""
    tb = info.get("traceback") or ""
    exc = _unpickled(frames)
    if exc is None:
        cls = CONTROLLER_ERRORS.get(info.get("ename"))
        exc = cls(info.get("evalue", "")) if cls is not None else \
            RemoteError(info.get("ename", "Exception"), info.get("evalue", ""), tb)
    try:
        exc._ipython_engine_info = where
        exc._ipython_traceback_text = tb
        if info.get("stdout") or info.get("stderr"):
            exc._pympec_output = {"stdout": info.get("stdout", ""),
                                  "stderr": info.get("stderr", "")}
    except Exception:   # a class that refuses attributes: describe it by name instead
        exc = RemoteError(info.get("ename", "Exception"), info.get("evalue", ""), tb)
        exc._ipython_engine_info, exc._ipython_traceback_text = where, tb
    if tb:
        exc.__cause__ = RemoteTraceback(tb, where)
    return exc


def _unpickled(frames: list) -> BaseException | None:
    if not frames:
        return None
    try:
        exc = pickle.loads(frames[0])
    except Exception:
        return None
    return exc if isinstance(exc, BaseException) else None
