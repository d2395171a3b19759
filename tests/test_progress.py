"""Live progress: PendingResult.wait_interactive/elapsed/progress and the task bar, in
their tqdm and plain-text forms, against the real cluster."""
from __future__ import annotations

import io
import re
import sys
import time

import pytest

from pympec import client
from pympec.client import progress


def staggered(mec, step=0.25):
    """A non-blocking execute where engine i sleeps i * step seconds."""
    return mec.execute(f"import time; time.sleep(id * {step})", block=False)


def test_text_fallback_counts_engines_as_they_finish(mec):
    pending = staggered(mec)
    out = io.StringIO()
    assert pending.wait_interactive(interval=0.03, file=out, use_tqdm=False) is True
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("engines: ")
    assert lines[-1].startswith("engines: 4/4 done, ")
    counts = [int(re.match(r"engines: +(\d)/4 done, [\d.]+ s elapsed$", l).group(1))
              for l in lines]
    assert counts == sorted(counts)                       # never goes back
    assert any(0 < c < 4 for c in counts), lines          # saw engines finish one by one
    assert pending.progress == 4
    assert pending.elapsed >= 0.75
    frozen = pending.elapsed
    assert pending.elapsed == frozen                      # stops counting once done
    assert [r["id"] for r in pending.r] == [0, 1, 2, 3]


def test_tqdm_bar(mec):
    pytest.importorskip("tqdm")
    pending = staggered(mec, 0.1)
    out = io.StringIO()
    assert pending.wait_interactive(interval=0.03, file=out, use_tqdm=True) is True
    text = out.getvalue()
    assert "\r" in text                                   # redrawn in place
    assert re.search(r"engines: .*4/4 done, \d\d:\d\d elapsed", text)
    assert pending.ready()


def test_progress_while_running_and_timeout(mec):
    start = time.monotonic()
    pending = mec.execute("import time; time.sleep(0.6 if id == 3 else 0)", block=False)
    assert not pending.wait_interactive(timeout=0.2, file=io.StringIO(), use_tqdm=False)
    assert not pending.ready()
    assert pending.progress == 3              # engines 0-2 done, engine 3 still busy
    assert 0.2 <= pending.elapsed <= time.monotonic() - start
    pending.r
    assert pending.progress == 4


def test_wait_interactive_does_not_raise_the_calls_error(mec):
    pending = mec.execute("1/0", targets=[0, 1], block=False)
    assert pending.wait_interactive(file=io.StringIO(), use_tqdm=False)
    assert pending.progress == 2
    with pytest.raises(client.CompositeError):
        pending.r


def test_default_bar_is_tqdm_when_importable_else_text(monkeypatch):
    pytest.importorskip("tqdm")
    assert isinstance(progress.make_bar(3, "x", io.StringIO()), progress.TqdmBar)
    monkeypatch.setitem(sys.modules, "tqdm", None)        # as if not installed
    assert not progress.have_tqdm()
    assert isinstance(progress.make_bar(3, "x", io.StringIO()), progress.TextBar)
    with pytest.raises(ImportError):
        progress.make_bar(3, "x", io.StringIO(), use_tqdm=True)


def test_task_bar(cluster, mec):
    tc = cluster.task_client()
    try:
        ids = [tc.run(client.StringTask(f"import time; time.sleep({0.1 * i}); v = {i}",
                                        pull="v")) for i in range(6)]
        out = io.StringIO()
        assert progress.wait_tasks(tc, ids, interval=0.03, file=out, use_tqdm=False)
        lines = out.getvalue().splitlines()
        assert lines[-1].startswith("tasks: 6/6 done, ")
        assert [tc.get_task_result(t).ns.v for t in ids] == list(range(6))
        out = io.StringIO()
        assert progress.wait_tasks(tc, ids[0], file=out, use_tqdm=True)
        assert "1/1 done" in out.getvalue()
        out = io.StringIO()
        assert tc.wait_interactive(ids[:2], file=out, use_tqdm=False)   # the method form
        assert "2/2 done" in out.getvalue()
    finally:
        tc.close()
