"""Unit tests of pympec.protocol.backoff (the polling policy, DESIGN contract 3) and pympec.protocol.doorbell."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from pympec.protocol.backoff import Backoff
from pympec.protocol.doorbell import Doorbell, address


# -- Backoff -----------------------------------------------------------------------

class FakeClock:
    """A clock for Backoff that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def delays(backoff: Backoff, n: int) -> list[float]:
    return [backoff.delay() for _ in range(n)]


def test_spin_phase_returns_zero_delays_for_spin_seconds(clock):
    b = Backoff(spin=0.05, start=1e-5, max=1e-3, idle=60, clock=clock)
    assert delays(b, 50) == [0.0] * 50
    clock.advance(0.049)
    assert b.delay() == 0.0
    clock.advance(0.002)
    assert b.delay() == pytest.approx(1e-5)


def test_reset_without_spin_sleeps_at_once(clock):
    b = Backoff(spin=60, start=1e-4, max=1e-3, idle=60, clock=clock)
    assert b.delay() == 0.0
    b.reset(spin=0)
    assert b.delay() == pytest.approx(1e-4)
    b.reset()
    assert b.delay() == 0.0


def test_reset_with_a_spin_of_its_own(clock):
    """An engine in a burst spins a short while after a reply, whatever its own spin."""
    b = Backoff(spin=60, start=1e-4, max=1e-3, idle=60, clock=clock)
    b.reset(spin=3e-4)
    assert b.delay() == 0.0
    clock.advance(2.9e-4)
    assert b.delay() == 0.0
    clock.advance(2e-5)
    assert b.delay() == pytest.approx(1e-4)


def test_no_spin(clock):
    b = Backoff(spin=0, start=1e-4, max=1e-3, idle=60, clock=clock)
    assert b.delay() == pytest.approx(1e-4)


def test_delays_double_from_start_up_to_max(clock):
    b = Backoff(spin=0, start=1e-5, max=1e-3, idle=60, clock=clock)
    got = delays(b, 12)
    assert got[0] == pytest.approx(1e-5)
    for before, after in zip(got, got[1:]):
        assert after == pytest.approx(min(2 * before, 1e-3))
    assert max(got) == pytest.approx(1e-3)
    assert got[-1] == pytest.approx(1e-3)        # capped, stays there
    assert all(d <= 1e-3 for d in got)


def test_defaults_cap_at_one_millisecond(clock):
    b = Backoff(clock=clock)
    clock.advance(b.spin)
    assert max(delays(b, 200)) == pytest.approx(1e-3)
    clock.advance(b.idle * 0.99)                        # still within the default idle of 1 s
    assert max(delays(b, 10)) == pytest.approx(1e-3)


def test_after_idle_delays_grow_to_idle_max(clock):
    b = Backoff(spin=0, start=1e-5, max=1e-3, idle=0.1, idle_max=0.05, clock=clock)
    assert max(delays(b, 20)) == pytest.approx(1e-3)
    clock.advance(0.099)                                # just short of `idle`
    assert b.delay() == pytest.approx(1e-3)
    clock.advance(0.002)                                # past `idle` with no activity
    got = delays(b, 20)
    assert got[0] == pytest.approx(2e-3)                # keeps doubling past max
    assert got[-1] == pytest.approx(0.05)
    assert all(d <= 0.05 for d in got)


def test_reset_restarts_spin_and_doubling(clock):
    b = Backoff(spin=0.02, start=1e-5, max=1e-3, idle=0.1, idle_max=0.05, clock=clock)
    delays(b, 30)
    clock.advance(0.12)
    assert max(delays(b, 20)) == pytest.approx(0.05)
    b.reset()
    assert delays(b, 2) == [0.0, 0.0]
    clock.advance(0.03)
    got = delays(b, 10)
    assert got[0] == pytest.approx(1e-5)
    assert max(got) <= 1e-3                             # the idle clock restarted too


def test_the_clock_is_the_only_time_read(clock):
    b = Backoff(spin=1.0, start=1e-3, max=1e-3, idle=60, clock=clock)
    time.sleep(0.01)                                    # real time passes, the fake does not
    assert b.delay() == 0.0
    clock.advance(1.001)
    assert b.delay() == pytest.approx(1e-3)


