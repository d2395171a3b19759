"""A client's request as the controller's parts see it, once the registry has checked it."""
from __future__ import annotations

from typing import Any, NamedTuple

from ..protocol.commands import Command
from ..protocol.wire import Message


class Request(NamedTuple):
    """Who sent it, what it asks (its checked header and declared command), and the
    message it came in (frames, still arriving when streamed)."""

    client: str
    command: Command
    header: dict
    message: Message

    @property
    def frames(self) -> list:
        return self.message.frames


LATER: Any = object()   # a handler's value when it answers the client itself, later
