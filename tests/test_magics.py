"""The IPython magics, driven through a real InteractiveShell against the real cluster."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("IPython")

from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

from pympec.client import magics  # noqa: E402
from pympec.client.results import PendingResult, ResultList  # noqa: E402


@pytest.fixture(scope="module")
def shell():
    sh = InteractiveShell.instance()
    try:
        sh.colors = "nocolor"
    except Exception:
        sh.colors = "NoColor"
    sh.run_cell("%load_ext pympec")
    yield sh
    magics.deactivate()


@pytest.fixture
def ip(shell, mec):
    """The shell, with ``mec`` (reset engines) activated and in its namespace."""
    shell.user_ns["mec"] = mec
    shell.run_cell("mec.activate()")
    assert magics.active_client() is mec
    yield shell
    if shell._pympec_magics.autopx.enabled:
        shell.run_cell("%autopx")
    magics.deactivate()


def run(shell, capsys, cell):
    result = shell.run_cell(cell, store_history=True)
    out = capsys.readouterr()
    return result, out.out + out.err


def test_load_ext_registers_the_magics(shell):
    names = shell.magics_manager.magics
    assert {"px", "autopx", "result"} <= set(names["line"])
    assert "px" in names["cell"]


def test_no_active_controller_notice(shell, capsys):
    magics.deactivate()
    for cell in ("%px a = 1", "%autopx", "%result", "%%px\na = 1"):
        result, out = run(shell, capsys, cell)
        assert "No Controller is activated" in out, cell
        assert "Use activate()" in out
        assert result.result is None


def test_px_runs_a_line_streams_its_output_and_shows_the_results_list(ip, mec, capsys):
    result, out = run(ip, capsys, "%px a = id * 2; print('a is', a)")
    assert result.success
    assert "Parallel execution on engines: all" in out
    assert "[stdout:3] a is 6" in out                  # streamed while it ran
    assert isinstance(result.result, ResultList)
    assert "<Results List>" in out
    assert re.search(r"\[0\] In \[\d+\]: a = id \* 2; print\('a is', a\)", out)
    assert "Out[" not in out.partition("<Results List>")[2]   # ... and not repeated
    assert result.result[3]["stdout"] == "a is 6\n"   # the record keeps it
    assert mec.pull("a") == [0, 2, 4, 6]
    assert "a" not in ip.user_ns       # it ran remotely, not here


def test_px_cell_with_targets_and_noblock(ip, mec, capsys):
    result, out = run(ip, capsys, "%%px --targets 1,3 --noblock\nb = id + 100\nb")
    assert result.success, out
    assert "Parallel execution on engines: [1, 3]" in out
    pending = result.result
    assert isinstance(pending, PendingResult)
    records = pending.get_result()
    assert [r["id"] for r in records] == [1, 3]
    assert mec.pull("b", targets=[1, 3]) == [101, 103]
    assert mec.pull("b", targets=[1, 3], block=True) == [101, 103]


def test_px_follows_the_clients_targets_and_block(ip, mec, capsys):
    mec.targets = [2]
    result, out = run(ip, capsys, "%px c = 'two'")
    assert "Parallel execution on engines: [2]" in out
    assert [r["id"] for r in result.result] == [2]
    mec.targets, mec.block = "all", False
    result, out = run(ip, capsys, "%px d = 4")
    assert isinstance(result.result, PendingResult)
    result.result.get_result()
    mec.block = True
    assert mec.pull("d") == [4, 4, 4, 4]


def test_px_target_ranges_and_bad_options(ip, mec, capsys):
    result, out = run(ip, capsys, "%px --targets 0:2 e = 1")
    assert [r["id"] for r in result.result] == [0, 1]
    result, out = run(ip, capsys, "%px --frobnicate e = 1")
    assert "unknown option '--frobnicate'" in out and result.result is None


def test_px_remote_error_shows_each_distinct_traceback_once(ip, mec, capsys):
    result, out = run(ip, capsys, "%px 1/0")
    assert not result.success
    assert "CompositeError: one or more exceptions from call to method: execute" in out
    assert out.count("engines 0-3: ZeroDivisionError: division by zero") == 1
    assert out.count("Traceback (most recent call last)") == 1   # the remote one, once
    assert "print_tracebacks() prints all 4" in out
    assert "run_line_magic" not in out                   # not the local frames
    assert mec.get_ids() == [0, 1, 2, 3]                 # engines keep running

    result, out = run(ip, capsys, "%px x = [1][id - 1]")   # engine 0 differs
    assert out.count("engines 2-3: IndexError: list index out of range") == 1
    assert out.count("Traceback (most recent call last)") == 1
    assert "print_tracebacks() prints all 2" in out


def test_a_remote_exception_shows_the_engines_frames_once(ip, mec, capsys):
    """A single remote exception (here re-raised from a CompositeError) shows the
    engine's traceback as its cause, named by engine, with no doubled header."""
    result, out = run(ip, capsys, "try:\n    mec.execute('1/0', targets=1)\n"
                                  "except Exception as e:\n    e.raise_exception()")
    assert not result.success
    assert "RemoteTraceback: on engine 1 (execute):" in out
    assert 'File "<pympec>", line 1, in <module>' in out
    assert out.count("Traceback (most recent call last)") == 2   # IPython's two headers


