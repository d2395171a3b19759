"""Starting and stopping clusters: :mod:`.local` (this host), :mod:`.batch` (PBS, SGE,
Slurm, host lists) and :mod:`.cli` (the ``pympec`` command)."""
