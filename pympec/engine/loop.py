"""The engine's loop: ranks 1..N-1 of a cluster, engine id = rank - 1.

An engine serves the controller (rank 0, :mod:`pympec.controller`)::

      controller (rank 0)                          engine (rank id+1)
    ---------------------------------------------------------------------------------
      COMMAND header, JSON, point to point  --->  Iprobe; between polls, sleep on the
        (and a doorbell byte, pympec.protocol.doorbell)      doorbell with the Backoff as timeout
      payload bytes: Isend, or Ibcast/Iscatterv
        on a communicator of controller+targets --> frames -> decode -> Interpreter.<verb>
                                             <---  OUTPUT while an execute runs (stream)
                                             <---  REPLY header, JSON: status, metas
                                             <---  result frames in CHUNK pieces: Isend,
                                                   or Iallreduce + Igatherv rounds

Every MPI wait is a Test loop with the backoff (MPI's own Wait spins, and the
controller's non-blocking collectives only match non-blocking ones).  Runtime traffic
runs on a duplicate of COMM_WORLD, so user MPI code cannot collide with it; user code
gets ``comm``, a communicator of the engines only, and ``mpi``, the mpi4py.MPI module.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

from mpi4py import MPI

from .. import settings
from ..errors import MessageBroken, ProtocolError
from ..protocol import buffers, serialize
from ..protocol.backoff import RUNG, Backoff
from ..protocol.doorbell import Doorbell
from .interpreter import Interpreter
from ..protocol.mpiwire import (CHUNK, COMPLETE, CONTROLLER, INLINE, TAG_COMMAND, TAG_DATA,
                                TAG_LOST, TAG_OUTPUT, TAG_REPLY, agree_largest, bytes_spec,
                                encode_header, group_comm, pieces, recv_header)
from . import failure, interrupt, lastwords
from .tasks import run_batch
from ..protocol.wire import as_bytes_view

log = logging.getLogger("pympec.engine")

INLINE_RECORD = 64 << 10   # larger execute records travel as a frame, not in the header
TRANSFER_SPIN = 0.5   # seconds a transfer is polled without sleeping (see Engine.wait)
TRANSFER_MAX = 1e-3   # then at least this often, so a long transfer keeps advancing
PIECE_SPIN = 5e-4     # seconds a rung engine polls for one piece of a streamed payload
BURST = 3e-4          # a command this soon after the last reply: a burst (see Engine.serve)


# -- the commands: header args and payload frames in, the reply and its frames out ----

def _namespace(interp: Interpreter, args: dict, frames: list) -> dict:
    """The pushed names and values; a scatter gives each engine its own metas."""
    metas = args["metas"] if "metas" in args else args["parts"][str(interp.id)]
    return dict(zip(args["names"], serialize.decode_many(metas, frames)))


def _apply(interp: Interpreter, args: dict, frames: list) -> list:
    """A map chunk: frames hold (function, chunk), or just chunk when ``name`` names
    an engine-side function."""
    if "name" in args:
        return interp.apply(args["name"], serialize.loads(frames))
    func, chunk = serialize.loads(frames)
    return interp.apply(func, chunk)


Handler = Callable[[Interpreter, dict, list], "tuple[dict, list]"]

# The reply to a job sent ahead (with ``after``) behind one that failed: the queue is
# cleared behind a failure, and the controller failed this job as it learnt of it.
SKIPPED = {"status": "error", "ename": "QueueCleared", "traceback": "", "metas": [],
           "evalue": "skipped: the command before it failed"}


def _value(run: Callable[[Interpreter, dict, list], Any]) -> Handler:
    """A verb whose reply is one object per engine (raw arrays, else pickled)."""
    def handler(interp: Interpreter, args: dict, frames: list) -> tuple[dict, list]:
        metas, out = serialize.encode_many([run(interp, args, frames)])
        return {"status": "ok", "metas": metas}, out
    return handler


def _execute(interp: Interpreter, args: dict, frames: list) -> tuple[dict, list]:
    """Its record is plain JSON, never pickled, and a frame of its own when large (a
    long source or output); a failure's reply carries the record too, then the
    exception's frames.  Long code comes as a frame."""
    code = args["code"] if "code" in args else str(frames[0], "utf-8")
    try:
        record, failed = interp.execute(code, args.get("_live")), None
    except BaseException as e:   # SystemExit and KeyboardInterrupt too
        record, failed = interp.history.get(interp.number, {}), e
    meta, out = serialize.encode_json(record, inline=_size(record) <= INLINE_RECORD)
    if failed is None:
        return {"status": "ok", "metas": [meta]}, out
    reply, exc = failure.encode(failed)
    reply["metas"] = [meta]
    return reply, out + exc