def test_autopx_sends_every_input_to_the_engines(ip, mec, capsys):
    ip.user_ns.pop("f", None)
    result, out = run(ip, capsys, "%autopx")
    assert out.strip() == "Auto Parallel Enabled\nType %autopx to disable"
    result, out = run(ip, capsys, "f = id * 10\nprint('f', f)\n")
    assert result.success, out
    assert "[stdout:2] f 20" in out and "<Results List>" in out
    records = out.partition("<Results List>\n")[2]
    assert re.fullmatch(r"(\[\d\] In \[\d+\]: f = id \* 10\nprint\('f', f\)\n){4}", records), \
        records     # no blank line after each In, and the streamed output not again
    assert "f" not in ip.user_ns
    assert mec.pull("f") == [0, 10, 20, 30]

    number = mec.get_result(targets=0)[0]["number"]
    # a syntax error is reported here and nothing reaches the engines
    result, out = run(ip, capsys, "g = (1,")
    assert not result.success
    assert "SyntaxError" in out
    assert mec.get_result(targets=0)[0]["number"] == number

    result, out = run(ip, capsys, "%autopx")
    assert out.strip() == "Auto Parallel Disabled"
    result, out = run(ip, capsys, "h = 5")
    assert ip.user_ns["h"] == 5
    assert mec.get_result(targets=0)[0]["number"] == number


def test_result_shows_stored_records(ip, mec, capsys):
    mec.targets = 0
    number = mec.execute("x = 1")[0]["number"]
    mec.execute("y = 2")
    result, out = run(ip, capsys, "%result")
    assert [r["input"]["raw"] for r in result.result] == ["y = 2"]
    assert f"[0] In [{number + 1}]: y = 2" in out
    result, out = run(ip, capsys, f"%result {number}")
    assert [r["input"]["raw"] for r in result.result] == ["x = 1"]
    result, out = run(ip, capsys, "%result latest")       # not an int: the latest
    assert [r["input"]["raw"] for r in result.result] == ["y = 2"]


def test_activate_outside_ipython_prints_a_notice(cluster):
    code = textwrap.dedent(f"""
        import pympec.client.magics as m
        from pympec import client
        mec = client.MultiEngineClient({str(cluster.connection_file)!r})
        mec.activate()
        assert m.active_client() is mec
        mec.close()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    assert "magics work only within IPython" in out.stdout


def test_option_parsing():
    assert magics.split_options("--targets 0,2 --noblock a = 1") == (
        {"targets": [0, 2], "block": False}, "a = 1")
    assert magics.split_options("--targets=all x") == ({"targets": "all"}, "x")
    assert magics.split_options("a = '--x'") == ({}, "a = '--x'")
    assert magics.parse_targets("[1, 2]") == [1, 2]
    assert magics.parse_targets("1:3") == [1, 2]
    with pytest.raises(ValueError):
        magics.parse_targets("one")


def test_px_cell_streams_output_live_and_not_again(ip, mec, capsys):
    result, out = run(ip, capsys, "%%px --targets 0,2\nimport sys\nprint('live', id)\n"
                                  "print('oops', file=sys.stderr)\n")
    assert result.success, out
    assert "[stdout:0] live 0" in out and "[stdout:2] live 2" in out
    assert "[stderr:2] oops" in out
    shown = repr(result.result)
    assert "Out[" not in shown and "Err[" not in shown and "\n\n" not in shown
    result, out = run(ip, capsys, "%%px --targets 0 --nostream\nprint('quiet')")
    assert "[stdout:0]" not in out
    assert re.search(r"\[0\] Out\[\d+\]: quiet", out)   # not streamed: in the record
    result, out = run(ip, capsys, "%px --nostream --targets 1 print('line', id)")
    assert "[stdout:1]" not in out and re.search(r"\[1\] Out\[\d+\]: line 1", out)
    result, out = run(ip, capsys, "%px --stream --targets 1 print('line', id)")
    assert "[stdout:1] line 1" in out


def test_creating_a_client_activates_it_unless_one_is(shell, cluster, capsys):
    magics.deactivate()
    try:
        shell.run_cell("%unload_ext pympec")
        shell._pympec_magics = None
        first = cluster.client()        # inside IPython: registers the magics, activates
        assert magics.active_client() is first
        assert "px" in shell.magics_manager.magics["line"]
        second = cluster.client()
        assert magics.active_client() is first      # another one is active already
        second.activate()
        assert magics.active_client() is second
        shell.user_ns["first"] = first
        result, out = run(shell, capsys, "%px --targets 0 v = 'second'")
        assert result.success, out
        assert first.pull("v", targets=0) == ["second"]
        first.close()
        second.close()
    finally:
        magics.deactivate()


def test_load_ext_connects_to_the_default_cluster(shell, default_profile, capsys):
    magics.deactivate()
    try:
        result, out = run(shell, capsys, "%reload_ext pympec")
        assert result.success, out
        assert "connected to the cluster in" in out and "(4 engines)" in out
        assert magics.active_client() is not None
        result, out = run(shell, capsys, "%px --targets 0 w = 5")
        assert result.success and magics.active_client().pull("w", targets=0) == [5]
        magics.active_client().close()
    finally:
        magics.deactivate()


def test_load_ext_without_a_cluster_says_which_to_start(shell, pympec_dir, capsys):
    magics.deactivate()
    result, out = run(shell, capsys, "%reload_ext pympec")
    assert result.success, out
    assert "the magics are loaded, but there is no cluster for them" in out
    assert "pympec cluster start -n 4" in out
    assert magics.active_client() is None
    result, out = run(shell, capsys, "%px a = 1")
    assert "No Controller is activated" in out
