"""Interrupting the code an engine runs, without queueing behind it.

    controller ──{"job": seq, "task": tid?} on the control communicator──> this engine's
    listener thread, asleep on a bell of its own (rung by a controller on this host;
    otherwise it looks every POLL seconds): the engine runs that job (and that task)?
        yes ──> SIGINT to the main thread ──> KeyboardInterrupt in the user's code,
                which returns as the call's error; the namespace is untouched
        no  ──> it is kept (the last KEPT of them): a job the controller sent ahead
                may not have started yet, and raises KeyboardInterrupt as it starts
    controller ──{"job": seq, "off": why}──> kept the same way, never a signal: the job
        is called off (clear_queue) and raises QueueCleared(why) if it has not started
    controller ──{"revoked": key}──> the listener adds key to REVOKED: a member of that
        collective died (fault-tolerant clusters), and the main thread stops waiting
        in it (pympec.engine.loop)

The main thread's SIGINT handler raises only while user code runs (:data:`GUARD`); in
pympec's own code, and for a stray SIGINT (mpiexec forwards a terminal's Ctrl-C to every
rank), it does nothing.  A signal interrupts Python code and blocking system calls
(``time.sleep``), not a C extension that ignores signals.  MPI receives block in C, so
user code gets ``comm``, a :class:`UserComm` whose blocking receives and probes poll
(without spinning) and can be interrupted.  Other blocking MPI calls cannot: the way
out of those is to kill the engine.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import signal
import threading
import time
from typing import Any, Callable, Iterator

from mpi4py import MPI

from ..errors import QueueCleared
from ..protocol.doorbell import Doorbell
from ..protocol.mpiwire import CONTROLLER, INTERRUPT_BELL, TAG_INTERRUPT, recv_header

log = logging.getLogger("pympec.engine")

POLL = 0.25      # seconds between the listener's looks, where no bell reaches it
RUNG_POLL = 0.1  # seconds it keeps looking after a ring


class Guard:
    """What the main thread runs now: the job's id, and the task's, while user code
    runs; the listener reads it to decide whether an interrupt is for that code."""

    def __init__(self) -> None:
        self.job: int | None = None
        self.task: int | None = None

    @contextlib.contextmanager
    def running(self, job: int | None = None, task: int | None = None) -> Iterator[None]:
        """User code of ``job`` (a task of it) runs within this block."""
        saved = self.job, self.task
        self.job = job if job is not None else self.job
        self.task = task
        try:
            yield
        finally:
            self.job, self.task = saved

    def matches(self, order: dict) -> bool:
        return self.job is not None and order.get("job") == self.job and \
            order.get("task", self.task) == self.task


GUARD = Guard()
REVOKED: set[str] = set()   # keys of collective communicators a member died in
KEPT = 1024
CALLED_OFF: collections.OrderedDict[int, dict] = collections.OrderedDict()
# (orders for jobs, oldest first: the last KEPT)


def check_called_off(job: int) -> None:
    """Raise what an order for ``job`` asked before it started (then it is forgotten):
    QueueCleared when it was called off, else KeyboardInterrupt."""
    order = CALLED_OFF.pop(job, None)
    if order is not None and "off" in order:
        raise QueueCleared(order["off"])
    if order is not None:
        raise KeyboardInterrupt("interrupted before it started")


def on_sigint(signum: int, frame: Any) -> None:
    """Raise KeyboardInterrupt in user code; ignore the signal anywhere else."""
    if GUARD.job is not None:
        raise KeyboardInterrupt


class Listener(threading.Thread):
    """The thread that takes interrupt orders from the controller (see the module
    doc).  It ends on a ``{"stop": true}`` order, which the controller sends at
    shutdown."""

    def __init__(self, control: MPI.Comm, bell: Doorbell) -> None:
        super().__init__(name="pympec-interrupts", daemon=True)
        self.control, self.bell = control, bell
        self.main = threading.main_thread().ident

    def run(self) -> None:
        status = MPI.Status()
        while True:
            # after a ring, the order may take a few polls to show (see the doorbell)
            rung_until = time.monotonic() + RUNG_POLL if self.bell.wait(POLL) else 0.0
            while not self.control.Iprobe(CONTROLLER, TAG_INTERRUPT, status):
                if time.monotonic() > rung_until:
                    break
                time.sleep(1e-3)
            else:
                order = recv_header(self.control, status)[0]
                if order.get("stop"):
                    return
                if "revoked" in order:   # a member of that collective died
                    REVOKED.add(order["revoked"])
                    continue
                if "task" not in order:   # first kept, then matched: the main thread
                    CALLED_OFF[order["job"]] = order   # sets GUARD before it looks here
                    while len(CALLED_OFF) > KEPT:
                        CALLED_OFF.popitem(last=False)
                if "off" not in order and GUARD.matches(order):
                    log.info("interrupting job %s", order.get("job"))
                    signal.pthread_kill(self.main, signal.SIGINT)


def start(control: MPI.Comm, cluster_id: str) -> Listener:
    """Install the SIGINT handler and start the listener (engine ranks only)."""
    signal.signal(signal.SIGINT, on_sigint)
    listener = Listener(control, Doorbell(cluster_id, control.Get_rank(), INTERRUPT_BELL))
    listener.start()
    return listener


# -- user code's communicator -----------------------------------------------------

SPIN = 1e-3          # seconds a blocked receive polls before it sleeps between polls
SLEEP_MAX = 1e-3     # the longest of those sleeps: the latency a waiting receive adds


def _until(poll: Callable[[], Any]) -> Any:
    """Call ``poll`` until it returns something other than None (or False): spinning
    for SPIN seconds, then sleeping up to SLEEP_MAX between calls, so the wait costs
    little CPU, and a signal can interrupt it."""
    spin_until = time.monotonic() + SPIN
    delay = 1e-5
    while True:
        found = poll()
        if found is not None and found is not False:
            return found
        if time.monotonic() > spin_until:
            time.sleep(delay)
            delay = min(2 * delay, SLEEP_MAX)


class UserComm(MPI.Intracomm):
    """The engines' communicator, as user code gets it (``comm``): the same MPI
    communicator, whose blocking receives and probes (``recv``, ``Recv``, ``probe``,
    ``Probe``) can be interrupted, and sleep instead of spinning while they wait."""

    def recv(self, buf: Any = None, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG,
             status: MPI.Status | None = None) -> Any:
        return _until(lambda: self.improbe(source, tag, status)).recv(status)

    def Recv(self, buf: Any, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG,
             status: MPI.Status | None = None) -> None:
        _until(lambda: self.Improbe(source, tag, status)).Recv(buf, status)

    def probe(self, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG,
              status: MPI.Status | None = None) -> bool:
        return _until(lambda: self.iprobe(source, tag, status))

    def Probe(self, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG,
              status: MPI.Status | None = None) -> bool:
        return _until(lambda: self.Iprobe(source, tag, status))
