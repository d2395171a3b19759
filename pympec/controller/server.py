"""The controller: rank 0 of a pympec cluster.

    clients: TCP, one port              controller: rank 0, one loop          engines
    ----------------------------------------------------------------------------------------
    handshake, then messages  --->  selectors: accept, read, write
      {id, verb, targets, ...}        check the targets, make a Job, append it
      + frames (bytes)                to the FIFO queue of every target engine
                                      dispatch the head of idle engines' queues
                                        over MPI (pympec.controller.engines)        <-->  engines
                                      poll MPI for replies
    <---  reply {id, results}       every target answered: send it to the client,
          + frames                    and keep it until the client acknowledges it

The loop never waits on one party: sockets are non-blocking, MPI calls are non-blocking,
and when nothing happens it sleeps in ``select`` with the Backoff as timeout.  It never
unpickles: it reads JSON headers and moves frames as bytes.

Every request is checked against the command registry (:mod:`pympec.protocol.commands`)
before anything else reads it, and each is handled on its own: a bad one gets an error
reply on its connection, and nothing a client sends can stop the loop.

This module is the client side: connections, requests, the result store.  The engine
side (queues, collectives, MPI replies) is :mod:`pympec.controller.engines`; the task farm is
:mod:`pympec.controller.tasks`.
"""
from __future__ import annotations

import logging
import os
import resource
import selectors
import socket
import sys
import time
from typing import Any, Callable

from mpi4py import MPI

from ..protocol import buffers, headers, wire
from ..protocol.backoff import RUNG, Backoff
from ..cluster.batch.address import facing
from ..connection import ConnectionInfo, load, resolve
from ..protocol import commands
from ..protocol.commands import ENGINES, NONE, BadRequest
from .deaths import Watch
from .engines import STREAM_FROM, Dispatcher
from ..protocol.doorbell import Doorbell
from ..protocol.tls import ServerTLS, server_context
from .door import Connection, Door
from ..errors import ClusterError, KernelError, ProtocolError
from .. import settings
from .request import LATER, Request
from .store import ResultStore
from .tasks import TaskFarm

log = logging.getLogger("pympec.controller")

BACKLOG = 64 << 20   # bytes of replies a client has not read, past which its requests wait
STALLED = 0.05       # seconds without progress after which pending MPI requests are
STALLED_POLL = 1e-3  # polled this often, not in a spin (a 4 MB piece moves in far less)

