"""What every rank of ``mpiexec -n N python -m pympec.engine`` runs first.

    mpiexec -n N python -m pympec.engine
      every rank:  runtime = COMM_WORLD.Dup()     (pympec's own traffic, never user code's)
                   control = runtime.Dup()        (interrupts: an engine's second thread
                                                   listens on it while user code runs)
                   engines = COMM_WORLD.Split()   (``comm`` for user code: the engines only)
                   cluster id from rank 0, one log file per rank
      rank 0:      pympec.controller.server.run_controller  (clients on TCP, engines on MPI)
      rank >= 1:   pympec.engine.loop.Engine.serve           (engine id = rank - 1)

Each rank imports only what it runs: the controller never loads the engine's interpreter
or the serializer, and engines never load the controller.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys

from mpi4py import MPI

from . import settings
from .paths import rank_log
from .protocol.mpiwire import CONTROLLER

_exit = os._exit   # (engines wrap os._exit, to log their last words: this is a clean exit)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pympec.engine",
        description="One rank of a pympec cluster: run under mpiexec -n N (rank 0 is the "
                    "controller, ranks 1..N-1 are engines).")
    parser.add_argument("--ip", default="127.0.0.1",
                        help="address or host name the controller binds (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="controller port (default: any)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--profile", default=None, help="profile name (default: default)")
    where.add_argument("--connection-file", default=None, help="connection file path")
    parser.add_argument("--sshserver", default=None,
                        help="ssh server clients should tunnel through (written to the "
                             "connection file)")
    parser.add_argument("--tls", action="store_true",
                        help="encrypt client connections with TLS, on a self-signed "
                             "certificate clients pin (needs pip install pympec[fast])")
    return parser.parse_args(argv)


def setup_logging(cluster_id: str, rank: int) -> str:
    path = str(rank_log(cluster_id, rank))
    logging.basicConfig(filename=path, level=logging.INFO,
                        format=f"%(asctime)s rank{rank} %(name)s %(levelname)s: %(message)s")
    return path


def main(argv: list[str] | None = None) -> None:
    """Run this rank: the controller on rank 0, an engine elsewhere, until shutdown."""
    args = parse_args(argv)
    settings.check()   # before any MPI call: every rank stops alike on a bad value
    world = MPI.COMM_WORLD
    if args.tls:   # (imported only then: it brings ssl and the wire module)
        from .protocol import tls
    if args.tls and not tls.available():   # every rank stops alike, one says why
        if world.Get_rank() == CONTROLLER:
            print(f"pympec: {tls.MISSING}", file=sys.stderr, flush=True)
        sys.exit(2)
    runtime = world.Dup()          # runtime traffic only: never seen by user code
    control = runtime.Dup()        # interrupt orders, to each engine's listener thread
    rank, size = runtime.Get_rank(), runtime.Get_size()
    engines = world.Split(0 if rank else MPI.UNDEFINED, rank)   # user code's `comm`
    cluster_id = runtime.bcast(os.urandom(6).hex() if rank == CONTROLLER else None, root=0)
    where = runtime.gather((socket.gethostname(), os.getpid()), root=CONTROLLER)
    host = world.Split_type(MPI.COMM_TYPE_SHARED)   # the ranks on this rank's host
    controller_here = bool(host.allreduce(int(rank == CONTROLLER)))
    engines_here = host.Get_size() - 1   # on the controller's host
    engines_on_node = host.Get_size() - controller_here   # this rank's node
    oversubscribed = host.Get_size() > (os.cpu_count() or 1)
    host.Free()
    setup_logging(cluster_id, rank)
    signal.signal(signal.SIGINT, signal.SIG_IGN if rank else signal.default_int_handler)
    if size < 2:
        if os.environ.get("SLURM_PROCID", "0") == "0":   # one message, not one per srun task
            print(single_rank_message(), file=sys.stderr)
        sys.exit(2)
    sys.path.insert(0, os.getcwd())   # as ipengine did: modules of the launch dir import
    with profiled(rank):
        if rank == CONTROLLER:
            from .controller.server import run_controller
            abandon = run_controller(runtime, control, args, cluster_id, where[1:],
                                     rung=engines_here == size - 1)
        else:
            from .engine.threads import limit_threads
            limit_threads(engines_on_node)   # before anything loads NumPy's BLAS
            from .engine.loop import run_engine
            abandon = run_engine(runtime, control, engines, cluster_id,
                                 rung=controller_here, oversubscribed=oversubscribed)
    if abandon:   # an engine died (a fault-tolerant cluster): MPI_Finalize would wait
        # for it where the MPI missed its death (Open MPI's ULFM, after an exit with a
        # code), spinning
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        _exit(0)
    control.Free()
    runtime.Free()


def single_rank_message() -> str:
    """Why a one-rank MPI world is no cluster, and the usual cause: a launcher (srun without
    the MPI's PMI plugin) that started each task as an MPI job of its own."""
    tasks = os.environ.get("SLURM_NTASKS", "1") if "SLURM_PROCID" in os.environ else "1"
    started = (f"srun started {tasks} tasks, each a single-rank MPI job of its own"
               if tasks != "1" else "the launcher started a single-rank job")
    return (f"pympec: a cluster needs at least 2 ranks (a controller and one engine), but "
            f"{started}. Under Slurm, srun must speak the MPI's PMI: `srun --mpi=pmi2 -n N "
            f"python -m pympec.engine` (MPICH; Open MPI: --mpi=pmix); elsewhere run "
            f"`mpiexec -n N python -m pympec.engine`")


@contextlib.contextmanager
def profiled(rank: int):
    """With ``PYMPEC_PROFILE=DIR``, run this rank under cProfile and write its profile
    to DIR/rank<rank>.prof on a clean exit (read it with ``python -m pstats``)."""
    where = settings.PROFILE.get()
    if not where:
        yield
        return
    import cProfile
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        os.makedirs(where, exist_ok=True)
        profile.dump_stats(os.path.join(where, f"rank{rank}.prof"))

