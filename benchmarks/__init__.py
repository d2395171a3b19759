"""pympec's benchmark suite: ``python -m benchmarks [--quick] [--only NAME] [--scale F]``.

Each topic module measures pympec beside a baseline taken in the same run (raw mpi4py
under the same ``mpiexec``, TCP loopback from Python, NumPy memcpy), so a loaded or slow
machine moves both and the ratio stays meaningful.  Results print as a table and are
written to ``benchmarks/results/latest.json``.
"""
