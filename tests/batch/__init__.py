"""Batch-system tests (Slurm, SGE, PBS through Slurm, host lists, ssh tunnels).

A package, so that pytest imports its conftest as ``batch.conftest`` and the suite's own
``tests/conftest.py`` stays the module ``conftest`` that test files import helpers from.
"""
