"""Account-wide create pacing (avatars/pacing.py) on real Redis, with time passed explicitly."""

from __future__ import annotations

import pytest

from avatars import pacing

T0 = 1_000_000.0


@pytest.fixture
def account(settings):
    """An account of 10 creates at once, then 60 a minute (one a second)."""
    settings.REPLICATE_CREATES_PER_MINUTE = 60
    settings.REPLICATE_CREATES_BURST = 10


def turns(count: int, *, now: float, first: int = 0) -> list[pacing.Turn]:
    return [
        pacing.take_turn(f"avatar-{index}", submitted_at=T0 + index, now=now)
        for index in range(first, first + count)
    ]


def test_a_burst_goes_at_once_and_the_rest_wait_in_order_for_their_slot(account):
    granted = turns(10, now=T0)
    waiting = turns(3, now=T0, first=10)

    assert all(turn.granted for turn in granted)
    assert [turn.granted for turn in waiting] == [False, False, False]
    assert [turn.ahead for turn in waiting] == [0, 1, 2]
    assert [round(turn.wait, 3) for turn in waiting] == [1.0, 2.0, 3.0]
    assert pacing.place_in_queue("avatar-12") == 2
    assert pacing.waiting_count() == 3


def test_first_come_first_served_a_later_avatar_never_takes_an_earlier_ones_slot(account):
    turns(10, now=T0)
    early = pacing.take_turn("early", submitted_at=T0 - 5, now=T0)
    late = pacing.take_turn("late", submitted_at=T0 + 50, now=T0 + 1.0)

    # One token refilled after a second: it is the earlier avatar's, even though it did not ask
    assert not early.granted
    assert not late.granted and late.ahead == 1
    assert pacing.take_turn("early", submitted_at=T0 - 5, now=T0 + 1.0).granted
    assert pacing.place_in_queue("late") == 0


def test_a_throttle_pauses_everyone_for_the_wait_given_and_halves_the_rate(account):
    rate = pacing.record_throttled(4.0, now=T0)

    assert rate == pytest.approx(0.5)
    during = pacing.take_turn("a", submitted_at=T0, now=T0 + 3.9)
    assert not during.granted and during.wait == pytest.approx(0.1)
    # At the end of the pause one create may go: the provider said a slot is free then
    assert pacing.take_turn("a", submitted_at=T0, now=T0 + 4.0).granted
    assert not pacing.take_turn("b", submitted_at=T0 + 1, now=T0 + 4.0).granted


def test_the_429s_of_one_burst_lower_the_rate_once(account):
    pacing.record_throttled(2.0, now=T0)
    pacing.record_throttled(2.0, now=T0 + 0.1)
    assert pacing.current_rate() == pytest.approx(0.5)

    pacing.record_throttled(2.0, now=T0 + 2.5)
    assert pacing.current_rate() == pytest.approx(0.25)


def test_creates_that_go_through_win_the_rate_back_step_by_step(account):
    pacing.record_throttled(1.0, now=T0)
    for _ in range(10):
        pacing.record_created()
    assert pacing.current_rate() == pytest.approx(0.5 * pacing.INCREASE_FACTOR**10)

    for _ in range(30):
        pacing.record_created()
    assert pacing.current_rate() == pytest.approx(1.0)


def test_the_rate_never_falls_below_one_create_a_minute(account):
    for step in range(20):
        pacing.record_throttled(1.0, now=T0 + 2 * step)
    assert pacing.current_rate() == pytest.approx(pacing.MIN_RATE_PER_SECOND)


def test_a_waiter_that_stopped_asking_loses_its_place(account, settings):
    # Given a slow account (one create every 100 s), its burst spent, and two waiting
    settings.REPLICATE_CREATES_PER_MINUTE = 0.6
    turns(10, now=T0)
    pacing.take_turn("gone", submitted_at=T0 - 10, now=T0)
    stays = pacing.take_turn("stays", submitted_at=T0, now=T0 + pacing.STALE_WAITER_SECONDS - 1)
    assert stays.ahead == 1

    # When the first has not asked again for longer than a step can take
    later = T0 + pacing.STALE_WAITER_SECONDS + 1
    turn = pacing.take_turn("stays", submitted_at=T0, now=later)

    # Then the one that kept asking moves up
    assert turn.ahead == 0
    assert pacing.place_in_queue("gone") is None


def test_an_avatar_that_leaves_the_queue_gives_up_its_place(account):
    turns(10, now=T0)
    pacing.take_turn("first", submitted_at=T0, now=T0)
    pacing.take_turn("second", submitted_at=T0 + 1, now=T0)

    pacing.leave_queue("first")

    assert pacing.place_in_queue("second") == 0
