"""The circuit breaker (avatars/breaker.py) on real Redis, with time passed explicitly."""

from __future__ import annotations

import pytest

from avatars import breaker
from avatars.models import Alert

T0 = 2_000_000.0


@pytest.fixture
def threshold(settings):
    settings.REPLICATE_BREAKER_THRESHOLD = 3
    return 3


def test_failures_below_the_threshold_keep_it_closed(threshold):
    assert breaker.record_failure(now=T0) is None
    assert breaker.record_failure(now=T0) is None
    assert breaker.admit(now=T0).allowed
    assert not breaker.current_state().open


def test_an_answer_between_failures_resets_the_count(threshold):
    breaker.record_failure(now=T0)
    breaker.record_failure(now=T0)
    breaker.record_answer()
    assert breaker.record_failure(now=T0) is None
    assert not breaker.current_state().open


@pytest.mark.django_db
def test_it_opens_after_failures_in_a_row_and_holds_calls_back_for_the_cool_off(threshold):
    breaker.record_failure(now=T0)
    breaker.record_failure(now=T0)
    assert breaker.record_failure(now=T0) == breaker.COOL_OFF_INITIAL

    held = breaker.admit(now=T0 + 1)
    assert not held.allowed and held.wait == pytest.approx(breaker.COOL_OFF_INITIAL - 1)
    assert breaker.current_state().open
    assert Alert.objects.get(rule="provider_unavailable", resolved_at__isnull=True)


@pytest.mark.django_db
def test_one_probe_per_cool_off_and_the_cool_off_grows_to_its_cap(threshold):
    for _ in range(3):
        breaker.record_failure(now=T0)
    now, probes, cool_off = T0 + breaker.COOL_OFF_INITIAL, [], breaker.COOL_OFF_INITIAL
    for _ in range(12):
        probe = breaker.admit(now=now)
        assert probe.allowed and probe.probe
        assert not breaker.admit(now=now).allowed  # only one caller probes
        wait = breaker.record_failure(probe=True, now=now)
        cool_off = min(breaker.COOL_OFF_MAX, cool_off * breaker.COOL_OFF_GROWTH)
        assert wait == pytest.approx(cool_off)
        probes.append(now)
        now += wait
    gaps = [later - earlier for earlier, later in zip(probes, probes[1:], strict=False)]
    assert gaps[0] == pytest.approx(7.5)
    assert gaps[-1] == pytest.approx(breaker.COOL_OFF_MAX)


@pytest.mark.django_db
def test_a_probe_that_never_reports_back_does_not_block_the_next_one(threshold):
    for _ in range(3):
        breaker.record_failure(now=T0)
    assert breaker.admit(now=T0 + 5).probe
    assert not breaker.admit(now=T0 + 9.9).allowed
    assert breaker.admit(now=T0 + 10).probe


@pytest.mark.django_db
def test_calls_already_under_way_when_it_opened_change_nothing(threshold):
    for _ in range(3):
        breaker.record_failure(now=T0)

    assert breaker.record_failure(now=T0 + 1) == pytest.approx(breaker.COOL_OFF_INITIAL - 1)
    breaker.record_answer()

    assert breaker.current_state().open
    assert breaker.admit(now=T0 + breaker.COOL_OFF_INITIAL).probe, "the probe still comes at 5 s"


@pytest.mark.django_db
def test_an_answered_probe_closes_it_and_resolves_the_alert(threshold):
    for _ in range(3):
        breaker.record_failure(now=T0)

    breaker.record_answer(probe=True)

    assert not breaker.current_state().open
    assert breaker.admit(now=T0 + 1).allowed
    alert = Alert.objects.get(rule="provider_unavailable")
    assert alert.resolved_at is not None
