"""``python -m pympec.engine``: run one rank of a cluster (see :mod:`pympec.boot`)."""
from pympec.boot import main

main()
