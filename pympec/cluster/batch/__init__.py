"""Batch systems: start a pympec cluster as one PBS, SGE or Slurm job, or across listed hosts.

The flow of ``pympec cluster start --scheduler slurm -n 4``:

1. :mod:`.config` merges site defaults (``~/.pympec/config.toml``, ``PYMPEC_<SCHEDULER>__<KEY>``
   environment variables) under the command-line options.
2. :mod:`.templates` turns them into a :class:`~.templates.JobSpec` and renders the scheduler's
   template (``launchers/<scheduler>.template``, or the user's own file) into a job script: one MPI job,
   ``mpiexec -n <engines + 1> python -m pympec.engine``, rank 0 being the controller.
3. :mod:`.launch` writes the script, submits it through :mod:`.schedulers` (``sbatch``/``qsub``),
   records the job id next to the connection file, and polls the job until the connection file appears
   and the controller answers, or until the job fails, which it reports with the job output's tail.
4. ``pympec cluster stop`` (and Ctrl-C) cancel the recorded job (``scancel``/``qdel``).

Also here: :mod:`.hosts` (``--hosts node1:4,node2:4`` through mpiexec's own host list), :mod:`.address`
(the address a compute node's controller binds: the one facing the submit host, never ``0.0.0.0``),
:mod:`.tunnel` (ssh ``-L`` forwarding from a login node) and :mod:`.cli` (the command-line glue).

User-facing ``-n`` always counts engines; the MPI job has one rank more.
"""
