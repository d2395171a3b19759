"""What the controller keeps for its clients, within one budget.

    a call finishes, or the  ──keep(owner, id, header,──> kept, under its request id,
    controller answers one      frames, size)              and sent to the owner
    itself (leased ids, fetched task results)
    the owner acknowledges the id ─────────────────────────> released
    a client asks for an id (any connection, any process) ──> sent again: its owner is now
                                                              the asker; or, if released,
                                                              the reason why
    the task farm holds finished tasks ──charge(n) / refund(n)──> the same budget

Everything kept for clients counts against one cap, ``PYMPEC_RESULT_CAP``: frames, reply
headers (execute records and their output) and task results.  Past it, new submissions
are refused with MemoryError (:meth:`check_room`) until clients fetch what they are owed:
memory never grows without bound, and nothing a client waits on is dropped to make room.
What a client left behind is released once it has been gone longer than
``PYMPEC_RESULT_GRACE`` (it may reconnect and fetch it until then), and a result sent
again on ``MAX_SENDS`` reconnects without an acknowledgement is dropped: a client that
cannot take it does not get it again forever.  A released id's reason is remembered (a bounded number
of them), so a late fetch gets a clear error.
"""
from __future__ import annotations

import collections
import logging
import time
from typing import Callable, NamedTuple

from .. import settings

log = logging.getLogger("pympec.controller")

MAX_SENDS = 3            # resends of one result, on reconnects, without an acknowledgement
REMEMBERED = 100_000     # released ids whose reason is kept for late fetches


class Kept(NamedTuple):
    """A finished call's reply, kept until its owner acknowledges it."""

    owner: str
    header: dict
    frames: list
    size: int


class ResultStore:
    """Results kept for clients, by request id (see the module doc)."""

    def __init__(self) -> None:
        self.results: dict[str, Kept] = {}
        self.by_owner: dict[str, dict[str, None]] = collections.defaultdict(dict)
        self.sends: collections.Counter = collections.Counter()
        self.used = 0                # bytes, task results included
        self.charged = 0             # of which the task farm's
        self.cap_override: int | None = None
        self.gone_since: dict[str, float] = {}   # client -> when it disconnected
        self.released: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.on_client_gone: list[Callable[[str], None]] = []

    @property
    def cap(self) -> int:
        return settings.RESULT_CAP.get() if self.cap_override is None else self.cap_override

    def check_room(self) -> None:
        """Raise MemoryError when the store is full: a new call could not be kept."""
        if self.used > self.cap:
            raise MemoryError(
                f"the controller holds {self.used} bytes of results for clients (cap "
                f"{self.cap}, PYMPEC_RESULT_CAP): fetch or clear results (get_result, "
                f"barrier, tc.clear) before submitting more")

    # -- results of direct calls ---------------------------------------------------

    def keep(self, owner: str, header: dict, frames: list, size: int) -> None:
        result_id = header["id"]
        self.release(result_id, "a later result had the same id", remember=False)
        self.results[result_id] = Kept(owner, header, frames, size)
        self.by_owner[owner][result_id] = None
        self.used += size

    def sent(self, result_id: str) -> None:
        """The result went again to its owner, which reconnected; past MAX_SENDS such
        sends it is dropped."""
        self.sends[result_id] += 1
        if self.sends[result_id] > MAX_SENDS:
            log.warning("result %s was sent %d times and never acknowledged: dropped",
                        result_id, MAX_SENDS)
            self.release(result_id, f"it was sent {MAX_SENDS} times and never acknowledged")

    def ack(self, ids: list[str]) -> None:
        for result_id in ids:
            self.release(result_id, "it was fetched and acknowledged")

    def release(self, result_id: str, why: str, remember: bool = True) -> None:
        """Stop keeping a result; remember ``why`` for a late fetch of its id."""
        kept = self.results.pop(result_id, None)
        if kept is None:
            return
        self.by_owner[kept.owner].pop(result_id, None)
        if not self.by_owner[kept.owner]:
            del self.by_owner[kept.owner]
        self.sends.pop(result_id, None)
        self.used -= kept.size
        if remember:
            self.released[result_id] = why
            while len(self.released) > REMEMBERED:
                self.released.popitem(last=False)

    def owned(self, owner: str) -> list[Kept]:
        return [self.results[i] for i in self.by_owner.get(owner, ())]

    def claim(self, result_id: str, client: str) -> Kept | None:
        """The kept result ``result_id``, now owned by ``client`` (who asked for it)."""
        kept = self.results.get(result_id)
        if kept is not None and kept.owner != client:
            self.by_owner[kept.owner].pop(result_id, None)
            kept = self.results[result_id] = kept._replace(owner=client)
            self.by_owner[client][result_id] = None
        return kept

    def why_released(self, result_id: str) -> str | None:
        return self.released.get(result_id)

    # -- the task farm's share -----------------------------------------------------

    def charge(self, nbytes: int) -> None:
        self.used += nbytes
        self.charged += nbytes

    def refund(self, nbytes: int) -> None:
        self.used -= nbytes
        self.charged -= nbytes

    # -- clients coming and going --------------------------------------------------

    def connected(self, client: str) -> None:
        self.gone_since.pop(client, None)

    def disconnected(self, client: str) -> None:
        self.gone_since[client] = time.monotonic()

    def absent(self, client: str) -> None:
        """A result was kept for ``client``, which is not connected: it is gone (since
        now, if it was not known gone), so the result is released after the grace
        period even if the client's grace already ran out before it landed."""
        self.gone_since.setdefault(client, time.monotonic())

    def sweep(self, now: float | None = None) -> None:
        """Release what clients gone longer than the grace period left behind."""
        if not self.gone_since:
            return
        now = time.monotonic() if now is None else now
        grace = settings.RESULT_GRACE.get()
        for client in [c for c, t in self.gone_since.items() if now - t > grace]:
            del self.gone_since[client]
            ids = list(self.by_owner.get(client, ()))
            for result_id in ids:
                self.release(result_id, f"its client was gone longer than {grace:g} s "
                                        f"(PYMPEC_RESULT_GRACE)")
            for gone in self.on_client_gone:
                gone(client)
            if ids:
                log.info("released %d results of client %s, gone %.0f s", len(ids), client,
                         grace)

    def summary(self) -> dict:
        """What the store holds, for ``cluster status``."""
        return {"bytes": self.used, "cap": self.cap, "results": len(self.results),
                "task_bytes": self.charged,
                "clients": {c: len(ids) for c, ids in self.by_owner.items()},
                "clients_gone": len(self.gone_since)}
