"""The controller-engine protocol on MPI: tags, and JSON headers sent point to point.

Every command and reply is one point-to-point message: a u32 length, a JSON header,
then small payloads inline (up to INLINE bytes; one message instead of several is
what makes small calls fast).  Larger payloads follow as raw MPI messages or the
collectives the header names, in pieces of CHUNK bytes, so the far side can use
(forward, sign, send on) each piece while the next one moves.  JSON (never pickle) means the controller reads headers
without unpickling anything a client sent.
"""
from __future__ import annotations

import array
import struct
from typing import Any, Sequence

from mpi4py import MPI

from . import headers

CONTROLLER = 0
TAG_COMMAND = 11   # controller -> engine: JSON header
TAG_REPLY = 12     # engine -> controller: JSON header
TAG_DATA = 13      # payload bytes, either way, in the order the header lists them
TAG_GROUP = 14     # Create_group of a collective communicator
TAG_OUTPUT = 15    # engine -> controller: JSON, stdout/stderr text of a running execute
TAG_INTERRUPT = 16  # controller -> engine's listener, on its own communicator: JSON
INTERRUPT_BELL = "i"   # the doorbell (pympec.protocol.doorbell) of an engine's listener
TAG_LOST = 17      # engine -> controller: JSON, the engine's loop failed; it is parked


COMPLETE, BROKEN = b"\1", b"\0"   # the verdict byte after a streamed payload


def engine_rank(engine_id: int) -> int:
    return engine_id + 1


INLINE = 64 << 10     # payloads up to this many bytes travel inside the header message
CHUNK = 4 << 20       # bytes per piece of a payload or result that moves in pieces
_LENGTH = struct.Struct("!I")


def encode_header(header: dict, inline: Sequence[Any] = ()) -> bytes:
    """One message: the header's length, the JSON header, then ``inline`` bytes."""
    head = headers.dumps(header)
    return b"".join([_LENGTH.pack(len(head)), head, *inline])


def recv_header(comm: MPI.Comm, status: MPI.Status) -> tuple[dict, memoryview]:
    """Receive the message a successful Iprobe found (its status given): its JSON
    header, and the inline bytes after it."""
    buf = bytearray(status.Get_count(MPI.BYTE))
    comm.Recv([buf, MPI.BYTE], status.Get_source(), status.Get_tag())
    end = _LENGTH.size + _LENGTH.unpack_from(buf)[0]
    return headers.loads(memoryview(buf)[_LENGTH.size:end]), memoryview(buf)[end:]


def pieces(nbytes: int) -> range:
    """Where the CHUNK-sized pieces of ``nbytes`` bytes start (none for 0 bytes): both
    sides of a transfer in pieces cut it with this."""
    return range(0, nbytes, CHUNK)


def agree_largest(comm: MPI.Comm, nbytes: int) -> tuple[MPI.Request, array.array]:
    """Start the ``Iallreduce`` by which a gather's controller and targets agree on its
    largest part, hence its number of rounds (the controller gives 0).  Returns the
    request and a buffer whose item 1 holds the answer once it completes (item 0 is
    this rank's part: one array holds both, so keeping it keeps both alive)."""
    both = array.array("q", [nbytes, 0])
    view = memoryview(both)
    return comm.Iallreduce([view[0:1], MPI.INT64_T], [view[1:2], MPI.INT64_T],
                           op=MPI.MAX), both


def split(tail: memoryview, lengths: Sequence[int]) -> list[memoryview]:
    """Cut inline bytes into frames of ``lengths``."""
    frames, at = [], 0
    for n in lengths:
        frames.append(tail[at:at + n])
        at += n
    return frames


def bytes_spec(buf: Any) -> list:
    return [buf, MPI.BYTE]


def group_comm(comm: MPI.Comm, ranks: list[int], fresh: bool = False) -> MPI.Comm:
    """The communicator of ``ranks`` of ``comm`` (controller first), made only by its
    members.  ``fresh`` (fault-tolerant clusters): made from the group alone
    (``MPI_Comm_create_from_group``), since under ULFM a communicator made from ``comm``
    fails once any rank of ``comm`` has died, member or not.  Its errors are returned, as
    MPI.Exception, so a collective a member died in fails instead of ending the process.
    Blocks until every member has called it; raises MPI.Exception if one died."""
    world = comm.Get_group()
    group = world.Incl(ranks)
    try:
        if fresh:
            return MPI.Intracomm.Create_from_group(
                group, "pympec:" + ",".join(map(str, ranks)),
                errhandler=MPI.ERRORS_RETURN)
        made = comm.Create_group(group, TAG_GROUP)
    finally:
        group.Free()
        world.Free()
    made.Set_errhandler(MPI.ERRORS_RETURN)
    return made
