"""The suite's own infrastructure: ``wait_for``."""
from __future__ import annotations

import pytest

from conftest import wait_for


def test_wait_for_returns_the_predicates_value():
    values = iter([0, None, "ready"])
    assert wait_for(lambda: next(values), "the third value") == "ready"


def test_wait_for_fails_saying_what_and_how_long():
    with pytest.raises(AssertionError, match=r"^waited 0.05 s for the moon$"):
        wait_for(lambda: False, "the moon", timeout=0.05)
    with pytest.raises(AssertionError, match=r"^waited 0.05 s for the sun \(at 3\)$"):
        wait_for(lambda: False, lambda: "the sun (at 3)", timeout=0.05)   # said at the end
