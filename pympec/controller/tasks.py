"""Controller side of the task farm: one load-balanced queue shared by all engines.

    client (pympec.client.taskclient)  TaskFarm (in the controller loop)       engines
    ------------------------------------------------------------------------------------
    task_submit {tasks: [spec]}  -> ids 0, 1, 2...; each task queued:
      + each task's frames            ``ready`` (FIFO) or ``held`` (depend, retries:
                                      tasks some engines must not take)
                                    dispatch(): an engine with nothing queued for it
                                      directly and fewer than ``window`` batches in
                                      flight gets the next batch it may run     --->  task_batch
                                    settle(): per task ok / error / rejected    <---  one reply
                                      rejected -> back in ``held``, not for that engine
                                      error -> retry elsewhere, recovery task, or done
                                      done -> result held until fetched or cleared
    task_fetch {ids|mine, wait}  <- finished results, many per message (a fetch with
                                      nothing ready waits up to ``wait`` seconds)
    task_abort / task_clear / task_status / task_config: answered at once

The farm owns the tasks; it reaches the rest of the controller through two small
ports: the dispatcher's ``task_slots()`` / ``send_batch()`` (which engines may take a
batch, and sending one), and ``reply(client, request id, value, frames)``, which says
whether the client is connected.  A task's state is kept once, in ``states``.

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
from typing import Any, Callable, NamedTuple

from ..errors import KernelError
from .engines import Dispatcher
from .request import LATER, Request
from .store import ResultStore

log = logging.getLogger("pympec.controller.tasks")

QUEUED, RUNNING, OK, FAILED, CLEARED, LEASED = 1, 2, 3, 4, 5, 6
PENALTY = 1.0          # seconds an engine waits before it may retry a task it failed
SHORT = 0.005          # tasks shorter than this (on average) are batched
MAX_BATCH = 256
MAX_FETCH = 20000      # results per fetch reply
Reply = Callable[[str, Any, Any, list], bool]   # (client, request id, value, frames)


class Task:
    """One submitted task as the controller sees it: JSON spec and frames (bytes).
    Its state is the farm's ``states[id]``."""

    __slots__ = ("id", "client", "spec", "frames", "recovery", "retries", "rejected",
                 "avoid", "stuck_since", "offered", "submitted", "timeout", "losses")

    def __init__(self, tid: int, client: str, spec: dict, frames: list,
                 recovery: Recovery | None, submitted: float) -> None:
        self.id = tid
        self.client = client
        self.spec = spec
        self.frames = frames
        self.recovery = recovery
        self.retries = int(spec.get("retries") or 0)
        self.rejected: set[int] = set()          # engines whose depend said no
        self.avoid: dict[int, float] = {}        # engine -> when it may retry this task
        self.stuck_since: float | None = None    # every engine rejected it, since then
        self.offered = 0.0
        self.submitted = submitted
        self.timeout = float(spec.get("timeout") or 30.0)
        self.losses = 0                          # engines lost while it ran there

    def constrained(self) -> bool:
        return bool(self.spec.get("depend") or self.avoid or self.rejected)

    def may_run_on(self, engine_id: int, now: float) -> bool:
        return engine_id not in self.rejected and self.avoid.get(engine_id, 0.0) <= now

    def __lt__(self, other: "Task") -> bool:
        return self.id < other.id


class Recovery(NamedTuple):
    """The task to run, under the same id, once all retries failed (its frames hold
    those of its own recovery task, if it has one)."""

    spec: dict
    frames: list


def _frames_of(spec: dict) -> int:
    """How many frames a task spec takes, its recovery tasks' included."""
    recovery = spec.get("recovery")
    return spec["n"] + (_frames_of(recovery) if recovery else 0)


def _split(spec: dict, frames: list) -> tuple[dict, list, Recovery | None]:
    """A task's own spec and frames, and its recovery task's."""
    recovery = spec.get("recovery")
    if not recovery:
        return spec, frames, None
    own = {k: v for k, v in spec.items() if k != "recovery"}
    return own, frames[:spec["n"]], Recovery(recovery, frames[spec["n"]:])


class Result(NamedTuple):
    """A finished task's outcome, held until its client fetches it."""

    info: dict
    frames: list


class ParkedFetch(NamedTuple):
    """A fetch that found nothing ready, answered once something is, or at ``deadline``."""

    client: str
    request_id: str
    ids: list | None
    deadline: float


