"""The controller: rank 0 of a pympec cluster.

    clients: TCP, one port              controller: rank 0, one loop          engines
    ----------------------------------------------------------------------------------------
    handshake, then messages  --->  selectors: accept, read, write
      {id, verb, targets, ...}        check the targets, make a Job, append it
      + frames (bytes)                to the FIFO queue of every target engine
                                      dispatch the head of idle engines' queues:
                                        one engine:  Isend header + payload  --->  engine
                                        several:     Isend headers, then
                                                     Ibcast / Iscatterv      --->  engines
                                      poll MPI: Iprobe reply headers, Irecv
                                        their frames, or Igatherv            <---  engines
    <---  reply {id, results}       every target answered: send it to the client,
          + frames                    or keep it until that client reconnects

The loop never waits on one party: sockets are non-blocking, MPI calls are non-blocking,
and when nothing happens it sleeps in ``select`` with the Backoff as timeout.  It never
unpickles: it reads JSON headers and moves frames as bytes.

Jobs reach each engine in FIFO order.  A job sent to several engines with a payload, or
gathered from them, is a collective on a communicator of the controller plus its targets
(cached per target list), so it starts once every target is idle with it at the head
of its queue; since jobs join all their queues at once, the queues agree on the order
and collectives cannot deadlock.
"""
from __future__ import annotations

import collections
import logging
import os
import selectors
import socket
import time
from typing import Any, Callable

from mpi4py import MPI

from . import paths, wire
from .backoff import Backoff
from .doorbell import Doorbell
from .connection import ConnectionInfo, load, resolve
from .errors import (ClusterError, InvalidEngineID, KernelError, NoEnginesRegistered,
                     ProtocolError)
from .runtime import (TAG_COMMAND, TAG_DATA, TAG_OUTPUT, TAG_REPLY, bytes_spec, encode_header,
                      engine_rank, group_comm, recv_header)
from .taskqueue import TaskQueue

log = logging.getLogger("pympec.controller")

HANDSHAKE_TIMEOUT = 10.0
RESULT_CAP = int(os.environ.get("PYMPEC_RESULT_CAP", 2 << 30))  # bytes kept for absent clients


class Job:
    """One client request, as it runs on its target engines."""

    def __init__(self, seq: int, request: dict, message: wire.Message, client: str,
                 targets: list[int]) -> None:
        self.seq = seq
        self.id = request["id"]
        self.client = client
        self.verb = request["verb"]
        self.args = request.get("args") or {}
        self.message = message
        self.targets = targets
        self.deliver = request.get("deliver", "none") if message.frames else "none"
        self.parts = request.get("parts")          # frames per target, for deliver="parts"
        self.gather = bool(request.get("gather"))
        self.describe = request.get("describe") or f"{self.verb}()"
        self.todo = list(targets)                  # targets not dispatched yet
        self.results: dict[int, tuple[dict, list]] = {}
        self.gathering: dict[int, dict] = {}       # gather reply headers, by engine
        self.members: list[int] = []               # engines of the running collective
        self.joined: bytearray | None = None       # the gathered buffer, after a gather

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


class Engine:
    """The controller's view of one engine."""

    def __init__(self, engine_id: int) -> None:
        self.id = engine_id
        self.rank = engine_rank(engine_id)
        self.queue: collections.deque[Job] = collections.deque()
        self.running: Job | None = None


class Connection:
    """One client socket: first the handshake, then signed messages both ways."""

    def __init__(self, sock: socket.socket, peer: Any, key: bytes) -> None:
        self.sock = sock
        self.peer = peer
        self.key = key
        self.snonce = os.urandom(wire.NONCE)
        self.answer = b""
        self.deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        self.reader: wire.MessageReader | None = None
        self.writer: wire.MessageWriter | None = None
        self.client: str | None = None
        sock.setblocking(False)
        sock.send(wire.GREETING + self.snonce)   # 40 bytes always fit a new socket's buffer

    def handshake(self) -> bool | None:
        """Read the client's answer; True once authenticated, None if it failed."""
        data = self.sock.recv(wire.NONCE + wire.TAG - len(self.answer))
        if not data:
            return None
        self.answer += data
        if len(self.answer) < wire.NONCE + wire.TAG:
            return False
        checked = wire.check_client(self.key, self.snonce, self.answer)
        if checked is None:
            return None
        cnonce, proof = checked
        self.sock.send(proof)
        c2s, s2c = wire.session_keys(self.key, self.snonce, cnonce)
        self.reader, self.writer = wire.MessageReader(c2s), wire.MessageWriter(s2c)
        return True


