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
:data:`TASK_COMMANDS` entries directly: they return the reply header and its frames.
"""
from __future__ import annotations

import pickle
import time
from typing import Any, Callable

from ..protocol import serialize
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


def _failure(e: BaseException) -> tuple[dict, bytes]:
    """JSON fields for a failed task, and the pickled exception (b"" if it won't pickle)."""
    from .loop import remote_traceback   # lazily: the engine module imports this one
    info = {"status": "error", "ename": type(e).__name__, "evalue": str(e),
            "traceback": remote_traceback(e)}
    record = getattr(e, "record", None)
    if record:
        info["stdout"] = record.get("stdout", "")
        info["stderr"] = record.get("stderr", "")
        del e.record
    e.__traceback__ = None
    try:
        _, stream = serialize.encode_inband(e)
        pickle.loads(stream)            # it must also unpickle on the client
        return info, stream
    except Exception:
        return info, b""


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
        blob: Any = b""
        try:
            if spec.get("clear_before"):
                _reset_namespace(interp)
            value = _run_one(interp, spec, mine)
            meta, blob = _encode(value)
            info.update(status="ok", meta=meta)
        except BaseException as e:   # SystemExit too: engines outlive user code
            info_, blob = _failure(e)
            info.update(info_)
        finally:
            if spec.get("clear_after"):
                _reset_namespace(interp)
        view = memoryview(blob).cast("B")
        info["span"] = [len(out), view.nbytes]
        out += view
        info["completed"] = time.time()
        infos.append(info)
    return {"status": "ok", "tasks": infos, "metas": []}, ([out] if out else [])


TASK_COMMANDS: dict[str, Callable[[Interpreter, dict, list], tuple[dict, list]]] = {
    "task_batch": run_batch,
}
