"""Controller side of the task farm: one load-balanced queue shared by all engines.

    client (pympec.client.taskclient)      TaskQueue (in the controller loop)          engines
    ------------------------------------------------------------------------------------
    task_submit {tasks: [spec]}  -> ids 0, 1, 2...; each task queued:
      + each task's frames            ``ready`` (FIFO) or ``held`` (depend, retries:
                                      tasks some engines must not take)
                                    dispatch(): an engine with nothing queued for it
                                      directly and fewer than ``window`` batches in
                                      flight gets the next batch it may run     --->  task_batch
                                    on_reply(): per task ok / error / rejected  <---  one reply
                                      rejected -> back in ``held``, not for that engine
                                      error -> retry elsewhere, recovery task, or done
                                      done -> result held until fetched or cleared
    task_fetch {ids|mine, wait}  <- finished results, many per message (a fetch with
                                      nothing ready waits up to ``wait`` seconds)
    task_abort / task_clear / task_status / task_config: answered at once

The controller never unpickles: specs are JSON and the frames travel as bytes, so
``depend`` runs on the engine, which answers "rejected".  Direct (MultiEngineClient)
commands keep priority and FIFO order: an engine with a direct command queued gets no
new batch, and the command starts once its batches in flight are done.

Batches adapt to the measured task time: while tasks are short (under ``SHORT``
seconds) an engine gets up to ``MAX_BATCH`` tasks per message and two messages in flight,
so it never waits on a round trip; long tasks go one at a time, for the best balance.

A task whose ``depend`` every engine has rejected is offered again every ``PENALTY``
seconds (properties may change) and fails with TaskTimeout after its ``timeout``.
The results held are bounded: past ``cap`` bytes, new submissions fail with MemoryError.
"""
from __future__ import annotations

import bisect
import collections
import logging
import time
from typing import Any

from ..errors import KernelError
from .. import settings

log = logging.getLogger("pympec.controller.tasks")

QUEUED, RUNNING, OK, FAILED, CLEARED = 1, 2, 3, 4, 5
PENALTY = 1.0          # seconds an engine waits before it may retry a task it failed
SHORT = 0.005          # tasks shorter than this (on average) are batched
MAX_BATCH = 256
MAX_FETCH = 20000      # results per fetch reply


class Task:
    """One submitted task as the controller sees it: JSON spec and frames (bytes)."""

    __slots__ = ("id", "client", "spec", "frames", "recovery", "retries", "state",
                 "rejected", "avoid", "stuck_since", "offered", "submitted", "abort",
                 "timeout")

    def __init__(self, tid: int, client: str, spec: dict, frames: list,
                 recovery: tuple[dict, list] | None, submitted: float) -> None:
        self.id = tid
        self.client = client
        self.spec = spec
        self.frames = frames
        self.recovery = recovery
        self.retries = int(spec.get("retries") or 0)
        self.state = QUEUED
        self.rejected: set[int] = set()          # engines whose depend said no
        self.avoid: dict[int, float] = {}        # engine -> when it may retry this task
        self.stuck_since: float | None = None    # every engine rejected it, since then
        self.offered = 0.0
        self.submitted = submitted
        self.abort = False
        self.timeout = float(spec.get("timeout") or 30.0)

    def constrained(self) -> bool:
        return bool(self.spec.get("depend") or self.avoid or self.rejected)

    def may_run_on(self, engine_id: int, now: float) -> bool:
        return engine_id not in self.rejected and self.avoid.get(engine_id, 0.0) <= now

    def __lt__(self, other: "Task") -> bool:
        return self.id < other.id


class InFlight:
    """Stands in ``Engine.running`` while an engine has task batches: the controller's
    own dispatch then leaves the engine alone, and status shows what it runs."""

    def __init__(self) -> None:
        self.batches: dict[int, list[Task]] = {}

    @property
    def describe(self) -> str:
        ids = [t.id for batch in self.batches.values() for t in batch]
        shown = ", ".join(map(str, ids[:5])) + (", ..." if len(ids) > 5 else "")
        return f"task({shown})"