class Controller:
    """Serves clients on one socket and drives the engines over MPI."""

    def __init__(self, comm: MPI.Comm, listener: socket.socket, info: ConnectionInfo,
                 connection_file: str, backoff: Backoff) -> None:
        self.comm = comm
        self.listener = listener
        self.info = info
        self.key = info.key_bytes
        self.connection_file = connection_file
        self.backoff = backoff
        self.started = time.time()
        self.engines: dict[int, Engine] = {i: Engine(i) for i in range(comm.Get_size() - 1)}
        self.stopped: list[Engine] = []            # killed engines: parked until shutdown
        self.jobs: dict[int, Job] = {}
        self.seq = 0
        self.groups: dict[str, MPI.Comm] = {}
        self.requests: list[tuple[MPI.Request, Callable[[], None] | None, Any]] = []
        self.clients: dict[str, Connection] = {}
        self.kept: dict[str, collections.OrderedDict] = collections.defaultdict(
            collections.OrderedDict)            # client -> unacknowledged results
        self.kept_bytes = 0
        self.status = MPI.Status()
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, None)
        # engines ring it when they reply, so select wakes at once (pympec.doorbell)
        self.doorbell = Doorbell(info.cluster_id, 0)
        if self.doorbell.sock is not None:
            self.selector.register(self.doorbell.sock, selectors.EVENT_READ, self.doorbell)
        self.running = True
        self.tasks = TaskQueue(self)               # the load-balanced task farm

    # -- the loop ----------------------------------------------------------------------

    def serve(self) -> None:
        """Run until a client asks for shutdown (or KeyboardInterrupt)."""
        while self.running:
            delay = self.backoff.delay()
            if any(e.running for e in self.engines.values()):
                delay = min(delay, self.backoff.max)    # a reply may come any moment
            events = self.selector.select(delay)
            active = bool(events)
            for key, mask in events:
                if key.data is None:
                    self.accept()
                elif key.data is self.doorbell:
                    self.doorbell.drain()
                elif mask & selectors.EVENT_READ and key.data.sock.fileno() >= 0:
                    self.on_readable(key.data)
                if mask & selectors.EVENT_WRITE and key.data and key.data.sock.fileno() >= 0:
                    self.on_writable(key.data)
            active |= self.poll_mpi()
            active |= self.dispatch()
            if active:
                self.backoff.reset()
            self.expire_handshakes()

    def shutdown(self) -> None:
        """Tell every engine to exit, wait (bounded) for the sends, close all sockets."""
        for engine in [*self.engines.values(), *self.stopped]:
            self.comm.Isend(encode_header({"verb": "_shutdown"}), engine.rank,
                            TAG_COMMAND).Wait()
            self.doorbell.ring(engine.rank)
        for conn in list(self.clients.values()):
            self.flush_before_close(conn)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        self.selector.close()
        try:  # remove the connection file, unless another cluster has replaced it
            if load(self.connection_file).cluster_id == self.info.cluster_id:
                os.unlink(self.connection_file)
        except (OSError, ValueError):
            pass
        for group in self.groups.values():
            group.Free()

    def flush_before_close(self, conn: Connection, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while conn.writer and conn.writer.pending and time.monotonic() < deadline:
            try:
                conn.writer.flush(conn.sock)
            except ClusterError:
                return
            time.sleep(0.001)

    # -- clients -----------------------------------------------------------------------

    def accept(self) -> None:
        try:
            sock, peer = self.listener.accept()
        except BlockingIOError:
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn = Connection(sock, peer, self.key)
        except OSError:
            sock.close()
            return
        self.selector.register(sock, selectors.EVENT_READ, conn)

    def close(self, conn: Connection, why: str) -> None:
        log.info("closing connection from %s: %s", conn.peer, why)
        if conn.client and self.clients.get(conn.client) is conn:
            del self.clients[conn.client]
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def expire_handshakes(self) -> None:
        now = time.monotonic()
        for key in list(self.selector.get_map().values()):
            conn = key.data
            if isinstance(conn, Connection) and conn.reader is None and now > conn.deadline:
                self.close(conn, "no handshake in time")

    def on_readable(self, conn: Connection) -> None:
        try:
            if conn.reader is None:
                done = conn.handshake()
                if done is None:
                    log.warning("rejected a connection from %s: failed authentication",
                                conn.peer)
                    self.close(conn, "authentication failed")
                return
            for message in conn.reader.read(conn.sock):
                self.handle(conn, message)
        except (ClusterError, OSError) as e:
            self.close(conn, str(e))
        except ProtocolError as e:
            log.warning("protocol error from %s: %s", conn.peer, e)
            self.close(conn, str(e))

    def on_writable(self, conn: Connection) -> None:
        try:
            if conn.writer.flush(conn.sock):
                self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
        except ClusterError as e:
            self.close(conn, str(e))

    def send(self, conn: Connection, header: dict, frames: list = ()) -> None:
        conn.writer.queue(header, frames)
        try:
            if not conn.writer.flush(conn.sock):
                self.selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                                     conn)
        except ClusterError as e:
            self.close(conn, str(e))

    def deliver(self, client: str, header: dict, frames: list) -> None:
        """Send a finished result to its client, and keep it until the client acks it
        (so a client whose link broke gets it again when it reconnects)."""
        size = sum(len(f) for f in frames)
        self.kept[client][header["id"]] = (header, frames, size)
        self.kept_bytes += size
        while self.kept_bytes > RESULT_CAP:
            oldest = max(self.kept.values(), key=lambda kept: sum(e[2] for e in kept.values()))
            _, (_, _, dropped) = oldest.popitem(last=False)
            self.kept_bytes -= dropped
            log.warning("result store over %d bytes (PYMPEC_RESULT_CAP): dropped the "
                        "oldest unacknowledged result", RESULT_CAP)
        conn = self.clients.get(client)
        if conn is not None:
            self.send(conn, header, frames)

    def ack(self, conn: Connection, request: dict) -> None:
        kept = self.kept.get(conn.client, {})
        for result_id in request.get("ids", ()):
            entry = kept.pop(result_id, None)
            if entry is not None:
                self.kept_bytes -= entry[2]

    # -- requests ----------------------------------------------------------------------

    def handle(self, conn: Connection, message: wire.Message) -> None:
        request = message.header
        verb = request.get("verb")
        if verb == "hello":
            self.hello(conn, request)
            return
        if verb == "ack" and conn.client is not None:
            self.ack(conn, request)
            return
        if conn.client is None:
            self.send(conn, {"id": request.get("id"), "error": {
                "ename": "ProtocolError", "evalue": "hello must come first"}})
            return
        try:
            if verb.startswith("task_"):   # the task farm answers its own requests
                self.tasks.handle(conn, message)
                return
            handler = getattr(self, f"do_{verb}", None)
            if handler is not None:
                value = handler(request)
                self.send(conn, {"id": request["id"], "value": value})
            else:
                self.submit(conn.client, request, message)
        except (KernelError, ValueError, TypeError, KeyError) as e:
            self.send(conn, {"id": request.get("id"), "error": {
                "ename": type(e).__name__, "evalue": str(e)}})

    def hello(self, conn: Connection, request: dict) -> None:
        conn.client = str(request.get("client"))
        old = self.clients.get(conn.client)
        if old is not None and old is not conn:
            self.close(old, "the same client connected again")
        self.clients[conn.client] = conn
        self.send(conn, {"id": request.get("id"), "value": self.describe()})
        for header, frames, _ in list(self.kept.get(conn.client, {}).values()):
            self.send(conn, header, frames)   # not acknowledged yet: send again

    def describe(self) -> dict:
        return {"cluster_id": self.info.cluster_id, "engines": list(self.engines),
                "address": self.info.address, "port": self.info.port,
                "started": self.started, "end_time": self.info.end_time,
                "pid": os.getpid()}

    def resolve_targets(self, targets: Any) -> list[int]:
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
        for t in targets:
            if not isinstance(t, int) or t not in self.engines:
                raise InvalidEngineID(f"no engine has id {t!r}; the engines are {ids}")
        if len(set(targets)) != len(targets):
            raise InvalidEngineID(f"targets name an engine twice: {targets}")
        return list(targets)

    def submit(self, client: str, request: dict, message: wire.Message) -> None:
        targets = self.resolve_targets(request.get("targets"))
        if request.get("deliver") == "parts" and (
                len(request.get("parts") or ()) != len(targets)
                or sum(request["parts"]) != len(message.frames)):
            raise ValueError("parts must give a frame count for each target")
        self.seq += 1
        job = Job(self.seq, request, message, client, targets)
        self.jobs[job.seq] = job
        for t in targets:
            self.engines[t].queue.append(job)

    # controller-level verbs: answered at once, no engine involved

    def do_get_ids(self, request: dict) -> list[int]:
        return list(self.engines)

    def do_status(self, request: dict) -> dict:
        status = self.describe()
        status["uptime"] = time.time() - self.started
        status["engine_status"] = [
            {"id": e.id, "running": e.running.describe if e.running else None,
             "queued": len(e.queue)} for e in self.engines.values()]
        return status

    def do_queue_status(self, request: dict) -> list:
        return [[t, {"queue": [job.describe for job in self.engines[t].queue],
                     "pending": self.engines[t].running.describe
                     if self.engines[t].running else "None"}]
                for t in self.resolve_targets(request.get("targets"))]

    def do_clear_queue(self, request: dict) -> None:
        for t in self.resolve_targets(request.get("targets")):
            self.clear_queue(self.engines[t], "clear_queue() was called")

    def do_shutdown(self, request: dict) -> None:
        log.info("shutdown requested by a client")
        self.running = False

    def do_ping(self, request: dict) -> float:
        return time.time()

    # -- engines -----------------------------------------------------------------------

    def dispatch(self) -> bool:
        """Start the head job of every idle engine that can start; True if any did."""
        started = False
        for engine in list(self.engines.values()):
            if engine.running or not engine.queue:
                continue
            job = engine.queue[0]
            if not job.collective():
                self.start_one(job, engine)
                started = True
                continue
            members = [self.engines[t] for t in job.todo]
            if all(m.running is None and m.queue and m.queue[0] is job for m in members):
                self.start_collective(job, members)
                started = True
        started |= self.tasks.dispatch()   # idle engines with nothing queued take tasks
        return started

    def take(self, job: Job, engine: Engine) -> None:
        engine.queue.popleft()
        engine.running = job
        job.todo.remove(engine.id)

    def command(self, job: Job, **fields: Any) -> dict:
        return {"job": job.seq, "verb": job.verb, "args": job.args, **fields}

    def isend(self, buf: Any, rank: int, tag: int) -> None:
        self.track(self.comm.Isend(bytes_spec(buf), rank, tag), keep=buf)
        if tag == TAG_COMMAND:
            self.doorbell.ring(rank)

    def track(self, request: MPI.Request, done: Callable[[], None] | None = None,
              keep: Any = None) -> None:
        self.requests.append((request, done, keep))

    def start_one(self, job: Job, engine: Engine) -> None:
        self.take(job, engine)
        header = self.command(job, reply="p2p")
        if job.deliver != "none":
            start, length, frames = job.region(engine.id)
            header.update(deliver="p2p", region=length, frames=frames)
        self.isend(encode_header(header), engine.rank, TAG_COMMAND)
        if job.deliver != "none":
            payload = memoryview(job.message.payload)[start:start + length]
            self.isend(payload, engine.rank, TAG_DATA)

    def group(self, members: list[Engine]) -> tuple[str, MPI.Comm]:
        """The communicator of the controller plus ``members`` (in order), made once."""
        key = ",".join(str(m.id) for m in members)
        if key not in self.groups:
            ranks = [0] + [m.rank for m in members]
            for m in members:
                self.comm.Isend(encode_header({"verb": "_group", "key": key, "ranks": ranks}),
                                m.rank, TAG_COMMAND).Wait()
                self.doorbell.ring(m.rank)
            # Blocks until the members join; they are all idle, so within one poll.
            self.groups[key] = group_comm(self.comm, ranks)
        return key, self.groups[key]

    def start_collective(self, job: Job, members: list[Engine]) -> None:
        key, comm = self.group(members)
        job.members = [m.id for m in members]
        regions = {m.id: job.region(m.id) for m in members} if job.deliver != "none" else {}
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

    def poll_mpi(self) -> bool:
        """Receive reply headers and complete finished requests; True if anything moved."""
        moved = False
        while self.comm.Iprobe(MPI.ANY_SOURCE, TAG_REPLY, self.status):
            moved = True
            source = self.status.Get_source()
            self.on_reply(self.engine_at(source), recv_header(self.comm, self.status))
        while self.comm.Iprobe(MPI.ANY_SOURCE, TAG_OUTPUT, self.status):
            moved = True
            source = self.status.Get_source()
            self.on_output(source - 1, recv_header(self.comm, self.status))
        pending, self.requests = self.requests, []
        for entry in pending:
            if entry[0].Test():
                moved = True
                if entry[1] is not None:
                    entry[1]()
            else:
                self.requests.append(entry)
        return moved

    def engine_at(self, rank: int) -> Engine:
        engine = self.engines.get(rank - 1)
        return engine or next(e for e in self.stopped if e.rank == rank)

    def on_reply(self, engine: Engine, reply: dict) -> None:
        if "tasks" in reply:   # a task batch's reply
            self.tasks.on_reply(engine, reply)
            return
        job = self.jobs[reply.pop("job")]
        if "nbytes" in reply:
            job.gathering[engine.id] = reply
            if len(job.gathering) == len(job.members):
                self.start_gather(job)
            return
        lengths = reply.pop("lengths")
        frames = [bytearray(n) for n in lengths]
        if not frames:
            self.engine_done(job, engine, reply, [])
            return
        left = [len(frames)]

        def received() -> None:
            left[0] -= 1
            if not left[0]:
                self.engine_done(job, engine, reply, frames)

        for buf in frames:  # posted in order, so they match the engine's sends in order
            self.track(self.comm.Irecv(bytes_spec(buf), engine.rank, TAG_DATA), received, buf)

    def on_output(self, engine_id: int, output: dict) -> None:
        """Forward output of a running execute to its client, if connected (output is
        a convenience: the final record holds all of it anyway)."""
        job = self.jobs.get(output["job"])
        conn = self.clients.get(job.client) if job else None
        if conn is not None:
            self.send(conn, {"id": job.id, "stream": {
                "engine": engine_id, "name": output["name"], "text": output["text"]}})

    def start_gather(self, job: Job) -> None:
        """All gather headers are in: receive every part into one buffer, in place."""
        members = job.members
        counts = [0] + [job.gathering[e]["nbytes"] for e in members]
        displs = [0] + [sum(counts[1:i + 1]) for i in range(len(members))]
        buf = bytearray(sum(counts))
        key = ",".join(str(e) for e in members)

        def gathered() -> None:
            for i, e in enumerate(members):
                reply = job.gathering.pop(e)
                reply["span"] = [displs[i + 1], reply.pop("nbytes")]
                self.engine_done(job, self.engines.get(e) or self.engine_at(e + 1), reply,
                                 [], joined=buf)

        self.track(self.groups[key].Igatherv(bytes_spec(bytearray(0)),
                                             [buf, counts, displs, MPI.BYTE], root=0),
                   gathered, buf)

    def engine_done(self, job: Job, engine: Engine, reply: dict, frames: list,
                    joined: bytearray | None = None) -> None:
        engine.running = None
        job.results[engine.id] = (reply, frames)
        if joined is not None:
            job.joined = joined
        if reply.get("status") == "error":
            self.clear_queue(engine, f"an earlier command failed on engine {engine.id}: "
                                     f"{reply.get('ename')}: {reply.get('evalue')}")
        elif job.verb == "kill":
            log.info("engine %d stopped by kill()", engine.id)
            self.stopped.append(self.engines.pop(engine.id))
            self.clear_queue(engine, f"engine {engine.id} was killed")
        if len(job.results) == len(job.targets):
            self.finish(job)

    def clear_queue(self, engine: Engine, why: str) -> None:
        """Fail every job still queued on ``engine`` with QueueCleared."""
        while engine.queue:
            job = engine.queue.popleft()
            job.todo.remove(engine.id)
            job.results[engine.id] = ({"status": "error", "ename": "QueueCleared",
                                       "evalue": why, "traceback": "", "metas": []}, [])
            if len(job.results) == len(job.targets):
                self.finish(job)

    def finish(self, job: Job) -> None:
        """Every target answered: one reply to the client, results in target order."""
        del self.jobs[job.seq]
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
        self.deliver(job.client, header, frames)


