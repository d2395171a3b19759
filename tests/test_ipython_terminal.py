"""The magics as a user types them: a real IPython in a pseudo-terminal (pexpect), against
the session cluster as the default profile."""
from __future__ import annotations

import os
import re
import sys

import pytest

from conftest import running_on, wait_for

pexpect = pytest.importorskip("pexpect")
pytest.importorskip("IPython")

PROMPT = r"(?m)^In \[\d+\]: "   # at a line start: records hold "[0] In [1]: "
pytestmark = pytest.mark.timeout(180)


class Terminal:
    """An IPython in a pseudo-terminal: ``type(line)`` sends a line and returns what was
    printed until the next prompt (line ends as \\n, the echoed input left out)."""

    def __init__(self, env: dict) -> None:
        self.child = pexpect.spawn(
            sys.executable, ["-m", "IPython", "--simple-prompt", "--colors=nocolor",
                             "--no-banner", "--no-confirm-exit",
                             "--HistoryManager.enabled=False"],
            env=env, encoding="utf-8", timeout=60, dimensions=(50, 200))
        self.child.expect(PROMPT)

    def type(self, line: str) -> str:
        self.child.sendline(line)
        self.child.expect(PROMPT)
        out = self.child.before.replace("\r\n", "\n")
        return out.partition(line + "\n")[2] if line + "\n" in out else out

    def close(self) -> None:
        if self.child.isalive():
            self.child.sendline("exit")
            try:
                self.child.expect(pexpect.EOF, timeout=30)
            finally:
                self.child.close(force=True)


@pytest.fixture
def terminal(default_profile, tmp_path):
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython"), "TERM": "dumb"}
    term = Terminal(env)
    yield term
    term.close()


def test_a_new_client_gives_the_magics(terminal):
    terminal.type("from pympec import client")
    terminal.type("mec = client.MultiEngineClient()")
    out = terminal.type("%px a = id * 2; print('a is', a)")
    assert "Parallel execution on engines: all" in out
    assert "[stdout:3] a is 6" in out                     # streamed ...
    records = out.partition("<Results List>\n")[2]
    assert re.fullmatch(r"(\[\d\] In \[\d+\]: a = id \* 2; print\('a is', a\)\n){4}\n?",
                        records), out                     # ... and not repeated

    assert "Auto Parallel Enabled" in terminal.type("%autopx")
    out = terminal.type("print('b', a + 1)")
    assert "[stdout:2] b 5" in out
    records = out.partition("<Results List>\n")[2]
    assert re.fullmatch(r"(\[\d\] In \[\d+\]: print\('b', a \+ 1\)\n){4}\n?", records), out
    assert "Auto Parallel Disabled" in terminal.type("%autopx")

    out = terminal.type("%px 1/0")
    assert out.count("engines 0-3: ZeroDivisionError: division by zero") == 1, out
    assert out.count("Traceback (most recent call last)") == 1, out
    assert "print_tracebacks() prints all 4" in out


def test_load_ext_connects_to_the_default_cluster(terminal):
    out = terminal.type("%load_ext pympec")
    assert "connected to the cluster in" in out and "(4 engines)" in out
    out = terminal.type("%px print('engine', id)")
    assert "[stdout:2] engine 2" in out and "] Out[" not in out


def test_ctrl_c_in_a_blocking_px_prints_one_line(terminal, mec):
    """Ctrl-C during a blocking %px interrupts the code on the engines and prints one
    line, no traceback through pympec; the engines keep their namespaces."""
    terminal.type("from pympec import client")
    terminal.type("mec = client.MultiEngineClient()")
    terminal.type("%px kept = id")
    terminal.child.sendline("%px while True: pass")
    terminal.child.expect("Parallel execution on engines: all")
    loop = "execute('while True: pass')"
    wait_for(lambda: all(running_on(mec, e) == loop for e in mec.get_ids()),
             lambda: f"the loop to run on every engine: {mec.queue_status()}")
    terminal.child.sendintr()
    terminal.child.expect(PROMPT)
    out = terminal.child.before.replace("\r\n", "\n")
    assert f"KeyboardInterrupt: {loop} was interrupted on engines" in out, out
    assert "Traceback" not in out and "pympec/" not in out, out
    assert mec.pull("kept", timeout=10) == mec.get_ids()
