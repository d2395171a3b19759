"""Which MPI an mpiexec belongs to, and what it needs to start a cluster.

    kind(mpiexec)                          "mpich" or "openmpi", from ``mpiexec --version``
    local_launch(mpiexec, ranks, args)     Launch(args, env, note) for a start on this host

MPICH's hydra (which Intel MPI and MVAPICH share) starts any number of ranks on one host, as any
user, and passes the whole environment on. Open MPI needs what hydra does not:

- more ranks than the host has cores is an error ("not enough slots") unless ``--oversubscribe``
  is given;
- as root it refuses to start unless ``OMPI_ALLOW_RUN_AS_ROOT=1`` and
  ``OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1`` are set;
- ranks on other hosts get only the variables named with ``-x`` (hydra: ``-genvall``); the job
  scripts render that (:mod:`pympec.cluster.batch.templates`).

A cluster that should outlive a dead engine (``fault_tolerant``) needs an MPI that survives the
death of a rank: Open MPI 5 does with ``--with-ft ulfm`` (User-Level Failure Mitigation); hydra
ends the whole job when a rank dies, so MPICH gives a note and the usual behaviour.
"""
from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass, field

from ..errors import UsageError

KINDS = ("mpich", "openmpi")
ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
ULFM = ["--with-ft", "ulfm"]   # Open MPI 5: ranks outlive a dead rank, MPI calls report it
NO_SURVIVAL = ("pympec: note: fault tolerance needs Open MPI 5 (ULFM); with {kind}'s mpiexec "
               "the death of one engine ends the whole cluster (clients get ClusterError "
               "within seconds), see docs/fault-tolerance.md")
# What a user may already have said about oversubscription: then we add nothing.
OVERSUBSCRIBE_SAID = ("oversubscribe", "--map-by", "-map-by")


@functools.lru_cache(maxsize=16)
def kind(mpiexec: str) -> str:
    """``"openmpi"`` or ``"mpich"`` (hydra: MPICH, Intel MPI, MVAPICH; also any other MPI, which
    gets no special arguments), from ``mpiexec --version``; blocks at most 10 s.

    Raises UsageError when ``mpiexec`` does not run or its ``--version`` fails: it is no mpiexec.
    """
    try:
        proc = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=10,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise UsageError(f"{mpiexec} is not a working mpiexec: `{mpiexec} --version` did not "
                         f"answer in 10 s") from None
    except OSError as e:
        raise UsageError(f"{mpiexec} is not a working mpiexec: {e.strerror or e}") from None
    if proc.returncode != 0:
        raise UsageError(f"{mpiexec} is not a working mpiexec: `{mpiexec} --version` exited "
                         f"with code {proc.returncode}")
    text = proc.stdout + proc.stderr
    return "openmpi" if "Open MPI" in text or "OpenRTE" in text else "mpich"


def cores() -> int:
    """Physical cores this process may run on: what Open MPI counts as slots on one host (it
    counts cores, not hardware threads). The CPU count where the topology cannot be read."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else list(range(os.cpu_count() or 1))
    found = set()
    for cpu in cpus:
        topology = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(topology + "physical_package_id") as package, \
                    open(topology + "core_id") as core:
                found.add((package.read().strip(), core.read().strip()))
        except OSError:
            return len(cpus)
    return max(1, len(found))


@dataclass
class Launch:
    """What one mpiexec needs besides ``-n`` and the program: its arguments, the variables to
    add to its environment, and a note for the user (empty when there is nothing to say)."""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""


def local_launch(mpiexec: str, ranks: int, user_args: list[str] = (),
                 fault_tolerant: bool = False) -> Launch:
    """What ``mpiexec`` needs to start ``ranks`` ranks on this host, given the user's own
    ``user_args``: for Open MPI, ``--oversubscribe`` when the ranks outnumber the cores (with a
    note saying so), and the allow-run-as-root variables when running as root.

    ``fault_tolerant``: the cluster should outlive a dead engine.  Open MPI gets ``--with-ft
    ulfm`` and the ranks ``PYMPEC_FAULT_TOLERANT=1`` (they watch for dead engines); another
    MPI gets a note saying it cannot, and ``PYMPEC_FAULT_TOLERANT=0``.

    Runs ``mpiexec --version`` (see :func:`kind`); raises UsageError when that fails.
    """
    launch = Launch()
    openmpi = kind(mpiexec) == "openmpi"
    launch.env["PYMPEC_FAULT_TOLERANT"] = "1" if fault_tolerant and openmpi else "0"
    if not openmpi:
        if fault_tolerant:
            launch.note = NO_SURVIVAL.format(kind="MPICH")
        return launch
    if fault_tolerant:
        launch.args += ULFM
    if os.geteuid() == 0:
        launch.env.update(ROOT_ENV)
    said = any(word in arg for arg in user_args for word in OVERSUBSCRIBE_SAID)
    have = cores()
    if ranks > have and not said and not os.environ.get("OMPI_MCA_rmaps_base_oversubscribe"):
        launch.args.append("--oversubscribe")
        launch.note = (f"pympec: note: {ranks} ranks on {have} cores: starting Open MPI "
                       f"with --oversubscribe")
    return launch


def local_command(mpiexec: str, ranks: int) -> tuple[list[str], dict[str, str]]:
    """``mpiexec -n ranks`` with what its MPI needs on this host (:func:`local_launch`), and
    the environment to run it in: the start of a command line for a program run by hand."""
    launch = local_launch(mpiexec, ranks)
    return [mpiexec, *launch.args, "-n", str(ranks)], {**os.environ, **launch.env}
