"""The engine side of the controller: per-engine FIFO queues, and their MPI traffic.

    Controller.handle ──submit(request)──> Job, appended to each target's queue
                                            │
    TaskFarm ──send_batch(engine)──> Batch: a few tasks for one engine with nothing queued
    Controller loop ──dispatch()──> an idle engine's head job starts:
                                      one engine:  Isend header (+ payload)      ───> engine
                                      several:     Isend headers, then
                                                   Ibcast / Iscatterv            ───> engines
                     ──poll()─────> Iprobe reply headers; Irecv their frames in pieces,
                                      or Igatherv rounds into one buffer        <─── engines
                                    every target's header is in: finished(client, reply),
                                      its frames Fillings the writer sends as they land;
                                      a batch's whole reply goes to its farm callback

Jobs and task batches share one id space (``Dispatcher.work``): an engine's reply names
the id, and the id says what it answers.

A large request for one engine is streamed: the controller takes it as soon as its
header is checked (``MessageReader(early=...)``), and a job whose payload is still
arriving forwards it in CHUNK-sized pieces as the wire checks them, ``Isend`` to the
engine, so the socket, the MAC and MPI overlap.  (A payload for several engines goes
whole, by collective: see ``Controller.streamed``.)  A one-byte verdict
follows the last piece: 1 if the whole message arrived intact, 0 if the client's
connection broke or a tag failed first, and then the engine drops the payload.

Jobs reach each engine in FIFO order.  A job sent to several engines with a payload, or
gathered from them, is a collective on a communicator of the controller plus its targets
(cached per target list), so it starts once every target is idle with it at the head of
its queue; since a job joins all its queues at once, the queues agree on the order and
collectives cannot deadlock; a job posts its collectives in the order its engines do
(payload, then for a gather the round count, then the rounds).  Everything here is
non-blocking but the one-time creation of a communicator, which only involves engines
with nothing to run (one may still be sending its last reply's pieces; MPI moves them
while it waits).
"""
from __future__ import annotations

import collections
import functools
import logging
from typing import Any, Callable, NamedTuple, Union

from mpi4py import MPI

from .. import paths
from ..protocol import wire
from ..protocol.commands import GATHER
from .deaths import Watch
from .request import Request
from ..protocol.buffers import allocate
from ..errors import InvalidEngineID, NoEnginesRegistered
from ..protocol.mpiwire import (BROKEN, CHUNK, COMPLETE, INLINE, INTERRUPT_BELL, TAG_COMMAND,
                                TAG_DATA, TAG_INTERRUPT, TAG_LOST, TAG_OUTPUT, TAG_REPLY,
                                agree_largest,
                                bytes_spec, encode_header, engine_rank, group_comm, pieces,
                                recv_header, split)
from ..protocol.wire import Filling

log = logging.getLogger("pympec.controller")

STREAM_FROM = 2 * CHUNK    # requests with at least this many frame bytes are streamed
AHEAD = 8                  # jobs sent to an engine beyond the one it runs (see Engine)


class Stream:
    """Forwarding of one payload region to one engine while its message arrives."""

    def __init__(self, message: wire.Message, start: int, length: int, rank: int) -> None:
        self.message, self.start, self.length, self.rank = message, start, length, rank
        self.sent = 0


class Job:
    """One client request, as it runs on its target engines."""

    def __init__(self, seq: int, request: Request, targets: list[int]) -> None:
        header, message = request.header, request.message
        self.seq = seq
        self.command = request.command
        self.id = header["id"]
        self.clients = [request.client]            # who gets its reply: the sender, and
                                                   # whoever asked for it by id since
        self.verb = request.command.name
        self.args = header.get("args") or {}
        self.message = message
        self.targets = targets
        self.deliver = header.get("deliver", "none") if message.frames else "none"
        self.parts = header.get("parts")           # frames per target, for deliver="parts"
        self.gather = request.command.reply == GATHER
        self.describe = header.get("describe") or f"{self.verb}()"
        self.todo = list(targets)                  # targets not dispatched yet
        self.results: dict[int, tuple[dict, list]] = {}
        self.gathering: dict[int, dict] = {}       # gather reply headers, by engine
        self.members: list[int] = []               # engines of the running collective
        self.comm: MPI.Comm | None = None          # and its communicator
        self.joined: Filling | None = None          # the gathered buffer, after a gather
        self.reply_bytes = 256                     # its reply headers' size, for accounting

    def collective(self) -> bool:
        return len(self.todo) > 1 and (self.deliver != "none" or self.gather)

    def region(self, engine_id: int) -> tuple[int, int, list[list[int]]]:
        """(offset, length, frames relative to offset) of what ``engine_id`` receives."""
        message = self.message
        if self.deliver == "parts":
            i = self.targets.index(engine_id)
            first = sum(self.parts[:i])
            last = first + self.parts[i] - 1
        else:
            first, last = 0, len(message.frames) - 1
        start, length = message.span(first, last)
        frames = [[message.offsets[k] - start, len(message.frames[k])]
                  for k in range(first, last + 1)]
        return start, length, frames