def test_sleep_sleeps_the_delay_and_only_yields_while_spinning(clock):
    b = Backoff(spin=60, start=10.0, max=10.0, idle=600, clock=clock)
    t = time.monotonic()
    b.sleep()                                           # spin: a bare yield, not 10 s
    assert time.monotonic() - t < 5.0
    b = Backoff(spin=0, start=0.05, max=0.05, idle=600)   # the real clock and a real sleep
    t = time.monotonic()
    b.sleep()
    assert 0.045 <= time.monotonic() - t < 5.0          # never early; late only under load


# -- PYMPEC_BACKOFF -----------------------------------------------------------------

def test_from_env_unset_gives_defaults(monkeypatch):
    monkeypatch.delenv("PYMPEC_BACKOFF", raising=False)
    b = Backoff.from_env()
    d = Backoff()
    assert (b.spin, b.start, b.max, b.idle, b.idle_max) == (d.spin, d.start, d.max, d.idle,
                                                            d.idle_max)


def test_from_env_blank_gives_defaults(monkeypatch):
    monkeypatch.setenv("PYMPEC_BACKOFF", "  ")
    assert Backoff.from_env().max == Backoff().max


def test_from_env_keyword_defaults_apply_and_env_overrides(monkeypatch):
    monkeypatch.delenv("PYMPEC_BACKOFF", raising=False)
    assert Backoff.from_env(max=0.005, spin=3e-3).max == 0.005
    monkeypatch.setenv("PYMPEC_BACKOFF", "0.002")
    b = Backoff.from_env(max=0.005, spin=3e-3)
    assert b.max == 0.002 and b.spin == 3e-3


@pytest.mark.parametrize("text,expect", [("0.002", 0.002), ("1e-4", 1e-4), (" 0.01 ", 0.01)])
def test_from_env_plain_number_sets_max(monkeypatch, text, expect):
    monkeypatch.setenv("PYMPEC_BACKOFF", text)
    b = Backoff.from_env()
    assert b.max == pytest.approx(expect)
    assert b.idle == Backoff().idle


def test_from_env_fields(monkeypatch):
    monkeypatch.setenv("PYMPEC_BACKOFF", "max=0.001, idle=2,idle_max=0.05 ,spin=2e-4,start=2e-6")
    b = Backoff.from_env()
    assert (b.spin, b.start, b.max, b.idle, b.idle_max) == (2e-4, 2e-6, 0.001, 2.0, 0.05)


def test_from_env_some_fields_keep_other_defaults(monkeypatch):
    monkeypatch.setenv("PYMPEC_BACKOFF", "max=0.004,idle=5")
    b, d = Backoff.from_env(), Backoff()
    assert (b.max, b.idle) == (0.004, 5.0)
    assert (b.spin, b.start, b.idle_max) == (d.spin, d.start, d.idle_max)


@pytest.mark.parametrize("text", ["fast", "1ms", "max=", "max=abc", "maximum=1", "max=1=2",
                                  "max:0.001", "max=0.001;idle=2", "=0.1", "max=0.001,,idle=1"])
def test_from_env_bad_input_raises_clear_value_error(monkeypatch, text):
    monkeypatch.setenv("PYMPEC_BACKOFF", text)
    with pytest.raises(ValueError) as info:
        Backoff.from_env()
    message = str(info.value)
    assert "PYMPEC_BACKOFF" in message and repr(text.strip()) in message
    assert "max" in message and "idle" in message        # says what is expected


def test_from_env_unknown_field_is_named(monkeypatch):
    monkeypatch.setenv("PYMPEC_BACKOFF", "max=0.001,sleepy=3")
    with pytest.raises(ValueError, match="sleepy"):
        Backoff.from_env()


@pytest.mark.parametrize("text", ["-1", "max=-0.001", "nan", "idle_max=nan", "start=-1"])
def test_from_env_rejects_negative_and_nan(monkeypatch, text):
    monkeypatch.setenv("PYMPEC_BACKOFF", text)
    with pytest.raises(ValueError, match="PYMPEC_BACKOFF"):
        Backoff.from_env()


# -- Doorbell ----------------------------------------------------------------------

@pytest.fixture
def cluster_id() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def bells(cluster_id):
    made: list[Doorbell] = []

    def make(rank: int) -> Doorbell:
        bell = Doorbell(cluster_id, rank)
        made.append(bell)
        return bell

    yield make
    for bell in made:
        bell.close()