def _size(record: dict) -> int:
    """About how many bytes an execute record takes as JSON."""
    return 256 + sum(len(v) if isinstance(v, str) else _size(v) if isinstance(v, dict)
                     else 16 for v in record.values())


def _gather(interp: Interpreter, args: dict, frames: list) -> tuple[dict, list]:
    """One contiguous buffer per engine, ready for ``Igatherv``."""
    meta, buf = serialize.encode_inband(interp.pull([args["key"]])[0])
    return {"status": "ok", "metas": [meta]}, [buf]


# The verbs of pympec.protocol.commands that engines run and answer.
HANDLERS: dict[str, Handler] = {
    "execute": _execute,
    "push": _value(lambda i, a, f: i.push(_namespace(i, a, f))),
    "push_function": _value(lambda i, a, f: i.push_function(_namespace(i, a, f))),
    "pull": _value(lambda i, a, f: i.pull(a["keys"])),
    "gather": _gather,
    "apply": _value(_apply),
    "keys": _value(lambda i, a, f: i.keys()),
    "reset": _value(lambda i, a, f: i.reset()),
    "get_result": _value(lambda i, a, f: i.get_result(a.get("number"))),
    "kill": _value(lambda i, a, f: None),
    "set_properties": _value(lambda i, a, f: i.set_properties(serialize.loads(f))),
    "get_properties": _value(lambda i, a, f: i.get_properties(a.get("keys"))),
    "has_properties": _value(lambda i, a, f: i.has_properties(a["keys"])),
    "del_properties": _value(lambda i, a, f: i.del_properties(a["keys"])),
    "clear_properties": _value(lambda i, a, f: i.clear_properties()),
    "task_batch": run_batch,   # its reply holds one outcome per task
}


