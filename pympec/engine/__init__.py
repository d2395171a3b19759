"""Ranks 1..N-1: the engines.  :mod:`.loop` receives commands and replies,
:mod:`.interpreter` holds the user's namespace, :mod:`.tasks` runs task batches.

``python -m pympec.engine`` starts a whole cluster (:mod:`pympec.boot`).
"""
