"""Rank 0: the controller.  :mod:`.server` serves clients, :mod:`.engines` drives the
engines' queues over MPI, :mod:`.tasks` is the load-balanced task farm.

The controller never unpickles: it imports neither pickle nor cloudpickle, nor any of
the engine's code (``tests/test_layout.py`` checks this on the import graph).
"""
