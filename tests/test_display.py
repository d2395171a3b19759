"""What Jupyter and IPython show: the HTML of ResultList, CompositeError, TaskResult and
PendingResult (escaped: user output never becomes markup), and remote tracebacks."""
from __future__ import annotations

import sys
from html.parser import HTMLParser

import cloudpickle
import pytest

from pympec import client
from pympec.display import id_ranges

from conftest import wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])   # engines can't import it

HOSTILE = "<script>alert('x')</script> & <b>bold</b>"
OURS = {"div", "span", "table", "thead", "tbody", "tr", "th", "td", "pre"}


class Parsed(HTMLParser):
    """The tags of a piece of HTML, its text, and the colours of its styles."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.rows = 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.rows += tag == "tr"

    def handle_data(self, data):
        self.text.append(data)


def parsed(html: str) -> Parsed:
    page = Parsed(html)
    assert set(page.tags) <= OURS, page.tags
    return page


@pytest.fixture
def tc(cluster):
    c = cluster.task_client()
    yield c
    c.close()


def test_id_ranges():
    assert id_ranges([5, 0, 1, 2, 3, 7, 8]) == "0-3, 5, 7-8"
    assert id_ranges([4]) == "4" and id_ranges([]) == ""


def test_result_list_html_has_a_row_per_engine_and_escapes(mec):
    mec.push({"hostile": HOSTILE})
    result = mec.execute("import sys; print(hostile); print('bad', file=sys.stderr); "
                         "hostile")
    page = parsed(result._repr_html_())
    assert page.rows == 1 + 4          # the header, then one row per engine
    text = "".join(page.text)
    assert text.count(HOSTILE) == 8    # as text, printed and displayed, on each engine
    html = result._repr_html_()
    assert "#cf222e" in html and "#1a7f37" in html and "#0550ae" in html   # colours


def test_composite_error_html_collapses_and_escapes(mec):
    mec.push({"hostile": HOSTILE})
    with pytest.raises(client.CompositeError) as info:
        mec.execute("raise ValueError(hostile) if id else KeyError('k')")
    page = parsed(info.value._repr_html_())
    assert page.rows == 1 + 2          # engine 0's error, then engines 1-3's once
    text = "".join(page.text)
    assert "engines 1-3" in text and "engine 0" in text
    assert f"ValueError: {HOSTILE}" in text and "KeyError: 'k'" in text
    assert "Traceback (most recent call last)" in text


def square(x):
    return x * x


def test_task_result_and_pending_result_html(tc, mec):
    done = tc.run(client.StringTask("y = hostile", push={"hostile": HOSTILE}, pull="y"),
                  block=True)
    page = parsed(done._repr_html_())
    assert page.rows == 2 and f"y = {HOSTILE!r}" in "".join(page.text)
    failed = tc.run(client.StringTask("1/0"), block=True)
    text = "".join(parsed(failed._repr_html_()).text)
    assert "ZeroDivisionError: division by zero" in text and "<pympec>" in text
    pending = mec.execute("import time; time.sleep(0.3)", block=False)
    assert "(pending)" in "".join(parsed(pending._repr_html_()).text)
    pending.get_result()
    assert "(done)" in "".join(parsed(pending._repr_html_()).text)
    bad = mec.execute("1/0", block=False)
    wait_for(bad.ready, "the failing call's result")
    assert "(failed)" in "".join(parsed(bad._repr_html_()).text)
    assert "#cf222e" in bad._repr_html_()       # failed: red


def test_remote_exceptions_name_their_engine_in_their_cause(tc, mec):
    with pytest.raises(TypeError) as info:
        tc.run(client.MapTask(square, ("x",)), block=True)
    cause = info.value.__cause__
    assert type(cause).__name__ == "RemoteTraceback"
    assert str(cause).startswith("on engine ") and "(task " in str(cause)
    assert "Traceback (most recent call last)" not in str(cause)   # Python prints its own
    assert cause.tb.startswith("Traceback (most recent call last)")  # kept whole
    with pytest.raises(client.CompositeError) as info:
        mec.execute("1/0", targets=2)
    assert str(info.value.elist[0][1].__cause__).startswith("on engine 2 (execute):\n")
