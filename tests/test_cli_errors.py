"""Every user error of the ``pympec`` command is one line on stderr and exit status 2, with no
traceback; ``--debug`` shows the traceback instead. Each case runs the real command."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

PYMPEC = [sys.executable, "-m", "pympec.cluster.cli"]


def run(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*PYMPEC, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)


def assert_user_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    """Exit status 2 and one line on stderr naming ``words``, nothing on stdout."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr}"
    assert len(lines) == 1, f"not one line:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    for word in words:
        assert word in lines[0], lines[0]


CASES = {
    "no engines": (["cluster", "start", "-n", "0"], ["-n", "at least 1"]),
    "engines not a number": (["cluster", "start", "-n", "four"], ["-n", "invalid"]),
    "not an mpiexec": (["cluster", "start", "--mpiexec", "/bin/false"],
                       ["/bin/false is not a working mpiexec", "exited with code 1"]),
    "no such mpiexec": (["cluster", "start", "--mpiexec", "/nonexistent/mpiexec"],
                        ["/nonexistent/mpiexec is not a working mpiexec"]),
    "unknown host": (["cluster", "start", "--hosts", "node17:2,localhost:2", "-n", "3"],
                     ["unknown host 'node17'"]),
    "bad host": (["cluster", "start", "--hosts", "a:0"], ["bad host 'a:0'"]),
    "bad walltime": (["cluster", "start", "--scheduler", "slurm", "--walltime", "soon"],
                     ["bad walltime 'soon'"]),
    "srun outside Slurm": (["jobscript", "--scheduler", "sge", "--launcher", "srun"],
                           ["srun is Slurm's"]),
    "unknown option": (["cluster", "start", "--engines-please", "3"], ["unrecognized"]),
    "no cluster's logs": (["logs", "--profile", "never"], ["no cluster runs with", "logs"]),
    "tunnel to nothing": (["tunnel", "--profile", "never"], ["no pympec connection file"]),
}


@pytest.mark.parametrize("args,words", CASES.values(), ids=CASES.keys())
def test_user_error_is_one_line(pympec_dir, args, words):
    assert_user_error(run(*args), *words)


def test_start_while_one_runs(default_profile):
    """The default profile answers (the session's cluster): a second start is refused."""
    assert_user_error(run("cluster", "start", "-n", "2"), "already running")


def test_missing_scheduler_commands(pympec_dir):
    """No sbatch on PATH (a machine that is not a Slurm login node)."""
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))
    assert_user_error(run("cluster", "start", "--scheduler", "slurm", env=env),
                      "cannot submit", "sbatch", "not found")


def test_bad_setting_and_bad_config(pympec_dir):
    env = dict(os.environ, PYMPEC_LOG_KEEP="many")
    assert_user_error(run("cluster", "start", "-n", "1", env=env), "PYMPEC_LOG_KEEP='many'")
    pympec_dir.mkdir(parents=True, exist_ok=True)
    (pympec_dir / "config.toml").write_text("[slurm]\nqueue = 'debug'\nwaltime = '1h'\n")
    assert_user_error(run("jobscript", "--scheduler", "slurm"), "unknown key 'waltime'")


def test_debug_shows_the_traceback(pympec_dir):
    for args in (["--debug", "cluster", "start", "--mpiexec", "/bin/false"],
                 ["cluster", "start", "--mpiexec", "/bin/false", "--debug"]):
        proc = run(*args)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback (most recent call last)" in proc.stderr
        assert proc.stderr.rstrip().splitlines()[-1].startswith("pympec.errors.UsageError: ")


def test_mpiexec_help_says_which_is_preferred():
    text = " ".join(run("cluster", "start", "--help").stdout.split())
    assert "$PYMPEC_MPIEXEC, else the one beside this Python, i.e. the venv's" in text
    assert "else mpiexec on PATH" in text