class TaskFarm:
    """The task farm of one controller."""

    def __init__(self, dispatcher: Dispatcher, store: ResultStore, reply: Reply) -> None:
        self.dispatcher = dispatcher
        self.store = store            # finished tasks count against its budget
        store.on_client_gone.append(self.forget_client)
        self.reply = reply
        self.next_id = 0
        self.states = bytearray()                # per task id, QUEUED..CLEARED
        self.live: dict[int, Task] = {}          # queued or running
        self.running_on: dict[int, tuple[int, int]] = {}   # task -> (engine, batch)
        self.leases: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
        self.ready: collections.deque[Task] = collections.deque()
        self.held: list[Task] = []               # constrained tasks, by id
        self.done: dict[int, Result] = {}        # results held, by id
        self.unfetched: dict[str, dict[int, None]] = collections.defaultdict(dict)
        self.parked: list[ParkedFetch] = []
        self.avg: float | None = None            # mean task run time, moving
        self.last_check = 0.0

    # -- requests from clients (pympec.protocol.commands checked them) --------------

    def handlers(self) -> dict[str, Callable[[Request], Any]]:
        """The ``task_*`` verbs this farm answers: ``handler(request)`` returns the
        value to reply with, or LATER when it replies itself."""
        return {"task_submit": self.submit, "task_fetch": self.fetch,
                "task_abort": lambda r: self.abort(r.header["tid"]),
                "task_clear": lambda r: self.clear(r.header.get("ids"),
                                                   r.header.get("forget") or []),
                "task_status": lambda r: self.status(bool(r.header.get("verbose"))),
                "task_lease": lambda r: self.lease(r.client, r.header["count"]),
                "task_config": lambda r: self.configure(r.header.get("result_cap"))}

    def lease(self, client: str, count: int) -> list[int]:
        """Reserve ``count`` task ids for ``client``, which numbers its tasks itself and
        submits them without waiting for ids; returns [first id, count]."""
        first = self.next_id
        self.next_id += count
        self.states.extend(bytes([LEASED]) * count)
        self.leases[client].append((first, first + count))
        return [first, count]

    def submit(self, request: Request) -> list[int]:
        """Queue the request's tasks, numbered from ``first`` (ids the client leased) or
        from the next free id; returns [first id, count].  Raises MemoryError past the
        result cap, ValueError for ids not leased to this client or frames missing."""
        client, frames, header = request.client, request.frames, request.header
        self.store.check_room()
        specs = header["tasks"]
        if sum(_frames_of(spec) for spec in specs) > len(frames):
            raise ValueError("task specs name more frames than the message has")
        first = self.leased(client, header["first"], len(specs)) if "first" in header \
            else self.lease(client, len(specs))[0]
        now, i = time.time(), 0
        for tid, spec in enumerate(specs, first):
            n = _frames_of(spec)
            spec, mine, recovery = _split(spec, frames[i:i + n])
            i += n
            task = Task(tid, client, spec, mine, recovery, now)
            self.live[tid] = task
            self.enqueue(task)
        return [first, len(specs)]

    def leased(self, client: str, first: int, count: int) -> int:
        """``first``, once ids first..first+count-1 are checked: leased to ``client``
        and not submitted yet."""
        end = first + count
        if not any(a <= first and end <= b for a, b in self.leases.get(client, ())) \
                or self.states[first:end] != bytes([LEASED]) * count:
            raise ValueError(f"task ids {first}..{end - 1} were not leased to this client, "
                             f"or are taken")
        return first

    def enqueue(self, task: Task) -> None:
        self.states[task.id] = QUEUED
        if task.constrained():
            bisect.insort(self.held, task)
        else:
            self.ready.append(task)

    def fetch(self, request: Request) -> Any:
        """Reply with finished results (``ids``, or all of this client's); with none
        ready and ``wait`` > 0, park the request until some are or it expires."""
        client, header = request.client, request.header
        ids = header.get("ids")
        if ids is not None:
            for tid in ids:
                self.check_known(tid)
        infos, out, owners = self.collect(client, ids)
        wait = float(header.get("wait") or 0)
        if infos or wait <= 0:
            self.answer(client, header["id"], infos, out, owners)
        else:
            self.parked.append(ParkedFetch(client, header["id"], ids,
                                           time.monotonic() + wait))
        return LATER

    def check_known(self, tid: int) -> None:
        if tid < 0 or tid >= self.next_id:
            raise IndexError(f"task ID not registered: {tid!r}")
        # (a LEASED id is a task on its way from its client: as good as queued)
        if self.states[tid] == CLEARED:
            raise IndexError(f"task {tid}'s result was cleared")
        if self.states[tid] in (OK, FAILED) and tid not in self.done:
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
            self.store.refund(_size(more))
            infos.append(info)
            owners.append(owner)
            frames.extend(more)
        return infos, frames, owners

    def answer(self, client: str, request_id: str, infos: list, frames: list,
               owners: list) -> None:
        if self.reply(client, request_id, {"tasks": infos, "packed": True},
                      pack(infos, frames)):
            return
        for info, owner in zip(infos, owners):   # gone: keep them for its return
            info["owner"] = owner
            self.hold(info, frames[:info["nframes"]])
            frames = frames[info["nframes"]:]

    def answer_parked(self, now: float) -> None:
        parked, self.parked = self.parked, []
        for fetch in parked:
            infos, frames, owners = self.collect(fetch.client, fetch.ids)
            if infos or now >= fetch.deadline:
                self.answer(fetch.client, fetch.request_id, infos, frames, owners)
            else:
                self.parked.append(fetch)

    def abort(self, tid: int) -> None:
        """Finish a queued or running task at once as TaskAborted: a queued one leaves its
        queue (lazily, at dispatch), a running one's result is discarded when it comes.
        Raises IndexError for an unknown, finished or already aborted task."""
        if tid < 0 or tid >= self.next_id or self.states[tid] == LEASED:
            raise IndexError(f"task ID not registered: {tid}")
        task = self.live.get(tid)
        if task is None:
            done = self.done.get(tid)
            if done is not None and done.info.get("ename") == "TaskAborted":
                raise IndexError("Task Already Aborted")
            raise IndexError("Task Already Completed")
        if tid in self.running_on:   # interrupt it on its engine
            self.dispatcher.interrupt_task(*self.running_on[tid], tid)
        running = self.states[tid] == RUNNING
        self.finish(task, self.failure(task, "TaskAborted", f"task {tid} was aborted" + (
            " while it ran (it was interrupted)" if running else "")))

    def clear(self, ids: list | None, forget: list = ()) -> int:
        """Drop held results (all, or ``ids``); returns how many, counting the
        ``forget`` ids: results a client fetched and now drops."""
        forgotten = 0
        for tid in forget:
            if 0 <= tid < self.next_id and self.states[tid] in (OK, FAILED) \
                    and tid not in self.done:
                self.states[tid] = CLEARED
                forgotten += 1
        if ids is None:
            ids = list(self.done)
        else:
            missing = [t for t in ids if t not in self.done]
            if missing:
                raise KeyError(f"no finished result held for task {missing[0]!r}")
        for tid in ids:
            self.drop(tid)
        return len(ids) + forgotten

    def status(self, verbose: bool) -> dict:
        names = {QUEUED: "scheduled", RUNNING: "pending", OK: "succeeded", FAILED: "failed"}
        if not verbose:   # counted in C, over one byte per task id
            return {name: self.states.count(state) for state, name in names.items()}
        groups: dict[str, list[int]] = {name: [] for name in names.values()}
        for tid, state in enumerate(self.states):
            if state in names:
                groups[names[state]].append(tid)
        return groups

    def drop(self, tid: int) -> None:
        """Release a finished task's held result."""
        info, frames = self.done.pop(tid)
        self.unfetched[info["owner"]].pop(tid, None)
        self.store.refund(_size(frames))
        self.states[tid] = CLEARED

    def forget_client(self, client: str) -> None:
        """The client is gone for good (ResultStore.sweep): release its results (its
        leased ids are never used: they stay LEASED)."""
        self.leases.pop(client, None)
        for tid in list(self.unfetched.pop(client, ())):
            if tid in self.done:
                self.drop(tid)

    def configure(self, result_cap: int | None) -> dict:
        """Set the controller's cap on what it keeps for clients (all results, not only
        tasks': PYMPEC_RESULT_CAP's value for this cluster); returns the settings."""
        if result_cap is not None:
            self.store.cap_override = result_cap
        return {"result_cap": self.store.cap, "held_bytes": self.store.used}

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
        for engine_id, _ in self.dispatcher.task_slots(self.window()):
            batch = self.take(engine_id, now)
            if batch:
                self.send_batch(engine_id, batch)
                sent = True
            if not self.ready and not self.held:
                break
        return sent

    def window(self) -> int:
        return 2 if self.avg is not None and self.avg < SHORT else 1

    def batch_size(self) -> int:
        if self.avg is None or self.avg >= SHORT:
            return 1
        engines = max(1, len(self.dispatcher.engines))
        spread = -(-len(self.ready) // (2 * engines))
        return max(1, min(MAX_BATCH, int(SHORT / max(self.avg, 1e-7)), spread))

    def take(self, engine_id: int, now: float) -> list[Task]:
        """The next tasks ``engine_id`` may run: held ones first (they are older or
        were pushed back), then the ready queue."""
        size = self.batch_size()
        batch: list[Task] = []
        if self.held:
            keep = []
            for task in self.held:
                if self.states[task.id] != QUEUED:
                    continue
                if len(batch) < size and task.may_run_on(engine_id, now):
                    batch.append(task)
                else:
                    keep.append(task)
            self.held = keep
        while self.ready and len(batch) < size:
            task = self.ready.popleft()
            if self.states[task.id] == QUEUED:
                batch.append(task)
        return batch

    def check_held(self, now: float) -> None:
        """Time out tasks no engine accepts; re-offer them every PENALTY seconds."""
        engines = set(self.dispatcher.engines)
        for task in list(self.held):
            if self.states[task.id] != QUEUED or not task.rejected:
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

    def send_batch(self, engine_id: int, batch: list[Task]) -> None:
        specs, parts = [], []
        for task in batch:
            self.states[task.id] = RUNNING
            specs.append({**task.spec, "tid": task.id, "n": len(task.frames)})
            parts.extend(task.frames)
        ids = [t.id for t in batch]
        describe = f"task({', '.join(map(str, ids[:5]))}{', ...' if len(ids) > 5 else ''})"
        running = {t.id: t for t in batch}
        seq = self.dispatcher.send_batch(
            engine_id, {"tasks": specs}, parts, describe,
            lambda reply, frames: self.settle(engine_id, running, reply,
                                              frames[0] if frames else None),
            lambda why: self.engine_lost(engine_id, running, why))
        for task in batch:
            self.running_on[task.id] = (engine_id, seq)

    def settle(self, engine_id: int, batch: dict[int, Task], reply: dict,
               buf: memoryview | None) -> None:
        """A batch's reply and its packed results are here: record each task's outcome.
        A batch the engine could not run at all fails each of its tasks."""
        view = memoryview(buf) if buf is not None else memoryview(b"")
        now = time.monotonic()
        for tid in batch:
            self.running_on.pop(tid, None)
        if "tasks" not in reply:
            for task in batch.values():
                if task.id in self.live:
                    self.ran(task, engine_id, self.failure(
                        task, reply.get("ename", "KernelError"), reply.get("evalue", "")), now)
            return
        for info in reply["tasks"]:
            task = batch[info.pop("tid")]
            if task.id not in self.live:   # aborted while it ran
                continue
            if info["status"] == "rejected":
                self.rejected(task, engine_id, now)
                continue
            task.stuck_since = None
            run_time = info["completed"] - info["started"]
            self.avg = run_time if self.avg is None else 0.8 * self.avg + 0.2 * run_time
            start, length = info.pop("span")
            info["engine"] = engine_id
            self.ran(task, engine_id, Result(info, [view[start:start + length]] if length
                                             else []), now)
        if self.parked:
            self.answer_parked(time.monotonic())

    def engine_lost(self, engine_id: int, batch: dict[int, Task], why: str) -> None:
        """The engine running ``batch`` was lost: its tasks go to other engines, each
        at most ``retries`` + 1 times, then fail with EngineError."""
        for task in batch.values():
            self.running_on.pop(task.id, None)
            if task.id not in self.live:
                continue
            task.losses += 1
            if task.losses <= task.retries + 1:
                log.info("task %d goes to another engine: %s", task.id, why)
                self.enqueue(task)
            else:
                self.finish(task, self.failure(
                    task, "EngineError", f"{why}; task {task.id} was on {task.losses} "
                                         f"engines that were lost"))

    def rejected(self, task: Task, engine_id: int, now: float) -> None:
        """``depend`` said no on this engine: offer it to others."""
        task.rejected.add(engine_id)
        task.offered = now
        self.enqueue(task)

    def ran(self, task: Task, engine_id: int, result: Result, now: float) -> None:
        """The task ran: done, or retried elsewhere, or its recovery task queued."""
        if result.info["status"] == "ok":
            self.finish(task, result)
        elif task.retries > 0:
            task.retries -= 1
            task.avoid[engine_id] = now + PENALTY
            self.enqueue(task)
        elif task.recovery is not None:
            task.spec, task.frames, task.recovery = _split(*task.recovery)
            task.retries = int(task.spec.get("retries") or 0)
            task.avoid.clear()
            task.rejected.clear()
            self.enqueue(task)
        else:
            self.finish(task, result)

    # -- results -----------------------------------------------------------------------

    def failure(self, task: Task, ename: str, evalue: str,
                info: dict | None = None) -> Result:
        info = dict(info or {})
        info.update(status="error", ename=ename, evalue=evalue, traceback="")
        info.pop("meta", None)
        return Result(info, [])

    def finish(self, task: Task, result: Result) -> None:
        info, frames = result
        info.update(tid=task.id, kind=task.spec.get("kind"), owner=task.client,
                    submitted=task.submitted)
        del self.live[task.id]
        self.states[task.id] = OK if info["status"] == "ok" else FAILED
        self.hold(info, frames)

    def hold(self, info: dict, frames: list) -> None:
        info["nframes"] = len(frames)
        self.done[info["tid"]] = Result(info, frames)
        self.unfetched[info["owner"]][info["tid"]] = None
        self.store.charge(_size(frames))


def _size(frames: list) -> int:
    """What a held task result costs: its frames and (roughly) its JSON fields."""
    return 200 + sum(len(f) for f in frames)


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