class Batch:
    """Load-balanced tasks running on one engine (see :mod:`.tasks`): ``done(reply,
    frames)`` gets the engine's whole reply, or ``lost(why)`` word that the engine was
    lost before it replied."""

    def __init__(self, seq: int, engine_id: int, describe: str,
                 done: Callable[[dict, list], None], lost: Callable[[str], None]) -> None:
        self.seq, self.engine_id, self.describe = seq, engine_id, describe
        self.done, self.lost = done, lost


Work = Union[Job, Batch]


class Pending(NamedTuple):
    """An MPI request in flight: ``then()`` runs when it completes; ``keep`` holds its
    buffer alive until then."""

    request: MPI.Request
    then: Callable[[], None] | None
    keep: Any


class Engine:
    """The controller's view of one engine.

    Up to AHEAD small point-to-point jobs go to a busy engine before it answers the one
    it runs, so it goes from one to the next without a round trip through the
    controller (``block=False`` calls in a burst).  Each names the job sent before it
    (``after``); the engine skips a job whose ``after`` failed or was skipped, as the
    controller clears a queue behind a failure: the controller fails those jobs at
    once, and drops their replies (``skips``) when they come.  ``clear_queue`` calls
    jobs sent ahead off (``calling_off``): one that had not started answers
    QueueCleared, one that had gives its result."""

    def __init__(self, engine_id: int, host: str = "?", pid: int = 0) -> None:
        self.id = engine_id
        self.rank = engine_rank(engine_id)
        self.host, self.pid = host, pid
        self.queue: collections.deque[Job] = collections.deque()
        self.running: Job | None = None         # the job it runs now (sent, unanswered)
        self.ahead: collections.deque[Job] = collections.deque()   # sent after it
        self.skips: set[int] = set()          # jobs sent ahead and failed here: the
                                              # engine skips them; their replies are dropped
        self.calling_off: set[int] = set()    # jobs sent ahead, then cleared: the engine
                                              # says whether they had started
        self.batches: dict[int, Batch] = {}   # task batches in flight, by id
        self.gone: str | None = None          # why it left: killed, or lost
        self.dead = False                     # its process is gone (MPI said so)

    def __str__(self) -> str:
        return f"engine {self.id} (rank {self.rank}, pid {self.pid} on {self.host})"

    def describe(self) -> str | None:
        """What it runs now, for status displays."""
        if self.running is not None:
            return self.running.describe
        if self.batches:
            return ", ".join(b.describe for b in self.batches.values())
        return None


