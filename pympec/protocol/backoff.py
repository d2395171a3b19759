"""Backoff: how long an idle rank sleeps between polls.

MPI implementations busy-wait inside blocking calls, and the machines pympec runs on are
often oversubscribed, so every rank polls instead (``Iprobe``/``Test``, or ``select`` on the
controller) and sleeps between polls.  A Backoff says how long:

* for ``spin`` seconds after activity, polls with no sleep at all (each yields the CPU
  to any rank that has work), so a hot client sees low latency;
* then sleeps that double from ``start`` up to ``max`` (default 1 ms);
* after ``idle`` seconds without activity, sleeps that keep doubling up to ``idle_max``
  (default 20 ms), so an idle cluster costs next to nothing.

The spin is a time, not a count of polls: a sleep shorter than the kernel's timer slack
(about 50 us) lasts the slack anyway, so short waits are best spent polling.

``PYMPEC_BACKOFF`` tunes it: a number sets ``max`` in seconds (``PYMPEC_BACKOFF=0.002``),
or give fields by name: ``PYMPEC_BACKOFF="max=0.001,idle=2,idle_max=0.05,spin=0.0005"``
(parsed by :data:`pympec.settings.BACKOFF`).
"""
from __future__ import annotations

import os
import time
from typing import Callable

from .. import settings

# The limits for a rank whose peers ring its doorbell (pympec.protocol.doorbell) whenever they send
# it work: its sleeps only guard against a lost ring, so they can be long (idle, it wakes
# five times a second).
RUNG = {"max": 0.05, "idle_max": 0.2}


class Backoff:
    """Exponential sleep backoff between polls; call :meth:`reset` on activity.

    ``clock`` gives the time in seconds (``time.monotonic``; tests pass a fake one).
    Raises ValueError unless every field is a finite number >= 0.
    """

    def __init__(self, *, spin: float = 2e-4, start: float = 5e-5, max: float = 1e-3,
                 idle: float = 1.0, idle_max: float = 0.02,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.spin = float(spin)
        self.start = float(start)
        self.max = float(max)
        self.idle = float(idle)
        self.idle_max = float(idle_max)
        for name in settings.BACKOFF_FIELDS:
            value = getattr(self, name)
            if not 0 <= value < float("inf"):   # also rejects NaN
                raise ValueError(f"backoff {name} must be a finite number >= 0, not {value}")
        self.reset()

    @classmethod
    def from_env(cls, **defaults: float) -> "Backoff":
        """A Backoff with ``defaults`` overridden by ``$PYMPEC_BACKOFF`` (see module doc).

        Raises SettingError (a ValueError) naming a bad value.
        """
        return cls(**{**defaults, **settings.BACKOFF.get()})

    def reset(self, spin: float | None = None) -> None:
        """Note activity: polls come quickly again, without sleeping for ``spin`` seconds
        (None: this Backoff's own ``spin``; 0 for a rank that something else will wake)."""
        self._delay = 0.0
        self._active_at = self.clock()
        self._spin_until = self._active_at + (self.spin if spin is None else spin)

    def delay(self) -> float:
        """The next sleep, in seconds; each call advances the backoff."""
        now = self.clock()
        if now < self._spin_until:
            return 0.0
        cap = self.max
        if now - self._active_at > self.idle:
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
