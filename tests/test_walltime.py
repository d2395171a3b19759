"""The client's side of a batch job's walltime, on real clusters whose connection files carry an
end time (as a batch job's do): the warnings before it, and the error after it."""
from __future__ import annotations

import json
import time
import warnings

import pytest

from pympec import client
from pympec.errors import ClusterError, WalltimeWarning

from conftest import wait_for


def ending(source, target, in_seconds: float):
    """A copy of connection file ``source`` at ``target`` saying the job ends in ``in_seconds``."""
    info = json.loads(open(source).read())
    info["end_time"] = time.time() + in_seconds
    target.write_text(json.dumps(info))
    target.chmod(0o600)
    return target


def test_warnings_repeat_at_each_lead_time(cluster, tmp_path, monkeypatch):
    """PYMPEC_WALLTIME_WARNING=600,2: one warning at once (under 10 minutes left), and one more
    when 2 s are left, which comes while the client sends nothing."""
    monkeypatch.setenv("PYMPEC_WALLTIME_WARNING", "600,2")
    path = ending(cluster.connection_file, tmp_path / "ends.json", 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mec = client.MultiEngineClient(str(path))
        try:
            mec.get_ids()
            assert [str(w.message)[:46] for w in caught] == \
                ["the cluster's batch job reaches its walltime i"]
            wait_for(lambda: len(caught) == 2, "the second warning, 2 s before the end", timeout=10)
        finally:
            mec.close()
    assert all(w.category is WalltimeWarning for w in caught)
    left = [int(str(w.message).split(" in ")[1].split(" s ")[0]) for w in caught]
    assert left[0] > 2 >= left[1]


def test_lost_at_the_walltime_says_so(private_cluster, tmp_path):
    """The connection goes at the job's end time (here: the cluster stops then): the client's
    error says the walltime ended, not that an engine died; and so does the next connect."""
    path = ending(private_cluster.connection_file, tmp_path / "ending.json", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WalltimeWarning)
        mec = client.MultiEngineClient(str(path))
        assert mec.get_ids() == [0, 1]
        private_cluster.stop()
        with pytest.raises(ClusterError, match="batch job reached its walltime at") as lost:
            mec.execute("x = 1")
        assert "an engine died" not in str(lost.value)
        with pytest.raises(ClusterError, match="cannot reach the controller.*reached its walltime"):
            client.MultiEngineClient(str(path))


def test_no_walltime_no_word_of_it(private_cluster):
    mec = private_cluster.client()
    private_cluster.stop()
    with pytest.raises(ClusterError, match="The cluster has stopped or an engine died") as lost:
        mec.execute("x = 1")
    assert "walltime" not in str(lost.value)
