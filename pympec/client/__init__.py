"""The client API, as IPython 0.10 spelled it: ``from pympec import client``.

    mec = client.MultiEngineClient()      # direct control of the engines
    tc = client.TaskClient()              # load-balanced tasks

Both find the default profile's connection file with no argument, or take a path or a
profile name.
"""
from ..errors import (CompositeError, InvalidEngineID, NoEnginesRegistered, QueueCleared,
                      TaskAborted, TaskRejectError, TaskTimeout)
from .multiengine import MultiEngineClient
from .remoteblock import remote
from .results import PendingResult, ResultList
from .tasks import MapTask, StringTask, TaskResult
from .taskclient import TaskClient

__all__ = ["MultiEngineClient", "TaskClient", "MapTask", "StringTask", "TaskResult",
           "PendingResult", "ResultList", "remote", "CompositeError", "InvalidEngineID",
           "NoEnginesRegistered", "QueueCleared", "TaskAborted", "TaskRejectError",
           "TaskTimeout"]