class Dispatcher:
    """The engines, their queues, and the MPI traffic of the jobs they run.

    ``finished(clients, header, frames, size)`` receives each job's reply when every
    target's reply header is in (frames may be Fillings, still landing; ``size`` is its
    reply headers' size in bytes, for the result store's accounting); ``output(client,
    header)`` receives output streamed while one runs; ``ring(rank)`` wakes a sleeping
    engine (the doorbell).  The task farm uses :meth:`task_slots` and :meth:`send_batch`.
    """

    def __init__(self, comm: MPI.Comm, control: MPI.Comm,
                 finished: Callable[[list, dict, list, int], None],
                 output: Callable[[str, dict], None], ring: Callable[..., None],
                 where: list[tuple[str, int]]) -> None:
        """``where``: each engine's host and pid, by engine id."""
        self.comm = comm
        self.control = control                     # interrupt orders (pympec.engine.interrupt)
        self.finished, self.output, self.ring = finished, output, ring
        self.engines: dict[int, Engine] = {i: Engine(i, *where[i]) for i in range(len(where))}
        self.gone: dict[int, Engine] = {}          # killed or lost: out of 'all'; parked
        self.work: dict[int, Work] = {}            # jobs and task batches, by id
        self.by_request: dict[str, Job] = {}       # jobs, by their client's request id
        self.seq = 0
        self.groups: dict[str, MPI.Comm] = {}
        self.requests: list[Pending] = []
        self.status = MPI.Status()
        self.unrung: dict[int, None] = {}          # ranks sent a command, not rung yet
        self.streams: list[Stream] = []            # payloads forwarded as they arrive
        self.watch: Watch | None = None            # dead engines, on fault-tolerant clusters
        self.suspect = False                       # an MPI call failed: ask the watch now
        self.aborted: set[int] = set()             # collectives a member died in

    def busy(self) -> bool:
        """True while some engine runs something (a reply may come any moment)."""
        return any(e.running or e.batches for e in self.engines.values())

    def shutdown(self) -> bool:
        """Tell every engine, stopped ones too, to exit (first its interrupt listener);
        free the communicators.  Returns whether an engine died: then every rank is told
        to leave without MPI_Finalize, which would wait for the dead one where the MPI
        did not notice its death (see ``pympec.boot``)."""
        abandon = any(engine.dead for engine in self.gone.values())
        for engine in [*self.engines.values(), *self.gone.values()]:
            if engine.dead:
                continue
            self.control.Isend(encode_header({"stop": True}), engine.rank,
                               TAG_INTERRUPT).Wait()
            self.ring(engine.rank, INTERRUPT_BELL)
            self.comm.Isend(encode_header({"verb": "_shutdown", "abandon": abandon}),
                            engine.rank, TAG_COMMAND).Wait()
            self.ring(engine.rank)
        for group in self.groups.values():
            group.Free()
        return abandon

    def resolve_targets(self, targets: Any) -> list[int]:
        """The engine ids ``targets`` names; raises InvalidEngineID or NoEnginesRegistered."""
        ids = list(self.engines)
        if targets is None or targets == "all":
            if not ids:
                raise NoEnginesRegistered(
                    f"no engines are registered (logs: {paths.log_dir()})")
            return ids
        if isinstance(targets, str):
            raise InvalidEngineID(f"targets must be 'all', an id or a list of ids, "
                                  f"not {targets!r}")
        if isinstance(targets, int):
            targets = [targets]
        if not targets:
            raise InvalidEngineID("targets is an empty list: name at least one engine, "
                                  "or 'all'")
        for t in targets:
            if t in self.gone:
                raise InvalidEngineID(f"{self.gone[t]} is out of service: {self.gone[t].gone}; "
                                      f"the engines are {ids}")
            if not isinstance(t, int) or t not in self.engines:
                raise InvalidEngineID(f"no engine has id {t!r}; the engines are {ids}")
        if len(set(targets)) != len(targets):
            raise InvalidEngineID(f"targets name an engine twice: {targets}")
        return list(targets)

    def submit(self, request: Request) -> None:
        """Queue a checked request (pympec.protocol.commands) on each of its targets.
        Raises InvalidEngineID, NoEnginesRegistered, or ValueError when ``parts`` does
        not give a frame count per target."""
        header = request.header
        targets = self.resolve_targets(header.get("targets"))
        if header.get("deliver") == "parts" and len(header["parts"]) != len(targets):
            raise ValueError(f"parts gives {len(header['parts'])} frame counts for "
                             f"{len(targets)} targets")
        if header["id"] in self.by_request:
            raise ValueError(f"a request with id {header['id']!r} is already running")
        job = Job(self.next_id(), request, targets)
        self.work[job.seq] = job
        self.by_request[job.id] = job
        for t in targets:
            engine = self.engines[t]
            if job.command.ends_engine:   # kill: nothing may wait before it, or run on
                self.clear_queue(engine, f"engine {t} is being killed")
                self.interrupt(t)
            engine.queue.append(job)

    def claim(self, request_id: str, client: str) -> bool:
        """Whether the job of ``request_id`` is still running; if so its result will go
        to ``client`` too (a client that asked for it by id)."""
        job = self.by_request.get(request_id)
        if job is not None and client not in job.clients:
            job.clients.append(client)
        return job is not None

    def next_id(self) -> int:
        self.seq += 1
        return self.seq

    def engine_status(self) -> list[dict]:
        return [{"id": e.id, "host": e.host, "pid": e.pid, "running": e.describe(),
                 "queued": len(e.ahead) + len(e.queue), "gone": e.gone}
                for e in sorted([*self.engines.values(), *self.gone.values()],
                                key=lambda e: e.id)]

    def queue_status(self, targets: Any) -> list:
        return [[t, {"queue": [job.describe for job in (*self.engines[t].ahead,
                                                        *self.engines[t].queue)],
                     "pending": self.engines[t].describe() or "None"}]
                for t in self.resolve_targets(targets)]

    def dispatch(self) -> bool:
        """Start the head job of every idle engine that can start; True if any did."""
        started = False
        for engine in list(self.engines.values()):
            if engine.batches or not engine.queue:
                continue
            job = engine.queue[0]
            if engine.running is not None:
                while engine.queue and self.may_send_ahead(engine, engine.queue[0]):
                    self.start_one(engine.queue[0], engine)
                    started = True
                continue
            if not job.collective():
                self.start_one(job, engine)
                started = True
                continue
            members = [self.engines[t] for t in job.todo]
            if all(m.running is None and not m.batches and m.queue and m.queue[0] is job
                   for m in members):
                # a new communicator must not count on a dead member (it would wait for it)
                if not self.check_deaths():
                    self.start_collective(job, members)
                started = True
        if self.streams:
            started |= self.forward()
        return started

    @staticmethod
    def may_send_ahead(engine: Engine, job: Job) -> bool:
        """Whether ``job`` may go to ``engine`` while it runs another: both are jobs for
        it alone (no collective) and whole (a streamed one that breaks off fails
        without clearing the queue), ``job`` is small (its payload inside its command)
        and no kill, and the engine is not skipping or calling off jobs."""
        running = engine.running
        return (len(engine.ahead) < AHEAD and not engine.skips and not engine.calling_off
                and not job.collective() and not running.members
                and running.message.complete and not job.command.ends_engine
                and (job.deliver == "none" or (job.message.complete and
                                               job.region(engine.id)[1] <= INLINE)))

    # -- interrupts --------------------------------------------------------------------

    def interrupt(self, targets: Any, request_id: str | None = None) -> list[int]:
        """Interrupt what the target engines run, or only the job of ``request_id``
        (on all its targets: where it has not started yet it leaves the queue, as
        interrupted).  Returns the ids of the engines told to interrupt something."""
        if request_id is not None:
            job = self.by_request.get(request_id)
            return [] if job is None else self.interrupt_job(job)
        told = []
        for t in self.resolve_targets(targets):
            engine = self.engines[t]
            running = ([engine.running] if engine.running else []) + list(engine.batches.values())
            for work in running:
                self.order(engine, {"job": work.seq})
            if running:
                told.append(t)
        return told

    def interrupt_job(self, job: Job) -> list[int]:
        told = []
        for t in list(job.targets):
            engine = self.engines.get(t)
            if engine is None or t in job.results:
                continue
            if engine.running is job or job in engine.ahead:   # (an order for a job sent
                self.order(engine, {"job": job.seq})           # ahead waits for it there)
                told.append(t)
            elif job in engine.queue:
                engine.queue.remove(job)
                job.todo.remove(t)
                self.fail(job, t, "KeyboardInterrupt",
                          f"interrupted before it started on engine {t}")
        return told

    def interrupt_task(self, engine_id: int, batch: int, task: int) -> None:
        """Interrupt task ``task`` of batch ``batch``, if that engine runs it now."""
        engine = self.engines.get(engine_id)
        if engine is not None:
            self.order(engine, {"job": batch, "task": task})

    def order(self, engine: Engine, order: dict) -> None:
        """An order to an engine's interrupt listener, and a ring to wake it."""
        self.isend(encode_header(order), engine.rank, TAG_INTERRUPT, self.control)
        self.ring(engine.rank, INTERRUPT_BELL)

    # -- the task farm's port --------------------------------------------------------

    def task_slots(self, window: int) -> list[tuple[int, int]]:
        """``(engine id, batches in flight)`` of the engines that may take another task
        batch: nothing queued or running for them directly (direct commands keep
        priority and FIFO order), and fewer than ``window`` batches in flight."""
        return [(e.id, len(e.batches)) for e in self.engines.values()
                if not e.queue and e.running is None and len(e.batches) < window]

    def send_batch(self, engine_id: int, args: dict, parts: list, describe: str,
                   done: Callable[[dict, list], None], lost: Callable[[str], None]) -> int:
        """Send a task batch (``args``, and ``parts``: its frames) to an engine;
        ``done(reply, frames)`` gets its whole reply, ``lost(why)`` word that the engine
        was lost first.  Returns the batch's id."""
        engine = self.engines[engine_id]
        batch = Batch(self.next_id(), engine_id, describe, done, lost)
        self.work[batch.seq] = batch
        engine.batches[batch.seq] = batch
        header = {"job": batch.seq, "verb": "task_batch", "args": args, "reply": "p2p"}
        if not parts:
            self.send_command(engine.rank, header)
            return batch.seq
        offsets, at = [], 0
        for part in parts:
            offsets.append([at, len(part)])
            at += len(part)
        self.send_command(engine.rank, header, memoryview(b"".join(parts)), offsets)
        return batch.seq

    def forward(self) -> bool:
        """Forward the checked pieces of streamed payloads; once one has all arrived,
        send its verdict.  True if anything was sent."""
        moved = False
        for stream in list(self.streams):
            message = stream.message
            broken = message.failed
            # once broken, the rest goes anyway: the engines have posted receives for it
            limit = len(message.payload) if broken else message.verified
            while stream.sent < stream.length:
                n = min(CHUNK, stream.length - stream.sent)
                at = stream.start + stream.sent
                if at + n > limit:
                    break
                self.isend(message.payload[at:at + n], stream.rank, TAG_DATA)
                self.unrung[stream.rank] = None   # wake it for the piece
                stream.sent += n
                moved = True
            if stream.sent == stream.length and (message.complete or broken):
                self.isend(BROKEN if broken else COMPLETE, stream.rank, TAG_DATA)
                self.streams.remove(stream)
                moved = True
        return moved

    def ring_unrung(self) -> None:
        """Ring the engines sent commands since the last call.  Rung after all the sends,
        since a rung engine may take this core at once, before the next send."""
        for rank in self.unrung:
            self.ring(rank)
        self.unrung.clear()

    def take(self, job: Job, engine: Engine) -> None:
        engine.queue.popleft()
        if engine.running is None:
            engine.running = job
        else:
            engine.ahead.append(job)
        job.todo.remove(engine.id)

    def advance(self, engine: Engine) -> None:
        """The engine answered the job it ran: the next one sent ahead runs now."""
        engine.running = engine.ahead.popleft() if engine.ahead else None
        if engine.running is None:   # (nothing of it in flight)
            engine.skips.clear()
            engine.calling_off.clear()

    def command(self, job: Job, **fields: Any) -> dict:
        return {"job": job.seq, "verb": job.verb, "args": job.args, **fields}

    def isend(self, buf: Any, rank: int, tag: int, comm: MPI.Comm | None = None) -> None:
        try:
            request = (comm or self.comm).Isend(bytes_spec(buf), rank, tag)
        except MPI.Exception as e:   # (its process died: the watch will say so)
            self.mpi_failed(e)
            return
        self.track(request, keep=buf)
        if tag == TAG_COMMAND:
            self.unrung[rank] = None

    def track(self, request: MPI.Request, done: Callable[[], None] | None = None,
              keep: Any = None) -> None:
        self.requests.append(Pending(request, done, keep))

    def start_one(self, job: Job, engine: Engine) -> None:
        before = engine.ahead[-1] if engine.ahead else engine.running
        self.take(job, engine)
        header = self.command(job, reply="p2p")
        if before is not None:   # sent ahead: it runs only if that one succeeds
            header["after"] = before.seq
        if job.deliver == "none":
            self.send_command(engine.rank, header)
        else:
            start, length, frames = job.region(engine.id)
            if job.message.complete:
                self.send_command(engine.rank, header,
                                  job.message.payload[start:start + length], frames)
            else:
                header.update(deliver="stream", region=length, frames=frames)
                self.isend(encode_header(header), engine.rank, TAG_COMMAND)
                self.streams.append(Stream(job.message, start, length, engine.rank))

    def send_command(self, rank: int, header: dict, payload: memoryview | None = None,
                     frames: list | None = None) -> None:
        """One command to one engine: the header, with ``payload`` inline when it is
        small, else in a second message.  ``frames``: [offset, length] in ``payload``."""
        if payload is None:
            self.isend(encode_header(header), rank, TAG_COMMAND)
        elif len(payload) <= INLINE:
            header.update(deliver="inline", frames=frames)
            self.isend(encode_header(header, [payload]), rank, TAG_COMMAND)
        else:
            header.update(deliver="p2p", region=len(payload), frames=frames)
            self.isend(encode_header(header), rank, TAG_COMMAND)
            self.isend(payload, rank, TAG_DATA)

    def group(self, members: list[Engine]) -> tuple[str, MPI.Comm]:
        """The communicator of the controller plus ``members`` (in order), made once."""
        key = ",".join(str(m.id) for m in members)
        if key not in self.groups:
            ranks = [0] + [m.rank for m in members]
            fresh = self.watch is not None   # (see group_comm)
            for m in members:
                self.comm.Isend(encode_header({"verb": "_group", "key": key, "ranks": ranks,
                                               "fresh": fresh}), m.rank, TAG_COMMAND).Wait()
                self.ring(m.rank)
            # Blocks until the members join; they are all idle, so within one poll.
            self.groups[key] = group_comm(self.comm, ranks, fresh)
        return key, self.groups[key]

    def start_collective(self, job: Job, members: list[Engine]) -> None:
        try:
            key, comm = self.group(members)
        except MPI.Exception as e:   # a member died meanwhile: once the watch has said
            self.mpi_failed(e)       # which, the job starts again without it
            return
        job.members, job.comm = [m.id for m in members], comm
        regions = {m.id: job.region(m.id) for m in members} if job.deliver != "none" else {}
        # (its message is whole: only requests for one engine are streamed)
        deliver = {"none": "none", "same": "bcast", "parts": "scatter"}[job.deliver]
        for m in members:
            self.take(job, m)
            header = self.command(job, group=key, reply="gather" if job.gather else "p2p",
                                  deliver=deliver)
            if m.id in regions:
                header.update(region=regions[m.id][1], frames=regions[m.id][2])
            self.isend(encode_header(header), m.rank, TAG_COMMAND)
        payload = job.message.payload
        if deliver == "bcast":
            start, length, _ = regions[members[0].id]
            view = memoryview(payload)[start:start + length]
            self.track(comm.Ibcast(bytes_spec(view), root=0), keep=view)
        elif deliver == "scatter":
            counts = [0] + [regions[m.id][1] for m in members]
            displs = [0] + [regions[m.id][0] for m in members]
            self.track(comm.Iscatterv([payload, counts, displs, MPI.BYTE],
                                      bytes_spec(bytearray(0)), root=0), keep=payload)
        if job.gather:   # after the payload, as on the engines: the targets agree on
            # the number of gather rounds (engine.send_gathered)
            request, agreed = agree_largest(comm, 0)
            self.track(request, keep=agreed)

    def poll(self) -> bool:
        """Receive reply headers and complete finished requests; True if anything moved.
        A bug of ours in handling one is logged, and the loop goes on: the cluster
        outlives it, and a dead engine (an MPI error) too, where the MPI survives it."""
        try:
            moved = self.take_replies()
        except MPI.Exception as e:   # an unacknowledged dead rank fails ANY_SOURCE probes
            self.mpi_failed(e)
            moved = True
        pending, self.requests = self.requests, []
        for entry in pending:
            try:
                done = entry.request.Test()
            except MPI.Exception as e:   # its peer died, or its collective was revoked
                self.mpi_failed(e)
                continue
            if done:
                moved = True
                try:
                    if entry.then is not None:
                        entry.then()
                except Exception:
                    log.exception("internal error after an MPI transfer")
            else:
                self.requests.append(entry)
        self.ring_unrung()
        return moved

    def take_replies(self) -> bool:
        """Take the replies, output and loss notices that have come; True if any had.
        Raises MPI.Exception when a rank died (fault-tolerant clusters)."""
        moved = self.take_output(MPI.ANY_SOURCE)
        while self.comm.Iprobe(MPI.ANY_SOURCE, TAG_REPLY, self.status):
            moved = True
            source, count = self.status.Get_source(), self.status.Get_count(MPI.BYTE)
            reply, tail = recv_header(self.comm, self.status)
            # an engine sends a call's output before its reply: take what is there
            # first, since once the reply is in the call is over
            self.take_output(source)
            try:
                self.on_reply(self.engine_at(source), reply, tail, count)
            except Exception:
                log.exception("internal error handling a reply from rank %d", source)
        while self.comm.Iprobe(MPI.ANY_SOURCE, TAG_LOST, self.status):
            moved = True
            source = self.status.Get_source()
            notice = recv_header(self.comm, self.status)[0]
            self.lose(self.engine_at(source), f"its loop failed: {notice.get('why')}")
        return moved

    def take_output(self, source: int) -> bool:
        """Pass on the output messages waiting from ``source``; True if there were any."""
        status, found = MPI.Status(), False
        while self.comm.Iprobe(source, TAG_OUTPUT, status):
            found = True
            self.on_output(status.Get_source() - 1, recv_header(self.comm, status)[0])
        return found

    def engine_at(self, rank: int) -> Engine:
        engine = self.engines.get(rank - 1)
        return engine or self.gone[rank - 1]

    def on_reply(self, engine: Engine, reply: dict, tail: memoryview, size: int) -> None:
        """A reply header (``size`` bytes) arrived: get its frames, then finish the
        engine's part."""
        seq = reply.pop("job")
        if seq in engine.skips:   # failed here already (it followed a failure)
            engine.skips.discard(seq)
            self.receive_frames(engine, reply, tail, lambda frames: None, streamed=False)
            self.advance(engine)
            return
        if seq in self.aborted:
            self.late_reply(engine, seq, reply, tail)
            return
        work = self.work[seq]
        if isinstance(work, Batch):
            self.receive_frames(engine, reply, tail,
                                functools.partial(self.batch_done, engine, work, reply),
                                streamed=False)
            return
        job = work
        job.reply_bytes += size
        if "nbytes" in reply:
            job.gathering[engine.id] = reply
            if len(job.gathering) == len(job.members):
                self.start_gather(job)
            return
        self.receive_frames(engine, reply, tail,
                            lambda frames: self.engine_done(job, engine, reply, frames))

    def receive_frames(self, engine: Engine, reply: dict, tail: memoryview,
                       then: Callable[[list], None], streamed: bool = True) -> None:
        """Get the reply's frames: inline in its message, or in CHUNK-sized MPI pieces,
        received without blocking.  ``then(frames)`` gets them once they are all here,
        or, if ``streamed``, at once as Fillings (the client's writer sends each piece
        as it lands)."""
        lengths = reply.pop("lengths", [])
        if reply.pop("inline", False) or not lengths:
            then(split(tail, lengths))
            return
        frames = [Filling(allocate(n)) for n in lengths]
        left = [sum(len(pieces(n)) for n in lengths)]

        def landed(frame: Filling, at: int, n: int) -> None:
            frame.land(at, at + n)
            left[0] -= 1
            if not left[0] and not streamed:
                then([f.view for f in frames])

        for frame in frames:  # posted in order, so they match the engine's sends in order
            for at in pieces(len(frame)):
                n = min(CHUNK, len(frame) - at)
                self.track(self.comm.Irecv(bytes_spec(frame.view[at:at + n]), engine.rank,
                                           TAG_DATA), functools.partial(landed, frame, at, n))
        if streamed:
            then(frames)

    def on_output(self, engine_id: int, output: dict) -> None:
        """Forward output of a running execute to its client, if connected (output is
        a convenience: the final record holds all of it anyway)."""
        job = self.work.get(output["job"])
        if isinstance(job, Job):
            for client in job.clients:
                self.output(client, {"id": job.id, "stream": {
                    "engine": engine_id, "name": output["name"], "text": output["text"]}})

    def start_gather(self, job: Job) -> None:
        """All gather headers are in: receive every part into one buffer, in place, one
        ``Igatherv`` round per CHUNK of the largest part; the reply goes to the client
        at once and streams as the rounds land."""
        members = job.members
        sizes = [job.gathering[e]["nbytes"] for e in members]
        starts = [sum(sizes[:i]) for i in range(len(members))]
        joined = Filling(allocate(sum(sizes)))
        # an MPI without large counts (before MPI-4: Open MPI 5) takes no displacement
        # past 2**31: then each round lands in a buffer of its own, copied into place
        staged = len(joined) >= 1 << 31 and MPI.Get_version() < (4, 0)

        def landed(at: int, counts: list[int], stage: Any) -> None:
            offset = 0
            for start, n in zip(starts, counts):
                if n and stage is not None:
                    joined.view[start + at:start + at + n] = stage[offset:offset + n]
                if n:
                    joined.land(start + at, start + at + n)
                offset += n

        for at in pieces(max(sizes)):
            counts = [min(CHUNK, max(0, n - at)) for n in sizes]
            where = [min(start + at, len(joined)) for start in starts]
            stage = allocate(sum(counts)) if staged else None
            if staged:
                where = [sum(counts[:i]) for i in range(len(counts))]
            target = joined.view if stage is None else stage
            self.track(job.comm.Igatherv(bytes_spec(bytearray(0)),
                                         [target, [0, *counts], [0, *where], MPI.BYTE], root=0),
                       functools.partial(landed, at, counts, stage), (joined, stage))
        for start, e in zip(starts, members):
            reply = job.gathering.pop(e)
            reply["span"] = [start, reply.pop("nbytes")]
            self.engine_done(job, self.engines.get(e) or self.engine_at(e + 1), reply, [],
                             joined=joined)

    def batch_done(self, engine: Engine, batch: Batch, reply: dict, frames: list) -> None:
        del self.work[batch.seq]
        del engine.batches[batch.seq]
        batch.done(reply, frames)

    def engine_done(self, job: Job, engine: Engine, reply: dict, frames: list,
                    joined: Filling | None = None) -> None:
        failed = reply.get("status") == "error"
        why = (f"an earlier command failed on engine {engine.id}: "
               f"{reply.get('ename')}: {reply.get('evalue')}") if failed else ""
        if failed:
            self.skip_ahead(engine, why)   # (the engine skips them)
        # a job called off before it started: what was queued after it stays
        cleared = job.seq in engine.calling_off and reply.get("ename") == "QueueCleared"
        engine.calling_off.discard(job.seq)
        self.advance(engine)
        job.results[engine.id] = (reply, frames)
        if joined is not None:
            job.joined = joined
        if failed:
            if not job.message.failed and not cleared:
                # (a broken message is its vanished client's loss alone: keep the queue)
                self.clear_queue(engine, why)
        elif job.command.ends_engine:
            log.info("%s stopped by kill()", engine)
            self.retire(engine, "it was stopped by kill()")
        if len(job.results) == len(job.targets):
            self.finish(job)

    def retire(self, engine: Engine, why: str) -> None:
        """Take an engine out of service: out of 'all', its queue failed with ``why``."""
        engine.gone = why
        self.gone[engine.id] = self.engines.pop(engine.id)
        self.clear_queue(engine, f"{engine} {why}", ename="EngineError", keep_kill=False)

    def lose(self, engine: Engine, why: str) -> None:
        """The engine is lost (its loop failed, or its process died): what it runs and
        what waits for it fail with EngineError naming it, it leaves 'all', and the
        task farm re-queues its tasks on the others."""
        if engine.gone is not None:
            return
        log.error("%s is lost: %s", engine, why)
        message = f"{engine} was lost: {why}"
        jobs = ([engine.running] if engine.running else []) + list(engine.ahead)
        engine.running, engine.ahead = None, collections.deque()
        for job in jobs:
            if engine.id not in job.results:
                self.fail(job, engine.id, "EngineError", message)
        for batch in list(engine.batches.values()):
            del self.work[batch.seq]
            batch.lost(message)
        engine.batches.clear()
        self.retire(engine, f"was lost: {why}")

    # -- dead engines (fault-tolerant clusters: pympec.controller.deaths) -------------

    def mpi_failed(self, error: MPI.Exception) -> None:
        """An MPI call failed: on a fault-tolerant cluster a rank died, and the watch is
        asked at the loop's next pass; elsewhere (or if the MPI cannot say which rank
        died) it is raised, and ends the controller: clients get ClusterError."""
        if self.watch is None or not self.watch.works:
            raise error
        if not self.suspect:
            log.info("an MPI call failed (%s): looking for dead engines", error)
        self.suspect = True

    def check_deaths(self) -> bool:
        """Take the engines the MPI reports dead out of service; True if there were any.
        Never blocks; False at once without a watch."""
        self.suspect = False
        if self.watch is None:
            return False
        dead = self.watch.dead()
        for rank, how in dead:
            self.died(self.engine_at(rank), how)
        return bool(dead)

    def died(self, engine: Engine, how: str) -> None:
        """The engine's process is gone.  The communicators of the collectives it was in
        are revoked, so the other members get out of them with an error, and the calls
        in flight there fail; then it is lost as any engine (:meth:`lose`)."""
        engine.dead = True
        for key in [k for k in self.groups if engine.id in map(int, k.split(","))]:
            self.groups.pop(key).Revoke()
            for member in map(int, key.split(",")):   # (Open MPI's revoke may not reach
                if member in self.engines and member != engine.id:   # them: say it too)
                    self.order(self.engines[member], {"revoked": key})
        for work in list(self.work.values()):
            if isinstance(work, Job) and engine.id in work.members:
                self.abort(work, engine)
        self.lose(engine, how)

    def abort(self, job: Job, dead: Engine) -> None:
        """``dead`` died in ``job``'s collective: the members that have not answered fail
        now with CollectiveAborted; what they send for it later is dropped
        (:meth:`late_reply`), and each is free again once it has."""
        self.aborted.add(job.seq)
        for e in job.members:
            if e != dead.id and e not in job.results:
                self.fail(job, e, "CollectiveAborted",
                          f"engine {dead.id} died during this {job.verb}, a collective over "
                          f"engines {job.members}: it was cut short on engine {e} (which may "
                          f"or may not have done its part) and engine {e} serves on")

    def late_reply(self, engine: Engine, seq: int, reply: dict, tail: memoryview) -> None:
        """A reply to an aborted collective: its frames are taken and dropped, and the
        engine is free again."""
        self.receive_frames(engine, reply, tail, lambda frames: None, streamed=False)
        if engine.running is not None and engine.running.seq == seq:
            self.advance(engine)

    def skip_ahead(self, engine: Engine, why: str) -> None:
        """The job ``engine`` ran failed: the jobs sent ahead of its answer fail now, as
        QueueCleared (the engine skips them); their replies are dropped when they come."""
        for job in engine.ahead:
            if job.seq not in engine.skips:
                engine.skips.add(job.seq)
                self.fail(job, engine.id, "QueueCleared", why)

    def clear_queue(self, engine: Engine, why: str, ename: str = "QueueCleared",
                    keep_kill: bool = True) -> None:
        """Fail every job still queued on ``engine`` with ``ename`` (a kill stays,
        unless ``keep_kill`` is False), and call off the jobs sent ahead: one that had
        not started answers QueueCleared (and the engine skips the rest after it)."""
        for job in engine.ahead:
            if job.seq not in engine.skips and job.seq not in engine.calling_off:
                engine.calling_off.add(job.seq)
                self.order(engine, {"job": job.seq, "off": why})
        kept: collections.deque[Job] = collections.deque()
        while engine.queue:
            job = engine.queue.popleft()
            if keep_kill and job.command.ends_engine:
                kept.append(job)
                continue
            job.todo.remove(engine.id)
            self.fail(job, engine.id, ename, why)
        engine.queue = kept

    def fail(self, job: Job, engine_id: int, ename: str, evalue: str) -> None:
        """The job's part on ``engine_id`` fails without running: ``ename: evalue``."""
        job.results[engine_id] = ({"status": "error", "ename": ename, "evalue": evalue,
                                   "traceback": "", "metas": []}, [])
        if len(job.results) == len(job.targets):
            self.finish(job)

    def finish(self, job: Job) -> None:
        """Every target answered: one reply to the client, results in target order."""
        del self.work[job.seq]
        del self.by_request[job.id]
        results, frames = [], []
        joined = job.joined
        for t in job.targets:
            reply, more = job.results[t]
            reply["engine"] = t
            reply["nframes"] = len(more)
            results.append(reply)
            frames.extend(more)
        header = {"id": job.id, "results": results}
        if joined is not None:
            header["joined"] = len(frames)   # index of the joined buffer among the frames
            frames.append(joined)
        self.finished(job.clients, header, frames, job.reply_bytes)
