"""Threads on engines (pympec.engine.threads): each engine limits its BLAS, OpenMP and
numexpr threads to its CPUs per engine before NumPy loads, keeps what the user set, and
``Cluster(threads=N)`` (PYMPEC_ENGINE_THREADS) overrides both.  Real clusters report their
environment and, with threadpoolctl installed, the thread count OpenBLAS really has."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import pympec
from pympec.engine.threads import VARIABLES, usable_cpus

REPORT = """if True:
    import os
    try:
        from threadpoolctl import threadpool_info
        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    except ImportError:
        blas = None
    cpus = len(os.sched_getaffinity(0))
    report = ({name: os.environ.get(name) for name in %r}, blas, cpus)
""" % (VARIABLES,)


def clean_env(**extra: str) -> dict:
    """This process's environment without any thread variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in VARIABLES and k != "PYMPEC_ENGINE_THREADS"}
    return {**env, **extra}


def reports(tmp_path, n: int, env: dict, threads: int | None = None) -> list:
    with pympec.Cluster(n=n, connection_file=tmp_path / "cluster.json", timeout=120,
                        env=env, threads=threads) as cluster, cluster.client() as mec:
        mec.execute(REPORT)
        return mec.pull("report")


def check_blas(blas: list | None, threads: int) -> None:
    """OpenBLAS runs min(asked, cores) threads; without threadpoolctl nothing to see."""
    if blas is not None:
        assert blas == [min(threads, os.cpu_count())]


@pytest.mark.parametrize("n", [1, 2])
def test_default_is_the_cpus_per_engine(tmp_path, n):
    """An engine's share is its own affinity (Open MPI binds each of 2 ranks on 2 cores to
    one core; MPICH binds none), divided by the engines on its node."""
    for env, blas, cpus in reports(tmp_path, n, clean_env()):
        assert 1 <= cpus <= usable_cpus()
        expected = max(1, cpus // n)
        assert env == {name: str(expected) for name in VARIABLES}
        check_blas(blas, expected)


def test_values_the_user_set_are_kept_and_omp_leads(tmp_path):
    for env, blas, _ in reports(tmp_path, 1, clean_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="5")):
        assert env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "5"
        assert env["OPENBLAS_NUM_THREADS"] == env["NUMEXPR_NUM_THREADS"] == "1"
        check_blas(blas, 1)


def test_the_cluster_setting_overrides(tmp_path):
    got = reports(tmp_path, 2, clean_env(OMP_NUM_THREADS="1"), threads=2)
    assert len(got) == 2
    for env, blas, _ in got:
        assert env == {name: "2" for name in VARIABLES}
        check_blas(blas, 2)


def test_numpy_loaded_first_is_limited_through_threadpoolctl():
    pytest.importorskip("threadpoolctl")
    code = """if True:
        import numpy
        from threadpoolctl import threadpool_info
        from pympec.engine.threads import limit_threads
        limit_threads(1)
        print([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"])
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=clean_env(PYMPEC_ENGINE_THREADS="1"), check=True)
    assert json.loads(out.stdout) == [1]
