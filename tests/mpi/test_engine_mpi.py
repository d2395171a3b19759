"""Engine-side units under MPI (pytest-mpi): ``mpiexec -n 3 python -m pytest --with-mpi tests/mpi``.

Rank 0 plays the controller with non-blocking calls, as the real one does; ranks 1 and 2
are engines.  ``tests/test_engine_mpi_units.py`` runs this file under mpiexec.
"""
from __future__ import annotations

import numpy as np
import pytest

from pympec.protocol import serialize
from pympec.protocol.backoff import Backoff
from pympec.engine.loop import Engine
from pympec.engine.interpreter import Interpreter
from pympec.protocol.mpiwire import (CHUNK, TAG_COMMAND, TAG_REPLY, agree_largest, bytes_spec,
                                     encode_header, group_comm, pieces, recv_header)


@pytest.fixture
def world():
    from mpi4py import MPI
    comm = MPI.COMM_WORLD.Dup()
    yield comm
    comm.Free()


def make_engine(comm):
    return Engine(comm, Interpreter(comm.Get_rank() - 1, {}), Backoff(max=1e-4))


@pytest.mark.mpi(min_size=3)
def test_group_comm_made_by_members_only(world):
    rank = world.Get_rank()
    if rank in (0, 2):
        group = group_comm(world, [0, 2])
        assert group.Get_size() == 2 and group.Get_rank() == (0 if rank == 0 else 1)
        group.Free()
    world.Barrier()


@pytest.mark.mpi(min_size=3)
def test_bcast_payload_reaches_engines_writable(world):
    rank = world.Get_rank()
    group = group_comm(world, [0, 1, 2])
    array = np.arange(10.0)
    meta, frames = serialize.encode(array)
    payload = bytearray(frames[0].tobytes())
    if rank == 0:
        request = group.Ibcast(bytes_spec(payload), root=0)
        while not request.Test():
            pass
    else:
        engine = make_engine(world)
        engine.groups["all"] = group
        got = engine.receive_payload({"deliver": "bcast", "group": "all",
                                      "region": len(payload), "frames": [[0, len(payload)]]},
                                     memoryview(b""))
        value = serialize.decode(meta, got)
        assert np.array_equal(value, array) and value.flags.writeable
    group.Free()


@pytest.mark.mpi(min_size=3)
def test_gather_reply_lands_in_one_buffer(world):
    """Parts of unequal size (engine 0's spans two CHUNK rounds, engine 1's one) land in
    one buffer: the engines agree on the round count with the controller first."""
    from mpi4py import MPI
    rank = world.Get_rank()
    group = group_comm(world, [0, 1, 2])
    sizes = {1: CHUNK // 8 + 5, 2: 3}   # int64 elements per engine rank
    if rank == 0:
        # as the controller does: its buffers stay alive until the request completes (Open MPI
        # reads the send buffer later, MPICH at once)
        agreed, both = agree_largest(group, 0)   # both[1]: the largest part, once agreed
        status = MPI.Status()
        headers = {}
        while len(headers) < 2:
            if world.Iprobe(MPI.ANY_SOURCE, TAG_REPLY, status):
                source = status.Get_source()
                headers[source] = recv_header(world, status)[0]
        while not agreed.Test():
            pass
        nbytes = [headers[1]["nbytes"], headers[2]["nbytes"]]
        assert both[1] == max(nbytes) == 8 * sizes[1]
        joined = bytearray(sum(nbytes))
        rounds = []
        for at in pieces(both[1]):
            counts = [min(CHUNK, max(0, n - at)) for n in nbytes]
            where = [min(at, len(joined)), min(nbytes[0] + at, len(joined))]
            rounds.append(group.Igatherv(bytes_spec(bytearray(0)),
                                         [joined, [0, *counts], [0, *where], MPI.BYTE], root=0))
        assert len(rounds) == 2
        for request in rounds:
            while not request.Test():
                pass
        values = np.frombuffer(joined, dtype=np.int64)
        assert (values[:sizes[1]] == 0).all() and values[sizes[1]:].tolist() == [1, 1, 1]
    else:
        engine = make_engine(world)
        engine.groups["all"] = group
        engine.interp.push({"part": np.full(sizes[rank], rank - 1, dtype=np.int64)})
        reply, out = engine.run({"job": 1, "verb": "gather", "args": {"key": "part"}}, [])
        reply["job"] = 1
        engine.send_reply({"reply": "gather", "group": "all"}, reply, out)
    group.Free()


@pytest.mark.mpi(min_size=2)
def test_engine_serves_until_shutdown(world):
    rank = world.Get_rank()
    if rank == 0:
        for r in range(1, world.Get_size()):
            world.Send(encode_header({"job": 1, "verb": "execute", "args": {"code": "x = 2"}}),
                       r, TAG_COMMAND)
        from mpi4py import MPI
        status = MPI.Status()
        for _ in range(1, world.Get_size()):
            world.Probe(MPI.ANY_SOURCE, TAG_REPLY, status)
            reply, tail = recv_header(world, status)
            assert reply["status"] == "ok"
            assert reply["inline"] and len(tail) == sum(reply["lengths"])   # small: one message
        for r in range(1, world.Get_size()):
            world.Send(encode_header({"verb": "_shutdown"}), r, TAG_COMMAND)
    else:
        engine = make_engine(world)
        engine.serve()
        assert engine.interp.namespace["x"] == 2
