"""What calls return: the Results List of ``execute``, and PendingResult for ``block=False``."""
from __future__ import annotations

import html
from typing import Any, Callable

from .errors import ClusterError


class ResultList(list):
    """A list of per-engine execute records that prints like IPython 0.10's::

        <Results List>
        [0] In [1]: print(c)
        [0] Out[1]: 15
    """

    def __repr__(self) -> str:
        lines = ["<Results List>"]
        for r in self:
            if not isinstance(r, dict) or "number" not in r:
                lines.append(repr(r))
                continue
            eid, n = r["id"], r["number"]
            lines.append(f"[{eid}] In [{n}]: {r['input']['translated']}")
            if r.get("stdout"):
                lines.append(f"[{eid}] Out[{n}]: {r['stdout']}")
            if r.get("stderr"):
                lines.append(f"[{eid}] Err[{n}]:\n{r['stderr']}")
        return "\n".join(lines)

    __str__ = __repr__

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>"


class PendingResult:
    """The result of a non-blocking call, fetched when asked for.

    ``get_result(default=None, block=True)`` returns it (or re-raises its exception),
    ``r`` is ``get_result()``; the first outcome is cached.  ``add_callback(f, *a, **kw)``
    chains ``f(result, *a, **kw)`` onto the value when it is fetched.
    """

    _NOTHING = object()

    def __init__(self, client: Any, result_id: str, finish: Callable[[Any], Any]) -> None:
        self.client = client
        self.result_id = result_id
        self._finish = finish
        self.callbacks: list[tuple[Callable, tuple, dict]] = []
        self.called = False
        self.raised = False
        self._value: Any = self._NOTHING

    def __repr__(self) -> str:
        state = "done" if self.called else "pending"
        return f"<PendingResult {self.result_id} ({state})>"

    def _repr_html_(self) -> str:
        return html.escape(repr(self))

    def __lt__(self, other: "PendingResult") -> bool:
        return self.result_id < other.result_id

    def add_callback(self, f: Callable, *args: Any, **kwargs: Any) -> None:
        self.callbacks.append((f, args, kwargs))

    def get_result(self, default: Any = None, block: bool = True) -> Any:
        """The result; ``default`` if ``block`` is False and it is not ready.

        Blocks (when ``block``) until every target engine has answered; raises what the
        call raised (a CompositeError for engine failures).
        """
        if not self.called:
            try:
                message = self.client._session.wait(self.result_id, None if block else 0)
                if message is None:
                    return default
                value = self._finish(message)
                for f, args, kwargs in self.callbacks:
                    value = f(value, *args, **kwargs)
                self._value = value
            except ClusterError:
                raise   # the connection failed, not the call: nothing to cache
            except Exception as e:
                self.raised = True
                self._value = e
            self.called = True
        if self.raised:
            raise self._value
        return self._value

    @property
    def r(self) -> Any:
        return self.get_result(block=True)
