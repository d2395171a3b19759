"""Engine side of the task farm: run one batch of load-balanced tasks.

    controller (pympec.controller.tasks)                      engine (this module)
    ------------------------------------------------------------------------------------
    COMMAND {verb: "task_batch",                --->   for each task, in order:
             args: {tasks: [spec, ...]}}                 depend(properties) false -> "rejected"
    payload: every task's frames, back to back           clear_before -> reset the namespace
                                                         run it (map / chunk / string)
                                                         clear_after  -> reset the namespace
                                          <---   REPLY {tasks: [{tid, status, started,
                                                        completed, span, meta | ename...}]}
                                          <---   one frame: all results, back to back

A task spec is JSON: ``{"tid", "kind", "n", "clear_before", "clear_after", "depend",
"code", "pull"}``; its ``n`` frames are pickles (the function, its arguments, the
namespace to push, the depend function last).  Results are encoded in-band (a NumPy
array travels as raw bytes) and packed into one buffer so a batch of many tiny tasks
costs one MPI message each way.

``clear_before``/``clear_after`` reset the namespace but keep the engine's properties,
so ``depend`` keeps seeing them.  The engine loop (:mod:`pympec.engine.loop`) calls
:func:`run_batch` for the ``task_batch`` verb; it returns the reply header and its frames.
"""
from __future__ import annotations

import pickle
import time
from typing import Any

from ..protocol import serialize
from ..protocol.wire import as_bytes_view
from . import failure
from .interrupt import GUARD
from .interpreter import Interpreter, bind

_FUNCTIONS: dict[bytes, tuple[dict, Any]] = {}   # bound task functions, by their pickle
_FUNCTIONS_MAX = 64
_SIMPLE = frozenset({int, float, str, bytes, bool, type(None), complex})


def _function(frame: Any, namespace: dict) -> Any:
    """The function a frame holds, its globals resolving in ``namespace``; the same
    pickle is unpickled once (map() sends the same function with every task)."""
    key = bytes(frame)
    cached = _FUNCTIONS.get(key)
    if cached is None or cached[0] is not namespace:
        if len(_FUNCTIONS) >= _FUNCTIONS_MAX:
            _FUNCTIONS.clear()
        cached = _FUNCTIONS[key] = (namespace, bind(pickle.loads(frame), namespace))
    return cached[1]


def _encode(value: Any) -> tuple[dict, Any]:
    """A result's meta and one buffer; plain pickle for a scalar (fast)."""
    if type(value) in _SIMPLE:
        return {"kind": "pickle", "n": 1}, pickle.dumps(value, serialize.PROTOCOL)
    return serialize.encode_inband(value)


def _reset_namespace(interp: Interpreter) -> None:
    properties = dict(interp.properties)
    interp.reset()
    interp.properties.update(properties)


def _depends(interp: Interpreter, frame: Any) -> bool:
    """The task's depend function on this engine's properties; an exception is False."""
    try:
        depend = pickle.loads(frame)
        return bool(depend(dict(interp.properties)))
    except Exception:
        return False


def _run_one(interp: Interpreter, spec: dict, frames: list) -> Any:
    kind = spec["kind"]
    if kind == "map":
        args, kwargs = pickle.loads(frames[1])
        return _function(frames[0], interp.namespace)(*args, **kwargs)
    if kind == "chunk":
        func = _function(frames[0], interp.namespace)
        return [func(*args) for args in pickle.loads(frames[1])]
    if kind == "string":
        if spec.get("push"):
            interp.push(pickle.loads(frames[0]))
        interp.execute(spec["code"])
        names = spec.get("pull") or []
        return dict(zip(names, interp.pull(names)))
    raise ValueError(f"unknown task kind {kind!r}")


def _failure(interp: Interpreter, spec: dict, e: BaseException) -> tuple[dict, list]:
    """A failed task's fields and frames (pympec.engine.failure); a StringTask's keep
    the output of its execute."""
    info, frames = failure.encode(e)
    if spec.get("kind") == "string":   # (the output, cut as the failure's own texts)
        record = interp.history.get(interp.number, {})
        info.update(stdout=failure.cut(record.get("stdout", "")),
                    stderr=failure.cut(record.get("stderr", "")))
    return info, frames


def run_batch(interp: Interpreter, args: dict, frames: list) -> tuple[dict, list]:
    """Run the batch's tasks in order; returns the reply header and one packed frame."""
    infos: list[dict] = []
    out = bytearray()
    i = 0
    for spec in args["tasks"]:
        mine = frames[i:i + spec["n"]]
        i += spec["n"]
        started = time.time()
        info: dict[str, Any] = {"tid": spec["tid"], "started": started}
        if spec.get("depend") and not _depends(interp, mine[-1]):
            info["status"] = "rejected"
            infos.append(info)
            continue
        try:
            if spec.get("clear_before"):
                _reset_namespace(interp)
            with GUARD.running(task=spec["tid"]):   # (an abort interrupts this one)
                value = _run_one(interp, spec, mine)
            meta, blob = _encode(value)
            view = as_bytes_view(blob)
            info.update(status="ok", meta=meta)
        except BaseException as e:   # SystemExit too: engines outlive user code
            info_, frames_ = _failure(interp, spec, e)
            info.update(info_)
            view = memoryview(frames_[0] if frames_ else b"")
        finally:
            if spec.get("clear_after"):
                _reset_namespace(interp)
        info["span"] = [len(out), view.nbytes]
        out += view
        info["completed"] = time.time()
        infos.append(info)
    return {"status": "ok", "tasks": infos, "metas": []}, ([out] if out else [])
