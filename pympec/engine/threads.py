"""How many threads an engine's numerical libraries may start.

Left alone, OpenBLAS, MKL, BLIS, an OpenMP runtime or numexpr starts one thread per core
in every process, so a 64-core node with 63 engines would run about 4,000 BLAS threads
on 64 cores.  Each engine therefore sets, before anything loads NumPy:

    OMP_NUM_THREADS  OPENBLAS_NUM_THREADS  MKL_NUM_THREADS  BLIS_NUM_THREADS
    VECLIB_MAXIMUM_THREADS  NUMEXPR_NUM_THREADS

* ``PYMPEC_ENGINE_THREADS=N`` set: all of them to N, whatever the environment says;
* otherwise each one the environment leaves unset, to the user's ``OMP_NUM_THREADS``
  if that is set (the libraries fall back on it, so they keep following it), else to
  the CPUs this process may use (its affinity: a batch job's share of the node) divided
  by the engines on this node, at least 1.

These libraries read the variables once, when they load (OpenBLAS at ``import numpy``),
so :func:`limit_threads` must run before NumPy is imported: ``pympec.boot`` calls it
first thing on engine ranks.  If NumPy is loaded already (a ``sitecustomize``, say), the
limit goes through threadpoolctl when it is installed, and is logged as too late if not.
"""
from __future__ import annotations

import logging
import os
import sys

from .. import settings

log = logging.getLogger("pympec.engine")

VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _count(text: str | None) -> int | None:
    """A positive whole number, or None (``OMP_NUM_THREADS`` may also hold a list)."""
    try:
        value = int(text or "")
    except ValueError:
        return None
    return value if value > 0 else None


def limit_threads(engines_here: int) -> int:
    """Set the variables for an engine sharing its node with ``engines_here`` engines
    (itself included); returns the thread count it chose."""
    forced = settings.ENGINE_THREADS.get()
    if forced:
        threads = forced
        os.environ.update({name: str(forced) for name in VARIABLES})
    else:
        threads = (_count(os.environ.get("OMP_NUM_THREADS"))
                   or max(1, usable_cpus() // max(1, engines_here)))
        for name in VARIABLES:
            os.environ.setdefault(name, str(threads))
    if "numpy" in sys.modules:   # its BLAS has read the variables already
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(threads)
        except ImportError:
            log.warning("NumPy was loaded before the engine set its thread limit (%d), and "
                        "threadpoolctl is not installed: its BLAS keeps its own", threads)
    return threads
