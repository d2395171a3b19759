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


class RemoteTraceback(Exception):
    """The traceback text of an exception raised on an engine."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


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
        exc.__cause__ = RemoteTraceback(tb)
    return exc


def _unpickled(frames: list) -> BaseException | None:
    if not frames:
        return None
    try:
        exc = pickle.loads(frames[0])
    except Exception:
        return None
    return exc if isinstance(exc, BaseException) else None
