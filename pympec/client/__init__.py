"""The client API, as IPython 0.10 spelled it: ``from pympec import client``.

    mec = client.MultiEngineClient()      # direct control of the engines
    tc = client.TaskClient()              # load-balanced tasks

Both find the default profile's connection file with no argument, or take a path or a
profile name.  The names below load on first use, so that a command which needs only
part of the client (``pympec cluster start``) starts fast.
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"MultiEngineClient": ".multiengine", "TaskClient": ".taskclient",
          "MapTask": ".tasks", "StringTask": ".tasks", "TaskResult": ".tasks",
          "PendingResult": ".results", "ResultList": ".results", "remote": ".remoteblock",
          **{name: "..errors" for name in (
              "CompositeError", "InvalidEngineID", "NoEnginesRegistered", "QueueCleared",
              "TaskAborted", "TaskRejectError", "TaskTimeout")}}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'pympec.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value   # (found directly from now on)
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
