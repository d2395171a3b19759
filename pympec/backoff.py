"""Backoff: how long an idle rank sleeps between polls.

MPI implementations busy-wait inside blocking calls, and the machines pympec runs on are
often oversubscribed, so every rank polls instead (``Iprobe``/``Test``, or ``select`` on the
controller) and sleeps between polls.  A Backoff says how long:

* right after activity, a few polls with no sleep at all, so a hot client sees low latency;
* then sleeps that double from ``start`` up to ``max`` (default 1 ms);
* after ``idle`` seconds without activity, sleeps that keep doubling up to ``idle_max``
  (default 20 ms), so an idle cluster costs next to nothing.

``PYMPEC_BACKOFF`` tunes it: a number sets ``max`` in seconds (``PYMPEC_BACKOFF=0.002``),
or give fields by name: ``PYMPEC_BACKOFF="max=0.001,idle=2,idle_max=0.05,spin=20"``.
"""
from __future__ import annotations

import os
import time

_FIELDS = ("spin", "start", "max", "idle", "idle_max")


class Backoff:
    """Exponential sleep backoff between polls; call :meth:`reset` on activity."""

    def __init__(self, *, spin: int = 10, start: float = 1e-5, max: float = 1e-3,
                 idle: float = 1.0, idle_max: float = 0.02) -> None:
        self.spin = int(spin)
        self.start = float(start)
        self.max = float(max)
        self.idle = float(idle)
        self.idle_max = float(idle_max)
        for name in _FIELDS:
            value = getattr(self, name)
            if not 0 <= value < float("inf"):   # also rejects NaN
                raise ValueError(f"backoff {name} must be a finite number >= 0, not {value}")
        self.reset()

    @classmethod
    def from_env(cls, **defaults: float) -> "Backoff":
        """A Backoff with ``defaults`` overridden by ``$PYMPEC_BACKOFF`` (see module doc)."""
        text = os.environ.get("PYMPEC_BACKOFF", "").strip()
        settings = dict(defaults)
        if text:
            try:
                if "=" not in text:
                    settings["max"] = float(text)
                else:
                    for item in text.split(","):
                        name, value = (part.strip() for part in item.split("="))
                        if name not in _FIELDS:
                            raise ValueError(f"unknown field {name!r}")
                        settings[name] = float(value)
                return cls(**settings)
            except ValueError as e:
                raise ValueError(f"bad PYMPEC_BACKOFF={text!r}: {e}; "
                                 f"expected seconds or fields {', '.join(_FIELDS)}") from None
        return cls(**settings)

    def reset(self) -> None:
        """Note activity: the next polls come quickly again."""
        self._polls = 0
        self._delay = 0.0
        self._active_at = time.monotonic()

    def delay(self) -> float:
        """The next sleep, in seconds; each call advances the backoff."""
        self._polls += 1
        if self._polls <= self.spin:
            return 0.0
        cap = self.max
        if time.monotonic() - self._active_at > self.idle:
            cap = self.idle_max
        self._delay = min(cap, max(self.start, self._delay * 2))
        return self._delay

    def sleep(self) -> None:
        """Sleep for :meth:`delay` seconds (a bare yield of the CPU when it is 0)."""
        delay = self.delay()
        if delay > 0:
            time.sleep(delay)
        else:
            os.sched_yield()   # time.sleep(0) would sleep out the timer slack (~60 us)
