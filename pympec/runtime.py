"""The controller-engine protocol on MPI: tags, and JSON headers sent point to point.

Every command and reply starts with a small JSON header sent point to point; payload
bytes follow as raw MPI messages or collectives the header names.  JSON (never pickle)
means the controller reads headers without unpickling anything a client sent.
"""
from __future__ import annotations

import json
from typing import Any

from mpi4py import MPI

CONTROLLER = 0
TAG_COMMAND = 11   # controller -> engine: JSON header
TAG_REPLY = 12     # engine -> controller: JSON header
TAG_DATA = 13      # payload bytes, either way, in the order the header lists them
TAG_GROUP = 14     # Create_group of a collective communicator
TAG_OUTPUT = 15    # engine -> controller: JSON, stdout/stderr text of a running execute


def engine_rank(engine_id: int) -> int:
    return engine_id + 1


def encode_header(header: dict) -> bytes:
    return json.dumps(header, separators=(",", ":")).encode()


def recv_header(comm: MPI.Comm, status: MPI.Status) -> dict:
    """Receive the JSON header a successful Iprobe found (its status given)."""
    buf = bytearray(status.Get_count(MPI.BYTE))
    comm.Recv([buf, MPI.BYTE], status.Get_source(), status.Get_tag())
    return json.loads(buf)


def bytes_spec(buf: Any) -> list:
    return [buf, MPI.BYTE]


def group_comm(comm: MPI.Comm, ranks: list[int]) -> MPI.Comm:
    """The communicator of ``ranks`` (controller first), made only by its members."""
    group = comm.Get_group().Incl(ranks)
    try:
        return comm.Create_group(group, TAG_GROUP)
    finally:
        group.Free()