class Engine:
    """Receives commands from the controller, runs them, replies."""

    def __init__(self, comm, interp: Interpreter, backoff: Backoff,
                 doorbell: Doorbell | None = None, rung: bool = False,
                 oversubscribed: bool = False) -> None:
        """``rung``: the controller's doorbell rings reach this engine (same host).
        ``oversubscribed``: ranks outnumber cores here, so a spinning rank takes CPU
        from ranks with work; then, where rung, the engine sleeps right after each
        reply and during streamed payloads, until the controller rings, and waits for
        its sends to the controller to be taken with short sleeps, not a spin."""
        self.comm = comm
        self.interp = interp
        self.backoff = backoff
        # sleeps end early when the controller rings (pympec.protocol.doorbell)
        self.doorbell = doorbell or Doorbell(None)
        self.spin_after_reply = not (rung and oversubscribed)
        self.transfer = Backoff(spin=TRANSFER_SPIN, max=TRANSFER_MAX, idle_max=TRANSFER_MAX)
        # a streamed payload comes piece by piece, each with a ring: spin only while
        # one piece moves, sleep between pieces
        self.pieces = Backoff(spin=PIECE_SPIN, **RUNG) if rung else self.transfer
        # A send the controller takes in one go (a reply or output of one message, past
        # MPI's eager size) or from every engine at once (a gather's rounds) moves only
        # as the controller takes it, which it does when rung; where cores are few,
        # spinning for it takes the core the controller needs.
        self.send_wait = self.transfer if self.spin_after_reply else \
            Backoff(spin=PIECE_SPIN, max=TRANSFER_MAX, idle_max=TRANSFER_MAX)
        self.groups: dict[str, Any] = {}   # collective communicators, by key
        self.fault_tolerant = settings.FAULT_TOLERANT.get()   # a member of one may die
        self.failed: int | None = None   # the last job, if it failed or was skipped

    def serve(self) -> bool:
        """Serve until the controller says shutdown; returns whether it said to leave
        without MPI_Finalize (an engine died: see ``pympec.boot``)."""
        status = MPI.Status()
        replied = float("-inf")
        while True:
            if not self.comm.Iprobe(CONTROLLER, TAG_COMMAND, status):
                buffers.trim()   # idle: free buffers nobody reused go back to the system
                if self.doorbell.wait(self.backoff.delay()):
                    self.backoff.reset()   # rung: poll until the command shows in Iprobe
                continue
            burst = time.monotonic() - replied < BURST
            header, tail = recv_header(self.comm, status)
            verb = header.get("verb")
            if verb == "_shutdown":
                log.info("shutdown")
                return bool(header.get("abandon"))
            if verb == "_group":
                self.join_group(header)
                continue
            try:
                self.answer(header, tail)
            except BaseException as e:   # answer() makes every failure a reply, but this
                return self.out_of_service(e)
            replied = time.monotonic()
            # Where ranks outnumber cores an engine sleeps after a reply, unless its
            # commands come in a burst (a loop of block=False calls): then the next is
            # likely to come within BURST, and waiting for it in a spin costs less CPU
            # than a sleep, a ring and a wake-up.
            self.backoff.reset(spin=None if self.spin_after_reply else BURST if burst else 0)

    def join_group(self, header: dict) -> None:
        """Join the communicator of a collective's controller and targets.  If a member
        died meanwhile (fault-tolerant clusters), the commands for it fail instead."""
        try:
            self.groups[header["key"]] = group_comm(self.comm, header["ranks"],
                                                    header.get("fresh", False))
        except MPI.Exception as e:
            log.error("engine %d could not join group %s: %s", self.interp.id, header["key"], e)

    def out_of_service(self, error: BaseException) -> bool:
        """The loop itself failed (a reply could not be sent): tell the controller, which
        fails this engine's calls naming it and takes it out of service, then wait for
        shutdown (returns what :meth:`serve` does).  Exiting instead would end the whole
        MPI job."""
        log.critical("engine %d out of service", self.interp.id, exc_info=error)
        info, _ = failure.encode(error)
        why = f"{info['ename']}: {info['evalue'][:1000]}"
        self.comm.Send(encode_header({"why": why}), CONTROLLER, TAG_LOST)
        self.doorbell.ring(CONTROLLER)
        status = MPI.Status()
        while True:   # parked: only shutdown matters now
            if self.comm.Iprobe(CONTROLLER, TAG_COMMAND, status):
                header = recv_header(self.comm, status)[0]
                if header.get("verb") == "_shutdown":
                    return bool(header.get("abandon"))
            else:
                self.doorbell.wait(0.2)

    def answer(self, header: dict, tail: memoryview) -> None:
        """Run one command and send its reply.  Whatever fails, the user's code or the
        encoding of its result, becomes an error reply: the loop goes on."""
        try:
            frames = self.receive_payload(header, tail)
            if "after" in header and header["after"] == self.failed:
                reply, out = dict(SKIPPED), []   # (the controller failed it already)
            else:
                reply, out = self.run(header, frames)
        except BaseException as e:   # SystemExit and KeyboardInterrupt too
            reply, out = failure.encode(e)
        reply["job"] = header["job"]
        self.failed = header["job"] if reply.get("status") == "error" else None
        try:
            self.send_reply(header, reply, out)
        except BaseException as e:   # the result's bytes could not be sent (MemoryError...)
            log.exception("engine %d could not send a reply", self.interp.id)
            reply, _ = failure.encode(e)
            reply["job"] = header["job"]
            if isinstance(e, MPI.Exception) or header.get("group", "") not in self.groups:
                # its collective broke (a member died): tell the controller directly
                header = {**header, "reply": "p2p"}
            self.send_reply(header, reply, [])

    def receive_payload(self, header: dict, tail: memoryview) -> list[memoryview]:
        """The command's frames, however the controller sends them (``deliver``).
        Raises MessageBroken for a streamed payload that broke off, and ProtocolError
        for a delivery mode this engine does not know (it cannot have been sent)."""
        deliver = header.get("deliver", "none")
        if deliver == "none":
            return []
        if deliver == "inline":   # small payloads came inside the command message
            return [tail[o:o + n] for o, n in header["frames"]]
        if deliver not in ("stream", "p2p", "bcast", "scatter"):
            raise ProtocolError(f"engine {self.interp.id} knows no delivery {deliver!r}")
        buf = buffers.allocate(header["region"])
        if deliver == "stream":
            self.receive_stream(header, buf)
        elif deliver == "p2p":
            self.wait(self.comm.Irecv(bytes_spec(buf), CONTROLLER, TAG_DATA))
        elif deliver == "bcast":
            key = header["group"]
            self.wait(self.groups[key].Ibcast(bytes_spec(buf), root=0), key)
        else:
            key = header["group"]
            self.wait(self.groups[key].Iscatterv(None, bytes_spec(buf), root=0), key)
        view = memoryview(buf)
        return [view[o:o + n] for o, n in header["frames"]]

    def receive_stream(self, header: dict, buf: memoryview) -> None:
        """Receive a payload the controller forwards while it arrives from the client:
        CHUNK-sized pieces, then the verdict byte.  Raises MessageBroken if the
        client's message broke off."""
        requests = [self.comm.Irecv(bytes_spec(buf[at:at + CHUNK]), CONTROLLER, TAG_DATA)
                    for at in pieces(len(buf))]
        verdict = bytearray(1)
        requests.append(self.comm.Irecv(bytes_spec(verdict), CONTROLLER, TAG_DATA))
        self.wait_all(requests, self.pieces)
        if verdict != COMPLETE:
            raise MessageBroken("the client's message broke off before all of it arrived "
                                "(its connection was lost or a signature failed); the "
                                "command did not run")

    def run(self, header: dict, frames: list) -> tuple[dict, list]:
        """Run one command; returns the reply header and its frames.  Raises what the
        command raised, or ProtocolError for a verb engines do not run."""
        handler = HANDLERS.get(header.get("verb"))
        if handler is None:
            raise ProtocolError(f"engine {self.interp.id} runs no verb {header.get('verb')!r}")
        args = dict(header.get("args") or {})
        if args.get("stream"):
            args["_live"] = lambda name, text, job=header["job"]: \
                self.send_output(job, name, text)
        with interrupt.GUARD.running(job=header["job"]):   # (user code: interruptible)
            interrupt.check_called_off(header["job"])
            return handler(self.interp, args, frames)

    def send_reply(self, header: dict, reply: dict, frames: list) -> None:
        """The reply header, then its frames in CHUNK-sized pieces (the controller
        passes each on to the client as it lands): point to point, or for a gather,
        one ``Igatherv`` round per piece, every target taking part in each."""
        views = [as_bytes_view(f) for f in frames]
        if header.get("reply") == "gather":
            self.send_gathered(header, reply, views[0] if views else memoryview(b""))
            return
        reply["lengths"] = [v.nbytes for v in views]
        # Everything is posted, then the controller rung, then waited for: a message
        # past MPI's eager size completes only once the controller receives it, which it
        # does when rung (a blocking Send before the ring spun until its backoff woke it).
        if sum(reply["lengths"]) <= INLINE:   # one message
            reply["inline"] = True
            sends = [self.comm.Isend(bytes_spec(encode_header(reply, views)), CONTROLLER,
                                     TAG_REPLY)]
            backoff = self.send_wait
        else:
            sends = [self.comm.Isend(bytes_spec(encode_header(reply)), CONTROLLER, TAG_REPLY)]
            sends += [self.comm.Isend(bytes_spec(v[at:at + CHUNK]), CONTROLLER, TAG_DATA)
                      for v in views for at in pieces(len(v))]
            backoff = self.transfer   # (one engine's pieces: its spin helps them along)
        self.doorbell.ring(CONTROLLER)
        self.wait_all(sends, backoff)

    def send_gathered(self, header: dict, reply: dict, buf: memoryview) -> None:
        """This engine's part of a gather: the reply header, then the rounds.  Every
        target takes part in every round, so first they agree (an ``Iallreduce`` the
        controller joins too) on the largest part, which sets the number of rounds."""
        group = self.groups[header["group"]]
        reply["nbytes"] = buf.nbytes
        sent = self.comm.Isend(bytes_spec(encode_header(reply)), CONTROLLER, TAG_REPLY)
        request, agreed = agree_largest(group, buf.nbytes)
        self.doorbell.ring(CONTROLLER)
        self.wait_all([sent, request], self.send_wait, header["group"])
        self.wait_all([group.Igatherv(bytes_spec(buf[at:at + CHUNK]), None, root=0)
                       for at in pieces(agreed[1])], self.send_wait, header["group"])

    def send_output(self, job: int, name: str, text: str) -> None:
        """Pass on output of a running execute (the controller forwards it)."""
        message = encode_header({"job": job, "name": name, "text": text})
        request = self.comm.Isend(bytes_spec(message), CONTROLLER, TAG_OUTPUT)
        self.doorbell.ring(CONTROLLER)
        self.wait_all([request], self.send_wait)

    def wait(self, request, group: str | None = None) -> None:
        """Wait for one request (see :meth:`wait_all`)."""
        self.wait_all([request], self.transfer, group)

    def wait_all(self, requests: list, backoff: Backoff, group: str | None = None) -> None:
        """Wait for requests, in order, by polling: MPI's own Wait spins without end,
        and the controller's side is non-blocking, which only non-blocking calls match.

        A large transfer advances only while both sides call into MPI, so the
        ``backoff`` spins first (for a plain transfer, TRANSFER_SPIN seconds, yielding
        the CPU in between), then sleeps on the doorbell; a ring restarts the spin.

        ``group``: the key of the requests' collective communicator.  On a
        fault-tolerant cluster, once the controller says a member of it died
        (``interrupt.REVOKED``), raises MPI.Exception: Open MPI's own revoke does not
        always end the collectives pending on it."""
        watched = group if self.fault_tolerant else None
        backoff.reset()
        for request in requests:
            while not request.Test():
                if watched in interrupt.REVOKED:
                    raise MPI.Exception(MPI.ERR_REVOKED)
                if self.doorbell.wait(backoff.delay()):
                    backoff.reset()


def run_engine(runtime: MPI.Comm, control: MPI.Comm, engines: MPI.Comm, cluster_id: str,
               rung: bool, oversubscribed: bool) -> bool:
    """Serve as engine ``rank - 1`` until shutdown, with a listener thread for
    interrupts on ``control``.  ``engines`` becomes user code's ``comm``; ``rung``: the
    controller shares this host and rings its doorbell.  Returns whether to leave
    without MPI_Finalize (an engine died)."""
    rank = runtime.Get_rank()
    lastwords.install(lastwords.log_stream())   # how it died, should it die
    interp = Interpreter(rank - 1, {"mpi": MPI, "comm": interrupt.UserComm(engines)})
    log.info("engine %d up (pid %d)", rank - 1, os.getpid())
    listener = interrupt.start(control, cluster_id)
    # Where the controller's rings reach, the backoff is only a safety net.
    backoff = Backoff.from_env(spin=1e-3, **(RUNG if rung else {}))
    abandon = Engine(runtime, interp, backoff, Doorbell(cluster_id, rank), rung=rung,
                     oversubscribed=oversubscribed).serve()
    listener.join(timeout=5.0)   # (the controller told it to stop before shutdown)
    return abandon
