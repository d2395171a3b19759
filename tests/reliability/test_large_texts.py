"""Megabytes of source, output or exception text never travel inside a message header
(whose limit is 64 MiB): large code, records and streamed output go as frames or in
pieces, and an exception's texts are cut (the exception itself travels whole).  Before,
about 32 MB of source or 64 MB of output made a reply header the client could not read,
and the result, re-sent on every reconnect, broke that client for good.
"""
from __future__ import annotations

import pytest

from pympec.errors import CompositeError

MB = 1 << 20


def test_forty_megabytes_of_source(mec):
    code = "s = " + repr("y" * (40 * MB)) + "\nn = len(s)"
    records = mec.execute(code, targets=0)
    assert records[0]["input"]["raw"] == code
    assert mec.pull("n", targets=0) == [40 * MB]


def test_seventy_megabytes_of_output(mec):
    records = mec.execute("print('z' * (70 * 1024 * 1024))", targets=0)
    assert len(records[0]["stdout"]) == 70 * MB + 1
    assert mec.pull("id", targets=0) == [0]        # the client still works


def test_output_of_a_failing_call_comes_whole(mec):
    with pytest.raises(CompositeError) as caught:
        mec.execute("print('w' * (65 * 1024 * 1024)); 1 / 0", targets=0)
    error = caught.value.elist[0][1]
    assert isinstance(error, ZeroDivisionError)
    assert len(error._pympec_output["stdout"]) == 65 * MB + 1


def test_a_huge_exception_message_is_cut_in_the_header_only(mec):
    with pytest.raises(CompositeError) as caught:
        mec.execute("raise ValueError('v' * (10 * 1024 * 1024))", targets=0)
    assert "characters cut" in caught.value.elist[0][2]        # the traceback text
    assert len(str(caught.value.elist[0][1])) == 10 * MB        # the exception, whole


def test_streamed_output_comes_in_pieces(mec):
    seen = []
    mec.execute("print('s' * (20 * 1024 * 1024))", targets=0,
                stream=lambda engine, name, text: seen.append(len(text)))
    assert sum(seen) == 20 * MB + 1 and max(seen) <= 64 * 1024
