"""pympec: interactive parallel computing for Python on MPI clusters.

``mpiexec -n N python -m pympec.engine`` is a cluster (rank 0 the controller, ranks
1..N-1 the engines); ``from pympec import client`` drives it.  ``pympec.Cluster`` starts
a local one from Python; ``pympec.running_cluster()`` uses the running one or starts one.
"""
__version__ = "0.1.0"


def __getattr__(name):  # keep `import pympec` light: no MPI or NumPy until needed
    if name in ("Cluster", "running_cluster"):
        from .cluster import local
        return getattr(local, name)
    raise AttributeError(f"module 'pympec' has no attribute {name!r}")


def load_ipython_extension(ipython):
    from .client.magics import load_ipython_extension as load
    load(ipython)
