"""Alert rules: each fires once while its condition holds, and resolves when it clears."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone
from freezegun import freeze_time

from avatars import monitoring
from avatars.models import Alert, Avatar
from credits import services as credit_services
from credits.models import CreditAccount
from tests.avatars.test_recovery import make_avatar


@pytest.fixture
def funded(alice, settings):
    settings.AVATAR_MAX_IN_FLIGHT_PER_USER = 100
    settings.ADMINS = [("ops", "ops@example.com")]
    credit_services.grant_credits(user=alice, amount=100)
    return alice


def ended(owner, n: int, *, status: str, error_code: str = "", minutes_ago: float = 1) -> None:
    for _ in range(n):
        avatar = make_avatar(owner)
        Avatar.objects.filter(pk=avatar.pk).update(
            status=status,
            error_code=error_code,
            completed_at=timezone.now() - timedelta(minutes=minutes_ago),
        )


def open_alerts() -> list[str]:
    return sorted(Alert.objects.filter(resolved_at__isnull=True).values_list("rule", flat=True))


def assert_fires_once_then_resolves(rule: str, clear) -> None:
    """Two checks while the condition holds make one alert and one mail; then it resolves."""
    assert rule in monitoring.check_alerts()
    assert rule in monitoring.check_alerts()
    alert = Alert.objects.get(rule=rule)
    assert (alert.count, alert.resolved_at) == (2, None)
    assert [m.subject for m in mail.outbox].count(f"[avatars] {alert.severity}: {rule}") == 1

    clear()

    assert rule not in monitoring.check_alerts()
    alert.refresh_from_db()
    assert alert.resolved_at is not None
    assert open_alerts() == []


def test_nothing_fires_on_a_quiet_service(db):
    assert monitoring.check_alerts() == []
    assert not Alert.objects.exists()


def test_a_provider_auth_failure_alerts(funded):
    ended(funded, 1, status="failed", error_code="provider_auth")

    assert_fires_once_then_resolves(
        "provider_auth",
        lambda: Avatar.objects.update(completed_at=timezone.now() - timedelta(hours=1)),
    )


def test_a_failure_rate_over_20_percent_alerts_with_enough_generations(funded):
    ended(funded, 7, status="succeeded")
    ended(funded, 2, status="failed", error_code="timeout")
    assert "failure_rate" not in monitoring.check_alerts(), "9 generations are too few"
    ended(funded, 1, status="failed", error_code="timeout")  # 3 of 10 failed

    assert_fires_once_then_resolves("failure_rate", lambda: ended(funded, 10, status="succeeded"))


def test_a_content_policy_spike_alerts(funded, settings):
    settings.ALERT_CONTENT_POLICY_SPIKE = 3
    ended(funded, 2, status="failed", error_code="content_policy")
    assert "content_policy_spike" not in monitoring.check_alerts()
    ended(funded, 1, status="failed", error_code="content_policy")

    def later():
        Avatar.objects.update(completed_at=timezone.now() - timedelta(minutes=16))

    assert_fires_once_then_resolves("content_policy_spike", later)


def test_avatars_queued_for_over_five_minutes_alert(funded):
    now = timezone.now()
    make_avatar(funded)

    with freeze_time(now + timedelta(minutes=4)):
        assert "queued_too_long" not in monitoring.check_alerts()
    with freeze_time(now + timedelta(minutes=6)):
        assert_fires_once_then_resolves(
            "queued_too_long", lambda: Avatar.objects.update(status="running")
        )


def test_compensations_pending_for_a_day_alert(funded):
    credit_services.spend_credits(user=funded, amount=1, reference="avatar:x")
    pending = credit_services.compensate(reference="avatar:x", reason="goodwill", approve=False)

    with freeze_time(timezone.now() + timedelta(hours=25)):
        assert_fires_once_then_resolves(
            "compensations_pending",
            lambda: credit_services.reject_compensation(compensation_id=pending.pk),
        )


def test_a_ledger_mismatch_alerts(funded):
    account = CreditAccount.objects.get(user=funded)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE credits_creditaccount SET balance = 1 WHERE id = %s", [account.pk])

    def repair():
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE credits_creditaccount SET balance = 100 WHERE id = %s", [account.pk]
            )

    assert_fires_once_then_resolves("ledger_mismatch", repair)


def test_the_daily_spend_alerts_at_80_and_at_100_percent_of_the_limit(funded, settings):
    settings.AVATAR_DAILY_SPEND_LIMIT_USD = 10.0
    settings.REPLICATE_MODEL, settings.AVATAR_IMAGE_QUALITY = "openai/gpt-image-1.5", "high"
    ended(funded, 1, status="succeeded")
    Avatar.objects.update(cost_usd=Decimal("7.50"))
    make_avatar(funded)  # in flight: estimated at $0.136
    assert not {"spend_cap_near", "spend_cap_reached"} & set(monitoring.check_alerts())

    spent = Avatar.objects.filter(status="succeeded")
    spent.update(cost_usd=Decimal("8.00"))  # 81%
    assert_fires_once_then_resolves("spend_cap_near", lambda: spent.update(cost_usd=Decimal("1")))

    spent.update(cost_usd=Decimal("9.90"))  # 100.4%
    assert {"spend_cap_near", "spend_cap_reached"} <= set(monitoring.check_alerts())
    reached = Alert.objects.get(rule="spend_cap_reached", resolved_at__isnull=True)
    assert (reached.severity, "refused until 00:00 UTC" in reached.message) == ("critical", True)
    assert "$9.90 spent and $0.14 estimated in flight, of $10.00" in reached.message


def test_without_a_spending_limit_no_spend_alert_fires(funded):
    ended(funded, 1, status="succeeded")
    Avatar.objects.update(cost_usd=Decimal("1000"))

    assert not {"spend_cap_near", "spend_cap_reached"} & set(monitoring.check_alerts())


def test_an_alert_is_logged_at_critical(funded, caplog):
    ended(funded, 1, status="failed", error_code="provider_auth")

    with caplog.at_level(logging.INFO, logger="avatars.monitoring"):
        monitoring.check_alerts()
        monitoring.check_alerts()

    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1
    assert "provider_auth" in critical[0].getMessage()


def test_a_resolved_rule_that_fires_again_opens_a_new_alert(funded):
    ended(funded, 1, status="failed", error_code="provider_auth")
    monitoring.check_alerts()
    Avatar.objects.update(completed_at=timezone.now() - timedelta(hours=1))
    monitoring.check_alerts()

    ended(funded, 1, status="failed", error_code="provider_auth")
    monitoring.check_alerts()

    assert Alert.objects.filter(rule="provider_auth").count() == 2
    assert open_alerts() == ["provider_auth"]
