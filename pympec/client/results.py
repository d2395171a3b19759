"""What calls return: the Results List of ``execute``, and PendingResult for ``block=False``."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from .. import display
from ..errors import ClusterError


class ResultList(list):
    """A list of per-engine execute records that prints like IPython 0.10's::

        <Results List>
        [0] In [1]: print(c)
        [0] Out[1]: 15

    ``shown`` counts, per ``(engine id, 'stdout' | 'stderr')``, the characters already
    streamed while the code ran (``execute(stream=...)``, ``%px``): the display leaves
    them out rather than repeat them.  The records themselves keep all the output.
    Jupyter renders it as a table, one row per engine (:meth:`_repr_html_`).
    """

    def __init__(self, records: Iterable[Any] = (),
                 shown: dict[tuple[int, str], int] | None = None) -> None:
        super().__init__(records)
        self.shown = dict(shown or {})

    def unshown(self, record: dict, name: str) -> str:
        """``record[name]`` (stdout or stderr) without what was streamed already."""
        return (record.get(name) or "")[self.shown.get((record["id"], name), 0):]

    def __repr__(self) -> str:
        lines = ["<Results List>"]
        for r in self:
            if not isinstance(r, dict) or "number" not in r:
                lines.append(repr(r))
                continue
            eid, n = r["id"], r["number"]
            lines.append(f"[{eid}] In [{n}]: {r['input']['translated']}")
            if self.unshown(r, "stdout"):
                lines.append(f"[{eid}] Out[{n}]: {self.unshown(r, 'stdout')}")
            if self.unshown(r, "stderr"):
                lines.append(f"[{eid}] Err[{n}]:\n{self.unshown(r, 'stderr')}")
        return "\n".join(lines)

    __str__ = __repr__

    def _repr_html_(self) -> str:
        """A table: per engine its id, input, output (stderr in red) and displayed value."""
        rows = []
        for r in self:
            if not isinstance(r, dict) or "number" not in r:
                rows.append(["", "", display.pre(repr(r)), ""])
                continue
            rows.append([display.span(f"[{r['id']}]", display.GREEN),
                         display.pre(f"In [{r['number']}]: {r['input']['translated']}",
                                     display.BLUE),
                         display.pre(self.unshown(r, "stdout"))
                         + display.pre(self.unshown(r, "stderr"), display.RED),
                         display.pre((r.get("display") or {}).get("repr"))])
        return display.table(["engine", "input", "output", "result"], rows, "Results List")


class PendingResult:
    """The result of a non-blocking call, fetched when asked for.

    ``get_result(default=None, block=True)`` returns it (or re-raises its exception),
    ``r`` is ``get_result()``; the first outcome is cached.  ``add_callback(f, *a, **kw)``
    chains ``f(result, *a, **kw)`` onto the value when it is fetched.

    For live feedback: ``ready()``, ``elapsed``, ``progress`` (target engines done) and
    ``wait_interactive()`` (a progress bar; see :mod:`pympec.client.progress`).
    """

    _NOTHING = object()

    def __init__(self, client: Any, result_id: str, finish: Callable[[Any], Any], *,
                 targets: Any = None, describe: str | None = None) -> None:
        self.client = client
        self.result_id = result_id
        self._finish = finish
        self.callbacks: list[tuple[Callable, tuple, dict]] = []
        self.called = False
        self.raised = False
        self._value: Any = self._NOTHING
        self.targets = targets          # as sent: an id, a list of ids, or 'all'
        self.describe = describe        # how the controller's queue_status shows the call
        self._started = time.monotonic()
        self._ended: float | None = None

    def __repr__(self) -> str:
        return f"<PendingResult {self.result_id} ({self._state()})>"

    def _state(self) -> str:
        return "failed" if self.raised else "done" if self.called else "pending"

    def _repr_html_(self) -> str:
        """Its id and state: pending (grey), done (green) or failed (red), and the time."""
        colour = {"failed": display.RED, "done": display.GREEN}.get(self._state(), display.GREY)
        return (display.span(repr(self), colour)
                + display.span(f" {self.elapsed:.2f} s", display.GREY))

    def __lt__(self, other: "PendingResult") -> bool:
        return self.result_id < other.result_id

    def add_callback(self, f: Callable, *args: Any, **kwargs: Any) -> None:
        """Chain ``f(result, *args, **kwargs)`` onto the result when it is fetched."""
        self.callbacks.append((f, args, kwargs))

    def get_result(self, default: Any = None, block: bool = True,
                   timeout: float | None = None) -> Any:
        """The result; ``default`` if ``block`` is False and it is not ready.

        Blocks (when ``block``) until every target engine has answered, or ``timeout``
        seconds (None: the client's ``call_timeout``, which is None, no limit, unless
        set).  Raises what the call raised (a CompositeError for engine failures),
        TimeoutError after ``timeout`` (the call goes on: ask again later), and
        ClusterError when the controller is lost or stops answering.  Ctrl-C while it
        blocks interrupts the call on its engines and raises CallInterrupted (a
        KeyboardInterrupt) saying how that went.
        """
        if not self.called:
            if timeout is None:
                timeout = getattr(self.client, "call_timeout", None)
            try:
                message = self.client._session.wait(self.result_id, timeout if block else 0)
            except KeyboardInterrupt:
                if not block or not hasattr(self.client, "_interrupt_call"):
                    raise
                raise self.client._interrupt_call(self) from None
            if message is None:
                if block:
                    raise TimeoutError(
                        f"{self.describe or self.result_id} did not finish within "
                        f"{timeout:g} s; it goes on running: ask for its result again "
                        f"later, or interrupt it")
                return default
            self.settle(message)
        if self.raised:
            raise self._value
        return self._value

    def settle(self, message: Any) -> None:
        """Take the call's reply: its value (through the callbacks) or its exception."""
        self._ended = time.monotonic()
        try:
            value = self._finish(message)
            for f, args, kwargs in self.callbacks:
                value = f(value, *args, **kwargs)
            self._value = value
        except Exception as e:
            self.raised = True
            self._value = e
        self.called = True

    @property
    def r(self) -> Any:
        """The result, waiting for it: ``get_result(block=True)``."""
        return self.get_result(block=True)

    # -- live feedback -------------------------------------------------------------------

    def ready(self) -> bool:
        """True once the result (or its exception) has arrived; never blocks."""
        if not self.called:
            try:
                self.get_result(default=self._NOTHING, block=False)
            except ClusterError:
                raise
            except Exception:
                pass    # cached: re-raised by get_result / r
        return self.called

    @property
    def elapsed(self) -> float:
        """Seconds since the call was sent; frozen when its result arrived."""
        return (self._ended if self._ended is not None else time.monotonic()) - self._started

    def _target_ids(self) -> list[int]:
        if isinstance(self.targets, int):
            return [self.targets]
        if isinstance(self.targets, (list, tuple)):
            return list(self.targets)
        return list(self.client.get_ids())

    @property
    def progress(self) -> int:
        """How many target engines have finished this call.

        Exact once done; while running it asks the controller's ``queue_status`` (one
        round trip) and counts the engines where no command like this one is queued or
        running, so it never over-counts.
        """
        ids = self._target_ids()
        if self.ready():
            return len(ids)
        if not self.describe:
            return 0
        busy = 0
        for _, status in self.client.queue_status(targets=ids):
            if self.describe in status["queue"] or status["pending"] == self.describe:
                busy += 1
        return len(ids) - busy

    def wait_interactive(self, interval: float = 0.1, timeout: float | None = None,
                         file: Any = None, use_tqdm: bool | None = None) -> bool:
        """Wait, showing a bar of target engines done and the elapsed time.

        The bar is tqdm's when tqdm is importable, else plain text (``use_tqdm`` forces
        one or the other), written to ``file`` (default stderr).  Blocks at most
        ``timeout`` seconds (None: until done); returns whether the result arrived.  It
        does not raise the call's exception: ``r`` or ``get_result()`` does.
        """
        from .progress import wait_interactive
        total = len(self._target_ids())
        return wait_interactive(lambda: self.progress, total, self.ready, desc="engines",
                                interval=interval, timeout=timeout, file=file,
                                use_tqdm=use_tqdm)
