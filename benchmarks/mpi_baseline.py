"""Raw mpi4py baselines, run under ``mpiexec -n K`` by the suite (rank 0 plays the
controller, ranks 1..K-1 the engines), printing one JSON object on rank 0.

    mpi_baseline.py latency REPEAT
        round trip of a 64-byte Send/Recv 0<->1, and of a 64-byte Bcast + Gather on all
    mpi_baseline.py bandwidth TOTAL_BYTES PUSH_BYTES REPEAT
        Scatterv / Gatherv of TOTAL_BYTES between rank 0 and the others (rank 0 has no
        part, as the controller has none); Send / Recv and Bcast of PUSH_BYTES
    mpi_baseline.py taskfarm TASKS CHUNK REPEAT
        a master/worker task farm: rank 0 hands out TASKS tiny tasks (an identity
        function of an int), CHUNK per message, with ``comm.send``/``comm.recv``
        (pickled), one message in flight per worker, the next chunk to whichever
        worker answers first (dynamic load balancing); results land in input order

Times are per operation, in seconds: medians and p99 for latency, the best of REPEAT
for bandwidth.  Buffers are allocated and touched before timing.
"""
import json
import sys
import time

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()


def latency(repeat: int) -> dict:
    small = np.zeros(64, np.uint8)
    gathered = np.zeros(64 * size, np.uint8)
    p2p, coll = [], []
    for _ in range(repeat):
        comm.Barrier()
        t0 = time.perf_counter()
        if rank == 0:
            comm.Send(small, 1)
            comm.Recv(small, 1)
        elif rank == 1:
            comm.Recv(small, 0)
            comm.Send(small, 0)
        p2p.append(time.perf_counter() - t0)
    for _ in range(repeat):
        comm.Barrier()
        t0 = time.perf_counter()
        comm.Bcast(small, root=0)
        comm.Gather(small, gathered, root=0)
        coll.append(time.perf_counter() - t0)
    return {"p2p": p2p, "collective": coll}


def bandwidth(total: int, push: int, repeat: int) -> dict:
    k = size - 1
    counts = [0] + [total // k + (i < total % k) for i in range(k)]
    displs = [sum(counts[:i]) for i in range(size)]
    whole = np.ones(total, np.uint8) if rank == 0 else None
    part = np.ones(counts[rank], np.uint8)
    pushbuf = np.ones(push, np.uint8)
    out: dict = {}

    def run(name, f):
        times = []
        for _ in range(repeat):
            comm.Barrier()
            t0 = time.perf_counter()
            f()
            comm.Barrier()
            times.append(time.perf_counter() - t0)
        out[name] = min(times)

    run("scatter", lambda: comm.Scatterv([whole, counts, displs, MPI.BYTE] if rank == 0
                                         else None, part, root=0))
    run("gather", lambda: comm.Gatherv(part, [whole, counts, displs, MPI.BYTE] if rank == 0
                                       else None, root=0))
    run("bcast", lambda: comm.Bcast(pushbuf, root=0))

    def p2p(source: int, dest: int):
        def move():
            if rank == source:
                comm.Send(pushbuf, dest)
            elif rank == dest:
                comm.Recv(pushbuf, source)
        return move
    run("send", p2p(0, 1))
    run("recv", p2p(1, 0))
    return out


def identity(x):
    return x


def taskfarm(ntasks: int, chunk: int, repeat: int) -> dict:
    """Seconds for the whole farm (first send to last result), each of REPEAT runs."""
    times = []
    for _ in range(repeat):
        comm.Barrier()
        t0 = time.perf_counter()
        if rank == 0:
            results: list = [None] * ntasks
            status = MPI.Status()
            starts = iter(range(0, ntasks, chunk))
            busy = 0
            for worker in range(1, size):           # one message in flight per worker
                start = next(starts, None)
                if start is None:
                    break
                comm.send((start, list(range(start, min(start + chunk, ntasks)))), worker)
                busy += 1
            while busy:
                start, values = comm.recv(source=MPI.ANY_SOURCE, status=status)
                results[start:start + len(values)] = values
                following = next(starts, None)
                if following is None:
                    busy -= 1
                    continue
                comm.send((following, list(range(following, min(following + chunk,
                                                                 ntasks)))),
                          status.Get_source())
            for worker in range(1, size):
                comm.send(None, worker)
            assert results[-1] == ntasks - 1 and results[ntasks // 2] == ntasks // 2
        else:
            while True:
                task = comm.recv(source=0)
                if task is None:
                    break
                start, args = task
                comm.send((start, [identity(a) for a in args]), 0)
        times.append(time.perf_counter() - t0)
    return {"seconds": times, "tasks": ntasks, "chunk": chunk}


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "latency":
        result = latency(int(sys.argv[2]))
    elif mode == "taskfarm":
        result = taskfarm(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        result = bandwidth(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    if rank == 0:
        print(json.dumps(result))
