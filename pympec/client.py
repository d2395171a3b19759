"""The client API, as IPython 0.10 spelled it: ``from pympec import client``.

    mec = client.MultiEngineClient()      # direct control of the engines
    tc = client.TaskClient()              # load-balanced tasks

Both find the default profile's connection file with no argument, or take a path or a
profile name.
"""
from .errors import (CompositeError, InvalidEngineID, NoEnginesRegistered,  # noqa: F401
                     QueueCleared, TaskAborted, TaskRejectError, TaskTimeout)
from .multiengine import MultiEngineClient  # noqa: F401
from .remoteblock import remote  # noqa: F401
from .results import PendingResult, ResultList  # noqa: F401

try:  # the task farm
    from .task import MapTask, StringTask, TaskClient, TaskResult  # noqa: F401
except ImportError:  # pragma: no cover - while the task module is not there yet
    pass