class Controller:
    """Serves clients on one socket and drives the engines over MPI."""

    def __init__(self, comm: MPI.Comm, control: MPI.Comm, listener: socket.socket,
                 info: ConnectionInfo, connection_file: str, backoff: Backoff,
                 where: list[tuple[str, int]], tls: ServerTLS | None = None) -> None:
        """``where``: each engine's host and pid, by engine id; ``tls``: wrap client
        connections in TLS."""
        self.comm = comm
        self.listener = listener
        self.info = info
        self.key = info.key_bytes
        self.connection_file = connection_file
        self.backoff = backoff
        self.started = time.time()
        self.clients: dict[str, Connection] = {}
        self.store = ResultStore()                  # what clients are owed
        self.dirty: dict[Connection, None] = {}     # clients with replies queued, unwritten
        self.selector = selectors.DefaultSelector()
        self.door = Door(listener, self.selector, self.key, self.streamed, tls)
        # engines ring it when they reply, so select wakes at once (pympec.protocol.doorbell)
        self.doorbell = Doorbell(info.cluster_id, 0)
        if self.doorbell.sock is not None:
            self.selector.register(self.doorbell.sock, selectors.EVENT_READ, self.doorbell)
        self.running = True
        self.next_check = 0.0   # when to look for connections stalled mid-message
        self.dispatcher = Dispatcher(comm, control, self.deliver, self.forward,
                                     self.doorbell.ring, where)
        self.engines = self.dispatcher.engines     # id -> engine, as the controller sees it
        self.next_watch = 0.0   # when to ask the MPI again which engines died
        if settings.FAULT_TOLERANT.get():   # (only an MPI that survives them reports them)
            log.info("fault tolerant: watching for dead engines")
            here = socket.gethostname()
            self.dispatcher.watch = Watch(comm, info.cluster_id, {
                e.rank: e.pid for e in self.engines.values() if e.host == here})
        self.farm = TaskFarm(self.dispatcher, self.store, self.reply)   # the task farm
        self.handlers = {**self.own_handlers(), **self.farm.handlers()}
        answered_here = {c.name for c in commands.COMMANDS.values()
                         if c.runs != ENGINES and c.name not in ("hello", "ack")}
        assert set(self.handlers) == answered_here, "a verb without its handler"

    # -- the loop ----------------------------------------------------------------------

    def serve(self) -> None:
        """Run until a client asks for shutdown (or KeyboardInterrupt)."""
        moved = time.monotonic()   # when the loop last did something
        while self.running:
            delay = self.backoff.delay()
            if self.dispatcher.requests:
                # MPI transfers advance only while we call into MPI: spin while things
                # move; once they wait on a busy engine (a command sent ahead of a long
                # one), poll often, but leave the core to that engine
                stalled = time.monotonic() - moved > STALLED
                delay = min(delay, STALLED_POLL) if stalled else 0.0
            elif self.dispatcher.busy():
                delay = min(delay, self.backoff.max)    # a reply may come any moment
            events = self.selector.select(delay)
            active = bool(events)
            for key, mask in events:
                self.on_event(key.data, mask)
            if self.dispatcher.poll():
                active = True
                self.pump()
            active |= self.dispatcher.dispatch()
            active |= self.farm.dispatch()   # idle engines with nothing queued take tasks
            active |= self.watch_engines()
            self.dispatcher.ring_unrung()
            self.write_dirty()
            now = time.monotonic()
            if active:
                self.backoff.reset()
                moved = now
            elif delay == 0:
                os.sched_yield()   # spinning: let a woken engine have this core first
            self.door.tick(now)
            if now >= self.next_check:
                self.next_check = now + 1.0
                self.drop_stalled(now)
            self.store.sweep()
            buffers.trim()

    def watch_engines(self) -> bool:
        """On a fault-tolerant cluster, once a second, or at once after an MPI call
        failed, take the engines the MPI reports dead out of service (a local MPI call,
        no wait); True if there were any."""
        if self.dispatcher.watch is None:
            return False
        now = time.monotonic()
        if not self.dispatcher.suspect and now < self.next_watch:
            return False
        self.next_watch = now + 1.0
        return self.dispatcher.check_deaths()

    def shutdown(self) -> bool:
        """Finish the transfers in flight (bounded), tell every engine to exit, send
        what clients are owed (bounded), close all sockets.  Returns whether an engine
        died (then the ranks leave without MPI_Finalize)."""
        self.drain()
        abandon = self.dispatcher.shutdown()
        for conn in list(self.clients.values()):
            self.flush_before_close(conn)
        self.door.close()
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        self.selector.close()
        try:  # remove the connection file, unless another cluster has replaced it
            if load(self.connection_file).cluster_id == self.info.cluster_id:
                os.unlink(self.connection_file)
        except (OSError, ValueError):
            pass
        return abandon

    def drain(self, timeout: float = 5.0) -> None:
        """Let the jobs running and the MPI transfers in flight end (a gather's rounds
        start only once every reply header is in), so no engine is left waiting in a
        transfer, and results still landing reach their clients whole.  A request still arriving
        from a client is cut off: its engines get the rest and the verdict "broken"."""
        for conn in self.clients.values():
            if conn.reader is not None and conn.reader.partial is not None:
                conn.reader.partial.failed = True
        deadline = time.monotonic() + timeout
        dispatcher = self.dispatcher
        while ((dispatcher.requests or dispatcher.streams or dispatcher.busy())
               and time.monotonic() < deadline):
            if dispatcher.poll() | dispatcher.forward():
                self.pump()
            else:
                os.sched_yield()
        dispatcher.ring_unrung()

    def flush_before_close(self, conn: Connection, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while conn.writer and conn.writer.pending and time.monotonic() < deadline:
            try:
                conn.writer.flush(conn.sock)
            except ClusterError:
                return
            time.sleep(0.001)

    # -- clients -----------------------------------------------------------------------

    def on_event(self, target: Any, mask: int) -> None:
        """One selector event: the listener, the doorbell, or a connection."""
        if target is self.door:
            self.door.accept()
        elif target is self.doorbell:
            self.doorbell.drain()
        elif target.sock.fileno() < 0:
            return   # closed by an earlier event of this pass
        elif target.reader is None:
            self.door.on_readable(target)
            if target.reader is not None and target.buffered():
                self.on_readable(target)   # TLS decrypted a request with the answer
        else:
            if mask & selectors.EVENT_READ:
                self.on_readable(target)
            if mask & selectors.EVENT_WRITE and target.sock.fileno() >= 0:
                self.on_writable(target)

    def streamed(self, message: wire.Message) -> bool:
        """Whether to take a request as soon as its header is checked, and forward its
        payload to its engine while it arrives: large requests for one engine.  (A
        payload for several engines waits for the whole message and goes by
        ``Ibcast``/``Iscatterv``: with warm buffers, measured in alternation, that
        scatters 400 MB at 2.8 GB/s against 2.0-2.2 forwarded piece by piece to each.)"""
        if sum(map(len, message.frames)) < STREAM_FROM:
            return False
        try:
            command = commands.check(message.header, len(message.frames))
            return command.runs == ENGINES and len(
                self.dispatcher.resolve_targets(message.header.get("targets"))) == 1
        except (BadRequest, KernelError):
            return False   # handle() will answer with the error

    def close(self, conn: Connection, why: str) -> None:
        log.info("closing connection from %s: %s", conn.peer, why)
        partial = conn.reader.partial if conn.reader else None
        if partial is not None:   # its engines get the verdict "broken" (pympec.controller.engines)
            partial.failed = True
        if conn.client is not None and self.clients.get(conn.client) is conn:
            del self.clients[conn.client]
            self.store.disconnected(conn.client)
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def drop_stalled(self, now: float) -> None:
        """Close the connections that stopped in the middle of a message for longer than
        PYMPEC_CONTROLLER_TIMEOUT: a streamed request holds its engines until it ends,
        and any half message holds memory."""
        limit = settings.CONTROLLER_TIMEOUT.get()
        for key in list(self.selector.get_map().values()):
            conn = key.data
            if isinstance(conn, Connection) and conn.reader is not None and not \
                    conn.paused and conn.reader.midway and now - conn.heard > limit:
                self.close(conn, f"stopped mid-message for {now - conn.heard:.0f} s")

    def on_readable(self, conn: Connection) -> None:
        conn.heard = time.monotonic()
        try:
            for message in conn.reader.read(conn.sock):
                if conn.sock.fileno() < 0:
                    return   # an earlier request of this read closed it
                self.handle(conn, message)
            if conn.writer.backlog > BACKLOG:   # (else flush() sets what to watch)
                self.pace(conn)
        except (ClusterError, OSError) as e:
            self.close(conn, str(e))
        except ProtocolError as e:
            log.warning("protocol error from %s: %s", conn.peer, e)
            self.close(conn, str(e))
        except Exception as e:   # a bug of ours: this connection goes, the loop stays
            log.exception("internal error reading from %s", conn.peer)
            self.close(conn, f"internal error: {e!r}")

    def on_writable(self, conn: Connection) -> None:
        self.flush(conn)

    def send(self, conn: Connection, header: dict | bytes, frames: list = ()) -> None:
        """Queue a message to a client; it is written at the end of this pass of the
        loop, with whatever else the pass queued for that client (one write for many
        replies), the rest when the socket is writable, and a result still landing
        (wire.Filling) as it lands."""
        conn.writer.queue(header, frames)
        self.dirty[conn] = None

    def write_dirty(self) -> None:
        """Write what this pass of the loop queued for clients."""
        dirty, self.dirty = self.dirty, {}
        for conn in dirty:
            if conn.sock.fileno() >= 0:
                self.flush(conn)

    def flush(self, conn: Connection) -> None:
        """Write what the socket takes; watch it for writing while more waits."""
        try:
            conn.writer.flush(conn.sock)
        except ClusterError as e:
            self.close(conn, str(e))
            return
        self.pace(conn)

    def pace(self, conn: Connection) -> None:
        """Watch ``conn`` for what may happen next: writing, while replies wait and
        have landed; reading, unless its unread replies passed BACKLOG bytes.  Then its
        requests wait in the socket (and TCP slows its sender) until it has read at
        least half of them: a client that never reads cannot grow the controller."""
        writer = conn.writer
        if conn.sock.fileno() < 0:
            return   # closed
        if writer.backlog > BACKLOG:
            conn.paused = True
        elif conn.paused and writer.backlog <= BACKLOG // 2:
            conn.paused = False
            if conn.buffered():   # (TLS holds bytes select cannot see)
                self.on_readable(conn)
                return
        events = (0 if conn.paused else selectors.EVENT_READ) | (
            selectors.EVENT_WRITE if writer.pending and not writer.stalled else 0)
        key = self.selector.get_map().get(conn.sock)
        if key is None:
            if events:
                self.selector.register(conn.sock, events, conn)
        elif not events:   # paused, and waiting on a result to land (pump writes it)
            self.selector.unregister(conn.sock)
        elif key.events != events:
            self.selector.modify(conn.sock, events, conn)

    def pump(self) -> None:
        """More of some result has landed: write on to the clients that waited on it."""
        for conn in list(self.clients.values()):
            if conn.writer.pending:
                self.flush(conn)

    def deliver(self, clients: list[str], header: dict, frames: list, size: int) -> None:
        """Send a finished result to its clients (its sender, and any that asked for it
        by id), and keep it until one acks it, so a client whose link broke gets it
        again when it reconnects; the last to ask owns it."""
        self.store.keep(clients[-1], header, frames, size + sum(len(f) for f in frames))
        if clients[-1] not in self.clients:
            self.store.absent(clients[-1])
        for client in clients:
            self.resend(client, header["id"])

    def resend(self, client: str, result_id: str) -> None:
        """Send a kept result to ``client``, if connected."""
        conn = self.clients.get(client)
        kept = self.store.results.get(result_id)
        if conn is not None and kept is not None:
            self.send(conn, kept.header, kept.frames)

    def forward(self, client: str, header: dict) -> None:
        """Pass output of a running call to its client, if connected (never kept: the
        final reply holds all of it)."""
        conn = self.clients.get(client)
        if conn is not None:
            self.send(conn, header)

    # -- requests ----------------------------------------------------------------------

    def handle(self, conn: Connection, message: wire.Message) -> None:
        """Check one request against the registry, then answer or queue it.  Any error,
        the client's or a bug of ours, becomes an error reply on this connection (or,
        for a request without an id to answer, closes it): the loop goes on."""
        request = message.header
        request_id = request.get("id") if isinstance(request, dict) else None
        try:
            command = commands.check(request, len(message.frames))
            if conn.client is None and command.name != "hello":
                raise BadRequest("the first request must be hello")
            self.run(conn, Request(conn.client, command, request, message))
        except (KernelError, ValueError, TypeError, KeyError, IndexError, MemoryError) as e:
            self.refuse(conn, request_id, type(e).__name__, str(e))
        except Exception as e:
            log.exception("internal error in a request from %s", conn.peer)
            self.refuse(conn, request_id, "KernelError",
                        f"internal error in the controller: {type(e).__name__}: {e}")

    def refuse(self, conn: Connection, request_id: Any, ename: str, evalue: str) -> None:
        """Answer a request with an error, if it can be answered."""
        if isinstance(request_id, str) and request_id:
            self.send(conn, {"id": request_id, "error": {"ename": ename, "evalue": evalue}})
        else:
            log.warning("protocol error from %s: %s", conn.peer, evalue)
            self.close(conn, f"a request without an id to answer: {evalue}")

    def run(self, conn: Connection, request: Request) -> None:
        """Carry out a checked request."""
        command, header = request.command, request.header
        if command.name == "hello":
            self.hello(conn, header)
            return
        if header.get("acks"):   # acks ride on any request
            self.store.ack(header["acks"])
        if command.reply == NONE:   # an ack alone
            return
        if header["id"] in self.store.results:
            raise ValueError(f"a request with id {header['id']!r} was already answered")
        if command.runs == ENGINES:
            self.store.check_room()
            self.dispatcher.submit(request)
            return
        value = self.handlers[command.name](request)
        if value is not LATER:
            self.reply(conn.client, header["id"], value, keep=command.kept)

    def reply(self, client: str, request_id: str, value: Any, frames: list = (),
              keep: bool = True) -> bool:
        """Send a value to a client if it is connected; with ``keep``, keep it until
        the client acknowledges it, as results are kept: a reply lost with the
        connection (the ids a task submission took, the results a fetch took) comes
        again when the client reconnects or asks for it by id.  Past the store's cap
        it is sent, not kept.  True if the client was connected."""
        conn = self.clients.get(client)
        if conn is None:
            return False
        header = {"id": request_id, "value": value}
        head = headers.dumps(header)   # (once: its size is what the store counts)
        if keep and self.store.used <= self.store.cap:
            self.store.keep(client, header, frames, len(head) + sum(len(f) for f in frames))
        self.send(conn, head, frames)
        return True

    def hello(self, conn: Connection, request: dict) -> None:
        if conn.client is not None:
            raise BadRequest("hello came twice on one connection")
        conn.client = request["client"]
        old = self.clients.get(conn.client)
        if old is not None and old is not conn:
            self.close(old, "the same client connected again")
        self.clients[conn.client] = conn
        self.store.connected(conn.client)
        self.store.ack(request.get("acks") or [])
        self.send(conn, {"id": request.get("id"), "value": self.describe()})
        for kept in self.store.owned(conn.client):   # not acknowledged yet: send again
            self.resend(conn.client, kept.header["id"])
            self.store.sent(kept.header["id"])

    def describe(self) -> dict:
        return {"cluster_id": self.info.cluster_id, "engines": list(self.engines),
                "address": self.info.address, "port": self.info.port,
                "started": self.started, "end_time": self.info.end_time,
                "pid": os.getpid()}

    # controller-level verbs: answered at once, no engine involved

    def own_handlers(self) -> dict[str, Callable[[Request], Any]]:
        """The verbs the controller answers itself: ``handler(request)`` returns the
        value to reply with."""
        return {"get_ids": lambda r: list(self.engines),
                "status": lambda r: self.status(),
                "queue_status": lambda r: self.dispatcher.queue_status(r.header.get("targets")),
                "clear_queue": lambda r: self.clear_queue(r.header.get("targets")),
                "shutdown": lambda r: self.stop(),
                "ping": lambda r: time.time(),
                "interrupt": lambda r: self.dispatcher.interrupt(r.header.get("targets"),
                                                                 r.header.get("request")),
                "result": self.find_results}

    def find_results(self, request: Request) -> Any:
        """Where the results a client asks for by id stand (after a reconnect, or from
        another process): kept ones are sent again, to it, after this reply; running ones
        will be; the others are unknown, with the reason when it is known."""
        client = request.client
        found: dict[str, Any] = {"resent": [], "pending": [], "unknown": {}}
        for result_id in request.header["ids"]:
            if self.store.claim(result_id, client) is not None:
                found["resent"].append(result_id)
            elif self.dispatcher.claim(result_id, client):
                found["pending"].append(result_id)
            else:
                found["unknown"][result_id] = self.store.why_released(result_id) or (
                    "the controller never received it: it was lost with its connection, "
                    "or it belongs to another cluster")
        self.reply(client, request.header["id"], found, keep=False)
        if request.header.get("resend", True):   # (a reconnect's hello has sent them)
            for result_id in found["resent"]:
                self.resend(client, result_id)
        return LATER

    def status(self) -> dict:
        status = self.describe()
        status["uptime"] = time.time() - self.started
        status["engine_status"] = self.dispatcher.engine_status()
        status["held"] = self.store.summary()
        status["clients"] = len(self.clients)
        return status

    def clear_queue(self, targets: Any) -> None:
        for t in self.dispatcher.resolve_targets(targets):
            self.dispatcher.clear_queue(self.engines[t], "clear_queue() was called")

    def stop(self) -> None:
        log.info("shutdown requested by a client")
        self.running = False


# -- the program --------------------------------------------------------------------------

def listen(ip: str, port: int, tls: bool = False) -> tuple[socket.socket, str]:
    """A listening socket on ``ip`` (address or host name); returns it and the address
    clients should use.  On a wildcard address it warns (on stderr and in the log) that
    every interface listens, and gives the address facing the submit host, or the
    outside, never 0.0.0.0 nor a loopback one.  ``tls``: the traffic is encrypted."""
    family, _, _, _, sockaddr = socket.getaddrinfo(ip, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(sockaddr)
    sock.listen(1024)   # a deep backlog: a burst of connections waits instead of failing
    sock.setblocking(False)
    address = sock.getsockname()[0]
    if address in ("0.0.0.0", "::"):
        address = facing()
        traffic = ("encrypted (--tls)" if tls else
                   "signed but not encrypted (--tls encrypts it)")
        warning = (f"pympec: the controller listens on every interface ({ip}); any host "
                   f"that reaches port {sock.getsockname()[1]} may try the key, and the "
                   f"traffic is {traffic}. Clients are told {address}")
        log.warning(warning)
        print(warning, file=sys.stderr, flush=True)
    return sock, address


def raise_file_limit() -> None:
    """Let the controller use the hard limit of open files: each client costs one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, e)


def run_controller(comm: MPI.Comm, control: MPI.Comm, args: Any, cluster_id: str,
                   where: list[tuple[str, int]], rung: bool = False) -> bool:
    """Listen, write the connection file, serve until shutdown.  ``rung``: every engine
    shares this host, so their doorbell rings wake the controller for each reply.
    Returns whether to leave without MPI_Finalize (an engine died)."""
    raise_file_limit()
    tls = server_context(f"pympec controller {cluster_id}") if args.tls else None
    listener, address = listen(args.ip, args.port, args.tls)
    info = ConnectionInfo(address=address, port=listener.getsockname()[1],
                          cluster_id=cluster_id, engines=comm.Get_size() - 1, pid=os.getpid(),
                          started=time.time(), sshserver=args.sshserver,
                          end_time=settings.END_TIME.get(),
                          tls_fingerprint=tls.fingerprint if tls else None)
    path = str(resolve(args.connection_file or args.profile))
    info.write(path)
    log.info("controller of cluster %s listening on %s:%d%s; %d engines; connection file %s",
             cluster_id, address, info.port, f" with TLS (certificate {tls.fingerprint})"
             if tls else "", info.engines, path)
    print(f"pympec: cluster {cluster_id} at {address}:{info.port} with {info.engines} engines"
          f"{' (TLS)' if tls else ''}; connection file {path}", file=sys.stderr,
          flush=True)   # the banner, for hand-started clusters
    # Idle, the controller can sleep long: sockets and local engines' doorbells wake it
    # at once.  While an engine runs something, its sleeps stay under backoff.max, which
    # is short unless every engine can ring.
    backoff = Backoff.from_env(spin=1e-3, **(RUNG if rung else {"idle_max": 0.1}))
    controller = Controller(comm, control, listener, info, path, backoff, where, tls)
    try:
        controller.serve()
    except KeyboardInterrupt:
        log.info("interrupted")
    finally:
        abandon = controller.shutdown()
        log.info("controller stopped")
    return abandon
