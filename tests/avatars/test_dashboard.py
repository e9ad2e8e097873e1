"""The dashboard's figures on a hand-built day, and the rollup that keeps periods that are over.

Now is 2026-12-04 12:30 UTC. Alice's generations (requested -> ended):
  Nov 1 10:00       succeeded          (older than 30 days: in neither range)
  Dec 1 10:00 +20 s succeeded $0.04
  Dec 3 09:00 +60 s failed timeout     refunded
  Dec 4 11:00 +40 s succeeded $0.05    refunded at 12:15 as goodwill, by staff
  Dec 4 11:10 +60 s succeeded $0.07
  Dec 4 11:20 +30 s failed content_policy, refunded
  Dec 4 12:05 +100 s succeeded $0.06
  Dec 4 12:10 +60 s canceled           refunded
  Dec 4 12:20       still running      (charged, not ended)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext
from freezegun import freeze_time

from avatars import breaker, dashboard, pacing
from avatars.dashboard import Figures, collect_dashboard
from avatars.models import Alert, Avatar, DashboardRollup
from avatars.selfies import prepare_selfie_from_settings
from avatars.services import create_selfie_session
from credits import services as credit_services
from tests.avatars.selfie_corpus import encode, fixture_image
from tests.avatars.test_recovery import make_avatar

NOW = datetime(2026, 12, 4, 12, 30, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def add_generation(
    owner, session, requested: datetime, seconds: float | None, status: str, **fields
):
    """One charged avatar requested at `requested` that ended `seconds` later (None: runs on),
    refunded when it did not succeed, as the pipeline would."""
    with freeze_time(requested):
        avatar = make_avatar(owner, session=session)
    if seconds is None:
        Avatar.objects.filter(pk=avatar.pk).update(status=Avatar.Status.RUNNING)
        return avatar
    ended = requested + timedelta(seconds=seconds)
    with freeze_time(ended):
        Avatar.objects.filter(pk=avatar.pk).update(status=status, completed_at=ended, **fields)
        if status != Avatar.Status.SUCCEEDED:
            credit_services.compensate(
                reference=avatar.credit_reference, reason=fields.get("error_code", "canceled")
            )
    return avatar


def build_day(alice) -> None:
    """The generations of the module docstring."""
    credit_services.grant_credits(user=alice, amount=40)
    with freeze_time(at("2026-11-01")):
        session = create_selfie_session(
            owner=alice, selfie=prepare_selfie_from_settings(encode(fixture_image(), "JPEG"))
        )
    add = add_generation
    add(alice, session, at("2026-11-01 10:00"), 20, "succeeded", cost_usd=Decimal("0.03"))
    add(alice, session, at("2026-12-01 10:00"), 20, "succeeded", cost_usd=Decimal("0.04"))
    add(alice, session, at("2026-12-03 09:00"), 60, "failed", error_code="timeout")
    goodwill = add(
        alice, session, at("2026-12-04 11:00"), 40, "succeeded", cost_usd=Decimal("0.05")
    )
    add(alice, session, at("2026-12-04 11:10"), 60, "succeeded", cost_usd=Decimal("0.07"))
    add(alice, session, at("2026-12-04 11:20"), 30, "failed", error_code="content_policy")
    add(alice, session, at("2026-12-04 12:05"), 100, "succeeded", cost_usd=Decimal("0.06"))
    add(alice, session, at("2026-12-04 12:10"), 60, "canceled", error_code="canceled")
    add(alice, session, at("2026-12-04 12:20"), None, "running")
    with freeze_time(at("2026-12-04 12:15")):
        credit_services.compensate(
            reference=goodwill.credit_reference, reason="goodwill", source="staff"
        )


@pytest.fixture
def day(alice):
    build_day(alice)


def by_start(board: dashboard.Dashboard) -> dict[datetime, Figures]:
    return dict(zip(board.starts, board.periods, strict=True))


def test_the_48_hours_are_48_hours_ending_with_the_current_one():
    starts = dashboard.period_starts(dashboard.SPANS["48h"], NOW)

    assert (len(starts), starts[0], starts[-1]) == (
        48,
        at("2026-12-02 13:00"),
        at("2026-12-04 12:00"),
    )


def test_the_30_days_end_with_today():
    starts = dashboard.period_starts(dashboard.SPANS["30d"], NOW)

    assert (len(starts), starts[0], starts[-1]) == (30, at("2026-11-05"), at("2026-12-04"))


def test_each_hour_counts_outcomes_cost_credits_times_refunds_and_errors(day):
    with freeze_time(NOW):
        board = collect_dashboard(span_key="48h")

    hours = by_start(board)
    eleven, noon = hours[at("2026-12-04 11:00")], hours[at("2026-12-04 12:00")]
    assert eleven.outcomes == {"succeeded": 2, "failed": 1}
    assert (eleven.cost_usd, eleven.credits_spent) == (Decimal("0.12"), 3)
    # percentile_cont of 40 s and 60 s: halfway, and 95% of the way
    assert (eleven.p50_seconds, eleven.p95_seconds) == (50, 59)
    assert (eleven.refunds, eleven.errors) == ({"content_policy": 1}, {"content_policy": 1})
    assert noon.outcomes == {"succeeded": 1, "canceled": 1}
    # the one still running was charged (a credit spent) but has not ended
    assert (noon.cost_usd, noon.credits_spent) == (Decimal("0.06"), 3)
    assert (noon.p50_seconds, noon.p95_seconds) == (100, 100)
    # a cancellation is an outcome and a refund reason, not an error
    assert (noon.refunds, noon.errors) == ({"canceled": 1, "goodwill": 1}, {})
    assert hours[at("2026-12-03 09:00")].errors == {"timeout": 1}
    others = [f for start, f in hours.items() if start < at("2026-12-03")]
    assert all(f == Figures() for f in others), "Dec 1 and Nov 1 are not in the last 48 hours"
    assert dict(board.top_errors()) == {"content_policy": 1, "timeout": 1}


def test_each_day_counts_the_same_over_30_days(day):
    with freeze_time(NOW):
        board = collect_dashboard(span_key="30d")

    days = by_start(board)
    today = days[at("2026-12-04")]
    assert today.outcomes == {"succeeded": 3, "failed": 1, "canceled": 1}
    assert (today.cost_usd, today.credits_spent) == (Decimal("0.18"), 6)
    # 40, 60 and 100 s: the middle one, and 90% of the way from 60 to 100
    assert (today.p50_seconds, today.p95_seconds) == (60, 96)
    assert today.refunds == {"content_policy": 1, "canceled": 1, "goodwill": 1}
    assert days[at("2026-12-03")].outcomes == {"failed": 1}
    assert days[at("2026-12-01")].cost_usd == Decimal("0.04")
    total = dashboard.totals(board.periods)
    assert (total.outcomes.total(), total.credits_spent) == (7, 8), "Nov 1 is outside"


def test_periods_that_are_over_are_kept_and_the_current_one_is_not(day):
    with freeze_time(NOW):
        collect_dashboard(span_key="48h")
        collect_dashboard(span_key="30d")

    kept = DashboardRollup.objects.values_list("period", "start")
    hours = [start for period, start in kept if period == "hour"]
    days = [start for period, start in kept if period == "day"]
    # 12:00 is under way; 11:00 ended 30 minutes ago, more than SETTLE
    assert (len(hours), max(hours)) == (47, at("2026-12-04 11:00"))
    assert (len(days), max(days)) == (29, at("2026-12-03"))


def test_an_hour_that_just_ended_waits_for_late_commits_before_it_is_kept(day):
    with freeze_time(at("2026-12-04 12:05")):
        collect_dashboard(span_key="48h")

    assert not DashboardRollup.objects.filter(start=at("2026-12-04 11:00")).exists()


def test_a_kept_period_is_read_not_counted_again(day):
    with freeze_time(NOW):
        collect_dashboard(span_key="48h")
    # Given a change that can not happen (an ended hour gaining a generation)
    Avatar.objects.filter(status="succeeded", completed_at__date="2026-12-04").update(
        completed_at=at("2026-12-04 11:30")
    )

    with freeze_time(NOW):
        board = collect_dashboard(span_key="48h")

    assert by_start(board)[at("2026-12-04 11:00")].outcomes == {"succeeded": 2, "failed": 1}


def test_kept_and_live_figures_agree_with_a_fresh_count_as_time_moves_on(day, alice):
    with freeze_time(NOW):
        collect_dashboard(span_key="48h")
    session = Avatar.objects.first().session
    add_generation(alice, session, at("2026-12-04 12:40"), 30, "failed", error_code="timeout")
    add_generation(alice, session, at("2026-12-04 13:05"), 50, "succeeded", cost_usd=Decimal("1"))

    with freeze_time(at("2026-12-04 13:30")):
        board = collect_dashboard(span_key="48h")
        fresh = dashboard.compute_figures(unit="hour", since=board.starts[0])

    assert DashboardRollup.objects.filter(start=at("2026-12-04 12:00")).exists()
    assert by_start(board) == {start: fresh.get(start, Figures()) for start in board.starts}
    assert by_start(board)[at("2026-12-04 12:00")].errors == {"timeout": 1}


def _queries(span_key: str) -> tuple[int, int]:
    """Queries of a first visit (it keeps the periods that are over) and of the next one."""
    DashboardRollup.objects.all().delete()
    counts = []
    for _ in range(2):
        with freeze_time(NOW), CaptureQueriesContext(connection) as queries:
            collect_dashboard(span_key=span_key)
        counts.append(len(queries))
    return counts[0], counts[1]


def test_the_number_of_queries_stays_the_same_as_rows_grow(day, alice, settings):
    settings.CREDITS_AUTO_REFUND_DAILY_LIMIT = 100
    first = {key: _queries(key) for key in dashboard.SPANS}
    session = Avatar.objects.first().session
    for minute in range(10):
        earlier = at(f"2026-12-0{minute % 4 + 1} 0{minute}:00")
        add_generation(alice, session, earlier, 30, "failed", error_code="timeout")
        add_generation(alice, session, at(f"2026-12-04 12:0{minute}"), 30, "succeeded")

    assert {key: _queries(key) for key in dashboard.SPANS} == first
    # the rollup read, four aggregates, (keeping the ended periods,) open alerts, in flight
    assert first == {"48h": (8, 7), "30d": (8, 7)}


def test_open_alerts_critical_first_and_resolved_ones_left_out(db):
    Alert.objects.create(rule="content_policy_spike", severity="warning", message="w")
    Alert.objects.create(rule="failure_rate", severity="critical", message="c")
    Alert.objects.create(rule="provider_auth", severity="critical", message="r", resolved_at=NOW)

    assert [a.rule for a in dashboard.open_alerts()] == ["failure_rate", "content_policy_spike"]


def test_provider_state_shows_an_open_breaker_a_slower_pace_and_the_work_in_flight(day, settings):
    for _ in range(settings.REPLICATE_BREAKER_THRESHOLD):
        breaker.record_failure()
    pacing.record_throttled(retry_after=1)

    state = dashboard.read_provider_state()

    assert state.breaker_open and state.opened_at is not None
    assert state.rate_per_minute == settings.REPLICATE_CREATES_PER_MINUTE / 2
    assert (state.waiting, state.in_flight) == (0, 1)


def test_provider_state_says_unknown_when_redis_does_not_answer(db, monkeypatch):
    def fail():
        raise redis.ConnectionError("down")

    monkeypatch.setattr(pacing, "current_rate", fail)

    state = dashboard.read_provider_state()

    assert (state.rate_per_minute, state.waiting) == (None, None)