def test_address_is_abstract_and_per_rank():
    assert address("c", 1).startswith(b"\0")
    assert address("c", 1) != address("c", 2) != address("d", 1)


def test_ring_wakes_a_long_wait_quickly(bells):
    sleeper, ringer = bells(1), bells(0)
    if sleeper.sock is None:
        pytest.skip("no abstract Unix sockets here")
    timer = threading.Timer(0.05, ringer.ring, args=(1,))
    start = time.monotonic()
    timer.start()
    try:
        assert sleeper.wait(5.0) is True
    finally:
        timer.cancel()
    assert time.monotonic() - start < 2.5               # woken, not timed out (5 s)


def test_ring_before_wait_is_not_lost(bells):
    sleeper, ringer = bells(1), bells(0)
    if sleeper.sock is None:
        pytest.skip("no abstract Unix sockets here")
    ringer.ring(1)
    start = time.monotonic()
    assert sleeper.wait(5.0) is True
    assert time.monotonic() - start < 2.5               # woken, not timed out (5 s)


def test_many_rings_are_drained_by_one_wake(bells):
    sleeper, ringer = bells(1), bells(0)
    if sleeper.sock is None:
        pytest.skip("no abstract Unix sockets here")
    for _ in range(50):
        ringer.ring(1)
    assert sleeper.wait(5.0) is True
    start = time.monotonic()
    assert sleeper.wait(0.05) is False                  # nothing left: a plain timeout
    assert time.monotonic() - start >= 0.04


def test_ringing_a_full_queue_never_blocks_or_raises(bells):
    bells(1)
    ringer = bells(0)
    start = time.monotonic()
    for _ in range(5000):                               # far beyond the socket's queue
        ringer.ring(1)
    assert time.monotonic() - start < 5


def test_ring_to_a_rank_that_does_not_exist_never_raises(bells):
    ringer = bells(0)
    ringer.ring(7)
    ringer.ring(7)
    ringer.ring(-1)
    stranger = Doorbell(f"no-such-cluster-{uuid.uuid4().hex}", 0)
    stranger.ring(3)
    stranger.close()


def test_ring_to_a_rank_that_went_away_never_raises(bells, cluster_id):
    ringer = bells(0)
    gone = Doorbell(cluster_id, 2)
    ringer.ring(2)
    gone.close()
    ringer.ring(2)


def test_wait_times_out_when_nobody_rings(bells):
    bell = bells(1)
    start = time.monotonic()
    assert bell.wait(0.05) is False
    assert 0.04 <= time.monotonic() - start < 1


def test_wait_zero_just_yields(bells):
    bell = bells(1)
    start = time.monotonic()
    assert bell.wait(0) is False
    assert time.monotonic() - start < 1.0               # a yield; slow only under load


def test_bell_less_doorbell_waits_plainly():
    bell = Doorbell(None)
    assert bell.sock is None and bell.fileno() == -1
    bell.ring(1)                                        # a no-op, never raises
    start = time.monotonic()
    assert bell.wait(0.05) is False
    assert 0.04 <= time.monotonic() - start < 1
    bell.close()


def test_closed_doorbell_waits_plainly(bells):
    bell = bells(1)
    bell.close()
    start = time.monotonic()
    assert bell.wait(0.03) is False
    assert time.monotonic() - start >= 0.025
    bell.ring(0)


def test_fileno_is_selectable(bells):
    import select
    sleeper, ringer = bells(1), bells(0)
    if sleeper.sock is None:
        pytest.skip("no abstract Unix sockets here")
    ringer.ring(1)
    assert select.select([sleeper], [], [], 1.0)[0] == [sleeper]
    sleeper.drain()
    assert select.select([sleeper], [], [], 0)[0] == []


def test_rank_is_rebindable_after_close(cluster_id):
    first = Doorbell(cluster_id, 4)
    first.close()
    second = Doorbell(cluster_id, 4)
    try:
        if second.sock is None:
            pytest.skip("no abstract Unix sockets here")
        ringer = Doorbell(cluster_id, 0)
        ringer.ring(4)
        ringer.close()
        assert second.wait(2.0) is True
    finally:
        second.close()