class TaskQueue:
    """The task farm of one controller (``controller.tasks``)."""

    def __init__(self, controller: Any) -> None:
        self.c = controller
        self.next_id = 0
        self.state = bytearray()                 # per task id, QUEUED..CLEARED
        self.live: dict[int, Task] = {}          # queued or running
        self.ready: collections.deque[Task] = collections.deque()
        self.held: list[Task] = []               # constrained tasks, by id
        self.done: dict[int, tuple[dict, list]] = {}   # results held, by id
        self.unfetched: dict[str, dict[int, None]] = collections.defaultdict(dict)
        self.held_bytes = 0
        self.cap = settings.TASK_RESULT_CAP.get()
        self.parked: list[tuple[str, str, list | None, float]] = []
        self.avg: float | None = None            # mean task run time, moving
        self.batch_seq = 0
        self.flights: dict[int, InFlight] = {}
        self.last_check = 0.0

    # -- requests from clients ---------------------------------------------------------

    def handle(self, conn: Any, message: Any) -> None:
        """Answer a ``task_*`` request; a bad one gets an error reply naming the
        exception (IndexError, KeyError, MemoryError, ...), rebuilt on the client."""
        try:
            self._handle(conn, message)
        except Exception as e:
            self.c.send(conn, {"id": message.header.get("id"), "error": {
                "ename": type(e).__name__, "evalue": str(e)}})

    def _handle(self, conn: Any, message: Any) -> None:
        request = message.header
        verb = request["verb"]
        if verb == "task_submit":
            value = self.submit(conn.client, request, message.frames)
        elif verb == "task_fetch":
            self.fetch(conn.client, request)
            return
        elif verb == "task_abort":
            value = self.abort(request["tid"])
        elif verb == "task_clear":
            value = self.clear(request.get("ids"), request.get("forget") or [])
        elif verb == "task_status":
            value = self.status(bool(request.get("verbose")))
        elif verb == "task_config":
            if request.get("result_cap") is not None:
                self.cap = int(request["result_cap"])
            value = {"result_cap": self.cap, "held_bytes": self.held_bytes}
        else:
            raise ValueError(f"unknown task request {verb!r}")
        self.c.send(conn, {"id": request["id"], "value": value})

    def submit(self, client: str, request: dict, frames: list) -> list[int]:
        """Queue the request's tasks; returns [first id, count]."""
        if self.held_bytes > self.cap:
            raise MemoryError(
                f"the controller holds {self.held_bytes} bytes of task results nobody has "
                f"fetched (cap {self.cap}); fetch them (get_task_result, barrier) or "
                f"clear() them before submitting more")
        specs = request["tasks"]
        first = self.next_id
        now = time.time()
        i = 0
        for spec in specs:
            mine = frames[i:i + spec["n"]]
            i += spec["n"]
            recovery = None
            if spec.get("recovery"):
                rspec = spec.pop("recovery")
                recovery = (rspec, frames[i:i + rspec["n"]])
                i += rspec["n"]
            if i > len(frames):
                raise ValueError("task specs name more frames than the message has")
            task = Task(self.next_id, client, spec, mine, recovery, now)
            self.next_id += 1
            self.state.append(QUEUED)
            self.live[task.id] = task
            self.enqueue(task)
        return [first, len(specs)]

    def enqueue(self, task: Task) -> None:
        task.state = QUEUED
        self.state[task.id] = QUEUED
        if task.constrained():
            bisect.insort(self.held, task)
        else:
            self.ready.append(task)

    def fetch(self, client: str, request: dict) -> None:
        """Reply with finished results (``ids``, or all of this client's); with none
        ready and ``wait`` > 0, park the request until some are or it expires."""
        ids = request.get("ids")
        if ids is not None:
            for tid in ids:
                self.check_known(tid)
        infos, frames, owners = self.collect(client, ids)
        wait = float(request.get("wait") or 0)
        if infos or wait <= 0:
            self.answer(client, request["id"], infos, frames, owners)
        else:
            self.parked.append((client, request["id"], ids, time.monotonic() + wait))

    def check_known(self, tid: Any) -> None:
        if not isinstance(tid, int) or tid < 0 or tid >= self.next_id:
            raise IndexError(f"task ID not registered: {tid!r}")
        if self.state[tid] == CLEARED:
            raise IndexError(f"task {tid}'s result was cleared")
        if self.state[tid] in (OK, FAILED) and tid not in self.done:
            raise KernelError(f"task {tid}'s result was already fetched by the client "
                              f"that submitted it")

    def collect(self, client: str, ids: list | None) -> tuple[list, list, list]:
        """Take finished results out of the store (they are the client's now)."""
        wanted = list(self.unfetched.get(client, ())) if ids is None else \
            [t for t in ids if t in self.done]
        infos, frames, owners = [], [], []
        for tid in wanted[:MAX_FETCH]:
            info, more = self.done.pop(tid)
            owner = info.pop("owner")       # not sent: the client knows who it is
            self.unfetched[owner].pop(tid, None)
            self.held_bytes -= sum(len(f) for f in more)
            infos.append(info)
            owners.append(owner)
            frames.extend(more)
        return infos, frames, owners

    def answer(self, client: str, request_id: str, infos: list, frames: list,
               owners: list) -> None:
        conn = self.c.clients.get(client)
        if conn is None:   # the client went away: put the results back for its return
            for info, owner in zip(infos, owners):
                info["owner"] = owner
                self.store(info, frames[:info["nframes"]])
                frames = frames[info["nframes"]:]
            return
        self.c.send(conn, {"id": request_id, "value": {"tasks": infos, "packed": True}},
                    pack(infos, frames))

    def answer_parked(self, now: float) -> None:
        parked, self.parked = self.parked, []
        for client, request_id, ids, deadline in parked:
            if client not in self.c.clients:
                continue
            infos, frames, owners = self.collect(client, ids)
            if infos or now >= deadline:
                self.answer(client, request_id, infos, frames, owners)
            else:
                self.parked.append((client, request_id, ids, deadline))

    def abort(self, tid: Any) -> None:
        if not isinstance(tid, int):
            raise TypeError(f"task ids are int, not {type(tid).__name__}")
        if tid < 0 or tid >= self.next_id:
            raise IndexError(f"task ID not registered: {tid}")
        task = self.live.get(tid)
        if task is None:
            done = self.done.get(tid)
            if done is not None and done[0].get("ename") == "TaskAborted":
                raise IndexError("Task Already Aborted")
            raise IndexError("Task Already Completed")
        if task.abort:
            raise IndexError("Task Already Aborted")
        task.abort = True
        if task.state == QUEUED:   # lazily dropped from its queue by dispatch
            self.finish(task, self.failure(task, "TaskAborted", f"task {tid} was aborted"))

    def clear(self, ids: list | None, forget: list = ()) -> int:
        """Drop held results (all, or ``ids``); returns how many, counting the
        ``forget`` ids: results a client fetched and now drops."""
        forgotten = 0
        for tid in forget:
            if isinstance(tid, int) and 0 <= tid < self.next_id and \
                    self.state[tid] in (OK, FAILED) and tid not in self.done:
                self.state[tid] = CLEARED
                forgotten += 1
        if ids is None:
            ids = list(self.done)
        else:
            missing = [t for t in ids if t not in self.done]
            if missing:
                raise KeyError(f"no finished result held for task {missing[0]!r}")
        for tid in ids:
            info, more = self.done.pop(tid)
            self.unfetched[info["owner"]].pop(tid, None)
            self.held_bytes -= sum(len(f) for f in more)
            self.state[tid] = CLEARED
        return len(ids) + forgotten

    def status(self, verbose: bool) -> dict:
        if not verbose:   # counted in C, over one byte per task id
            return {"pending": self.state.count(RUNNING), "scheduled": self.state.count(QUEUED),
                    "succeeded": self.state.count(OK), "failed": self.state.count(FAILED)}
        groups: dict[str, list[int]] = {"pending": [], "scheduled": [], "succeeded": [],
                                        "failed": []}
        names = {QUEUED: "scheduled", RUNNING: "pending", OK: "succeeded", FAILED: "failed"}
        for tid, s in enumerate(self.state):
            if s in names:
                groups[names[s]].append(tid)
        return groups if verbose else {k: len(v) for k, v in groups.items()}

    # -- engines -----------------------------------------------------------------------

    def dispatch(self) -> bool:
        """Send batches to engines that may take them; True if any was sent."""
        now = time.monotonic()
        if self.parked:
            self.answer_parked(now)
        if self.held and now - self.last_check > 0.05:
            self.last_check = now
            self.check_held(now)
        if not self.ready and not self.held:
            return False
        sent = False
        for engine in list(self.c.engines.values()):
            if engine.queue or (engine.running is not None
                                and not isinstance(engine.running, InFlight)):
                continue
            flight = self.flights.get(engine.id)
            if flight is not None and len(flight.batches) >= self.window():
                continue
            batch = self.take(engine.id, now)
            if batch:
                self.send_batch(engine, batch)
                sent = True
            if not self.ready and not self.held:
                break
        return sent

    def window(self) -> int:
        return 2 if self.avg is not None and self.avg < SHORT else 1

    def batch_size(self) -> int:
        if self.avg is None or self.avg >= SHORT:
            return 1
        spread = -(-len(self.ready) // (2 * max(1, len(self.c.engines))))
        return max(1, min(MAX_BATCH, int(SHORT / max(self.avg, 1e-7)), spread))

    def take(self, engine_id: int, now: float) -> list[Task]:
        """The next tasks ``engine_id`` may run: held ones first (they are older or
        were pushed back), then the ready queue."""
        size = self.batch_size()
        batch: list[Task] = []
        if self.held:
            keep = []
            for task in self.held:
                if task.state != QUEUED:
                    continue
                if len(batch) < size and task.may_run_on(engine_id, now):
                    batch.append(task)
                else:
                    keep.append(task)
            self.held = keep
        while self.ready and len(batch) < size:
            task = self.ready.popleft()
            if task.state == QUEUED:
                batch.append(task)
        return batch

    def check_held(self, now: float) -> None:
        """Time out tasks no engine accepts; re-offer them every PENALTY seconds."""
        engines = set(self.c.engines)
        for task in list(self.held):
            if task.state != QUEUED or not task.rejected:
                continue
            if engines <= task.rejected:
                if task.stuck_since is None:
                    task.stuck_since = now
                if now - task.stuck_since > task.timeout:
                    self.held.remove(task)
                    self.finish(task, self.failure(
                        task, "TaskTimeout",
                        f"no engine accepted task {task.id} within {task.timeout:g} s: its "
                        f"depend() was false on every engine {sorted(engines)}"))
                elif now - task.offered > PENALTY:
                    task.rejected.clear()   # properties may have changed: ask again

    def send_batch(self, engine: Any, batch: list[Task]) -> None:
        self.batch_seq += 1
        specs, parts = [], []
        for task in batch:
            task.state = RUNNING
            self.state[task.id] = RUNNING
            specs.append({**task.spec, "tid": task.id, "n": len(task.frames)})
            parts.extend(task.frames)
        flight = self.flights.setdefault(engine.id, InFlight())
        flight.batches[self.batch_seq] = batch
        engine.running = flight
        header = {"job": self.batch_seq, "verb": "task_batch", "args": {"tasks": specs},
                  "reply": "p2p"}
        if not parts:
            self.c.dispatcher.send_command(engine.rank, header)
            return
        offsets, at = [], 0
        for p in parts:
            offsets.append([at, len(p)])
            at += len(p)
        self.c.dispatcher.send_command(engine.rank, header, memoryview(b"".join(parts)),
                                       offsets)

    def settle(self, engine: Any, reply: dict, buf: memoryview | None) -> None:
        """A batch's reply and its packed results are here: record each task's outcome."""
        flight = self.flights[engine.id]
        batch = {t.id: t for t in flight.batches.pop(reply["job"])}
        if not flight.batches:
            del self.flights[engine.id]
            if engine.running is flight:
                engine.running = None
        view = memoryview(buf) if buf is not None else memoryview(b"")
        now = time.monotonic()
        for info in reply["tasks"]:
            task = batch[info.pop("tid")]
            status = info["status"]
            if status == "rejected":
                task.rejected.add(engine.id)
                task.offered = now
                if task.abort:
                    self.finish(task, self.failure(task, "TaskAborted",
                                                   f"task {task.id} was aborted"))
                else:
                    self.enqueue(task)
                continue
            task.stuck_since = None
            run_time = info["completed"] - info["started"]
            self.avg = run_time if self.avg is None else 0.8 * self.avg + 0.2 * run_time
            start, length = info.pop("span")
            frames = [view[start:start + length]] if length else []
            info["engine"] = engine.id
            if task.abort:
                self.finish(task, self.failure(task, "TaskAborted",
                                               f"task {task.id} was aborted", info))
            elif status == "ok":
                self.finish(task, (info, frames))
            elif task.retries > 0:
                task.retries -= 1
                task.avoid[engine.id] = now + PENALTY
                self.enqueue(task)
            elif task.recovery is not None:
                task.spec, task.frames = task.recovery
                task.recovery = None
                task.retries = int(task.spec.get("retries") or 0)
                task.avoid.clear()
                task.rejected.clear()
                self.enqueue(task)
            else:
                self.finish(task, (info, frames))
        if self.parked:
            self.answer_parked(time.monotonic())

    # -- results -----------------------------------------------------------------------

    def failure(self, task: Task, ename: str, evalue: str,
                info: dict | None = None) -> tuple[dict, list]:
        info = dict(info or {})
        info.update(status="error", ename=ename, evalue=evalue, traceback="")
        info.pop("meta", None)
        return info, []

    def finish(self, task: Task, result: tuple[dict, list]) -> None:
        info, frames = result
        info.update(tid=task.id, kind=task.spec.get("kind"), owner=task.client,
                    submitted=task.submitted)
        del self.live[task.id]
        task.state = OK if info["status"] == "ok" else FAILED
        self.state[task.id] = task.state
        self.store(info, frames)

    def store(self, info: dict, frames: list) -> None:
        info["nframes"] = len(frames)
        self.done[info["tid"]] = (info, frames)
        self.unfetched[info["owner"]][info["tid"]] = None
        self.held_bytes += sum(len(f) for f in frames)


PACK_LIMIT = 1 << 16   # results smaller than this travel packed together in one frame


def pack(infos: list, frames: list) -> list:
    """The frames of a fetch reply: small one-frame results joined into a first frame
    (their ``span`` in it, ``nframes`` 0), then the other results' frames."""
    packed, rest, i = [], [], 0
    at = 0
    for info in infos:
        mine = frames[i:i + info["nframes"]]
        i += info["nframes"]
        if len(mine) == 1 and len(mine[0]) < PACK_LIMIT:
            info["span"] = [at, len(mine[0])]
            info["nframes"] = 0
            at += len(mine[0])
            packed.append(mine[0])
        else:
            rest.extend(mine)
    return [b"".join(packed), *rest]
