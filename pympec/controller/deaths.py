"""Noticing engines whose processes died, and how they died (fault-tolerant clusters only).

    controller loop, once a second,  ──> Watch.dead()
    and after any MPI call failed          comm.Get_failed(): the ranks this MPI knows are
                                           dead (a local call: no message, no wait)
                                           new ones ──> comm.Ack_failed(): ANY_SOURCE probes
                                                        work again
                                         + kill(pid, 0) of each engine on this host: gone?
                                           ──> [(rank, how it died)]  ──> Dispatcher.died
    how it died: the engine's last words in its log file (pympec.protocol.lastwords)

Only an MPI that lets the other ranks outlive a dead one (Open MPI 5 with ``--with-ft
ulfm``) reports deaths here; elsewhere the MPI job ends with the engine, and clients get
ClusterError (:mod:`pympec.client.session`).
"""
from __future__ import annotations

import logging
import os

from mpi4py import MPI

from ..protocol.lastwords import how_it_died

log = logging.getLogger("pympec.controller")


class Watch:
    """Which ranks of ``comm`` died: those the MPI library's failure detector reports,
    and those on this host whose process is gone (``local``: rank -> pid), which the MPI
    may not report (Open MPI's ULFM misses a process that exits with a code, such as
    ``os._exit(3)``)."""

    def __init__(self, comm: MPI.Comm, cluster_id: str, local: dict[int, int]) -> None:
        self.comm, self.cluster_id, self.local = comm, cluster_id, dict(local)
        self.group = comm.Get_group()
        self.known: set[int] = set()
        self.acked = 0      # failures acknowledged to the MPI
        self.works = True   # False once the MPI said it cannot tell

    def dead(self) -> list[tuple[int, str]]:
        """The ranks newly known dead, each with how it died; never blocks (a local MPI
        call, and a signal 0 to each local engine).  An MPI that cannot tell (no ULFM) is
        logged once, and then never asked again."""
        gone = self.failed() + [rank for rank, pid in self.local.items() if not alive(pid)]
        new = sorted(set(gone) - self.known)
        self.known.update(new)
        return [(rank, how_it_died(self.cluster_id, rank)) for rank in new]

    def failed(self) -> list[int]:
        """The ranks the MPI knows failed; new failures are acknowledged, so that
        ANY_SOURCE receives and probes work again."""
        if not self.works:
            return []
        try:
            failed = self.comm.Get_failed()
        except (MPI.Exception, NotImplementedError) as e:
            log.warning("this MPI cannot report dead ranks (%s): only a dead engine on the "
                        "controller's host will be noticed", e)
            self.works = False
            return []
        try:
            count = failed.Get_size()
            ranks = failed.Translate_ranks(list(range(count)), self.group) if count else []
        finally:
            failed.Free()
        if count > self.acked:
            self.acked = self.comm.Ack_failed(count)
        return [rank for rank in ranks if rank != MPI.UNDEFINED]


def alive(pid: int) -> bool:
    """Whether process ``pid`` (of this host) still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # (another user's: it exists)
        pass
    return True
