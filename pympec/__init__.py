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
    if name == "asyncclient":   # from pympec import asyncclient, as from IPython.kernel
        from .client import asyncclient
        return asyncclient
    raise AttributeError(f"module 'pympec' has no attribute {name!r}")


def load_ipython_extension(ipython) -> None:
    """``%load_ext pympec``: register the magics and, unless a client is active already,
    connect to the default running cluster for them (which blocks at most the client's
    connect timeout).  When there is none, say which one to start; nothing raises."""
    from .client import MultiEngineClient, magics
    from .errors import KernelError
    magics.load_ipython_extension(ipython)
    if magics.active_client() is not None:
        return
    try:
        mec = MultiEngineClient()
    except (OSError, ValueError, KernelError) as e:   # no file, no controller, a wrong key
        print(f"pympec: the magics are loaded, but there is no cluster for them. {e}\n"
              f"Then run %reload_ext pympec, or create a client: "
              f"mec = client.MultiEngineClient(...)")
        return
    magics.activate(mec)
    print(f"pympec: connected to the cluster in {mec._session.path} ({len(mec)} engines); "
          f"%px and %autopx use it")


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext pympec``: stop %autopx and drop the magics' input transformer."""
    from .client import magics
    magics.unload_ipython_extension(ipython)
