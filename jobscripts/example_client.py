"""An example client for the in-job scripts: replace it with your own.

The job script runs it on the job's first node as ``python example_client.py CONNECTION_FILE``
once the cluster listens, and stops the cluster when it returns.
"""
import sys

from pympec import client

mec = client.MultiEngineClient(sys.argv[1], timeout=60)
print("engines:", mec.get_ids())
mec.execute("import socket; host = socket.gethostname()")
print("hosts:", sorted(set(mec.pull("host"))))
mec.scatter("a", list(range(10)))
mec.execute("b = [x * x for x in a]")
print("squares:", mec.gather("b"))
mec.close()
