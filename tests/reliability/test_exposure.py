"""Network exposure is never silent (issue 12: "--ip 0.0.0.0 listens on all interfaces
without a word ... and the connection file may advertise an address clients cannot
use"): a wildcard --ip warns, on stderr and in the controller's log, and the connection
file names an address clients can reach."""
from __future__ import annotations

import pympec
from pympec import connection

from reliability.tools import rank0_log


def test_a_wildcard_ip_warns_and_advertises_a_reachable_address(tmp_path):
    with pympec.Cluster(n=1, connection_file=tmp_path / "c.json", ip="0.0.0.0",
                        timeout=120) as cluster:
        info = connection.load(cluster.connection_file)
        assert info.address not in ("0.0.0.0", "::", "")
        with cluster.client() as mec:         # at that address
            assert mec.get_ids() == [0]
        warning = "the controller listens on every interface (0.0.0.0)"
        assert warning in cluster.log_path.read_text()          # mpiexec's stderr
        assert warning in rank0_log(cluster).read_text()
