"""Live feedback while waiting: a progress bar of engines or tasks done.

:func:`wait_interactive` is the one loop behind ``PendingResult.wait_interactive()`` and
:func:`wait_tasks`.  It polls a ``done() -> int`` counter at a bounded interval and
draws a `tqdm <https://tqdm.github.io>`_ bar (the ``progress`` or ``ipython`` extra)
when tqdm can be imported; otherwise a plain text line per change::

    engines:   2/4 done, 0.8 s elapsed
    engines:   4/4 done, 1.6 s elapsed

Nothing here talks to the cluster itself: the callers pass in how to count and how to
tell that the work is finished.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Iterable, TextIO


def have_tqdm() -> bool:
    """True when tqdm can be imported (the bar is drawn with it)."""
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


class TextBar:
    """The plain text fallback: one line each time the count changes."""

    def __init__(self, total: int, desc: str, file: TextIO) -> None:
        self.total, self.desc, self.file = total, desc, file
        self.n = 0
        self._shown: int | None = None
        self.start = time.monotonic()

    def update_to(self, n: int) -> None:
        self.n = n
        if n != self._shown:
            self._shown = n
            self._write()

    def _write(self) -> None:
        width = len(str(self.total))
        print(f"{self.desc}: {self.n:>{width}}/{self.total} done, "
              f"{time.monotonic() - self.start:.1f} s elapsed", file=self.file, flush=True)

    def close(self) -> None:
        if self._shown != self.n:
            self._write()


class TqdmBar:
    """A tqdm bar with the same small interface as :class:`TextBar`."""

    def __init__(self, total: int, desc: str, file: TextIO) -> None:
        from tqdm import tqdm
        self.bar = tqdm(total=total, desc=desc, file=file, unit="", leave=True,
                        dynamic_ncols=True, mininterval=0.1,
                        bar_format="{desc}: {bar} {n_fmt}/{total_fmt} done, "
                                   "{elapsed} elapsed")

    @property
    def n(self) -> int:
        return self.bar.n

    def update_to(self, n: int) -> None:
        if n != self.bar.n:
            self.bar.update(n - self.bar.n)

    def close(self) -> None:
        self.bar.refresh()
        self.bar.close()


def make_bar(total: int, desc: str, file: TextIO | None = None,
             use_tqdm: bool | None = None) -> TextBar | TqdmBar:
    """A tqdm bar if ``use_tqdm`` (default: when tqdm is importable), else a text one.

    Raises ImportError when ``use_tqdm`` is True and tqdm is missing.
    """
    file = file if file is not None else sys.stderr
    if use_tqdm is None:
        use_tqdm = have_tqdm()
    return TqdmBar(total, desc, file) if use_tqdm else TextBar(total, desc, file)


def wait_interactive(done: Callable[[], int], total: int, finished: Callable[[], bool], *,
                     desc: str = "engines", interval: float = 0.1,
                     timeout: float | None = None, file: TextIO | None = None,
                     use_tqdm: bool | None = None) -> bool:
    """Show a bar of ``done()`` out of ``total`` until ``finished()`` is true.

    Polls every ``interval`` seconds; blocks at most ``timeout`` seconds (None: until
    finished).  Returns whether the work finished.  Exceptions from ``done`` or
    ``finished`` (a lost cluster, say) propagate; the bar is closed either way.
    """
    if interval <= 0:
        raise ValueError(f"interval must be positive, not {interval!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    bar = make_bar(total, desc, file, use_tqdm)
    try:
        while True:
            if finished():
                bar.update_to(total)
                return True
            bar.update_to(min(done(), total))
            if deadline is not None and time.monotonic() >= deadline:
                return False
            left = interval if deadline is None else min(interval,
                                                         deadline - time.monotonic())
            time.sleep(max(left, 0.0))
    finally:
        bar.close()


def wait_tasks(task_client: Any, taskids: int | Iterable[int], *, interval: float = 0.2,
               timeout: float | None = None, file: TextIO | None = None,
               use_tqdm: bool | None = None) -> bool:
    """Show a bar of finished tasks (successful or not) until all ``taskids`` are done.

    Counts with the TaskClient's ``queue_status(verbose=True)``: a task is done once it
    is neither scheduled nor pending.  Blocks at most ``timeout`` seconds; returns
    whether all finished.  Fetch the results afterwards with ``get_task_result``.
    """
    ids = [taskids] if isinstance(taskids, int) else list(taskids)

    last = [0]

    def finished() -> bool:   # one queue_status round trip per poll
        status = task_client.queue_status(verbose=True)
        waiting = set(status.get("scheduled", ())) | set(status.get("pending", ()))
        last[0] = sum(1 for t in ids if t not in waiting)
        return last[0] == len(ids)

    return wait_interactive(lambda: last[0], len(ids), finished, desc="tasks",
                            interval=interval, timeout=timeout, file=file,
                            use_tqdm=use_tqdm)