# -- the program --------------------------------------------------------------------------

def listen(ip: str, port: int) -> tuple[socket.socket, str]:
    """A listening socket on ``ip`` (address or host name); returns it and the address
    clients should use."""
    family, _, _, _, sockaddr = socket.getaddrinfo(ip, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(sockaddr)
    sock.listen(64)
    sock.setblocking(False)
    address = sock.getsockname()[0]
    if address in ("0.0.0.0", "::"):
        address = socket.gethostbyname(socket.gethostname())
    return sock, address


def run_controller(comm: MPI.Comm, args: Any, cluster_id: str) -> None:
    """Listen, write the connection file, serve until shutdown."""
    listener, address = listen(args.ip, args.port)
    end_time = os.environ.get("PYMPEC_END_TIME")
    info = ConnectionInfo(address=address, port=listener.getsockname()[1],
                          cluster_id=cluster_id, engines=comm.Get_size() - 1, pid=os.getpid(),
                          started=time.time(), sshserver=args.sshserver,
                          end_time=float(end_time) if end_time else None)
    path = str(resolve(args.connection_file or args.profile))
    info.write(path)
    log.info("controller of cluster %s listening on %s:%d; %d engines; connection file %s",
             cluster_id, address, info.port, info.engines, path)
    controller = Controller(comm, listener, info, path, Backoff.from_env())
    try:
        controller.serve()
    except KeyboardInterrupt:
        log.info("interrupted")
    finally:
        controller.shutdown()
        log.info("controller stopped")
