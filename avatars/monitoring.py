"""Alert rules, checked by celery-beat every five minutes (and the breaker's at once).

A firing rule has one open `Alert` row (the database refuses a second), logged at CRITICAL and
mailed to ADMINS when it opens; later checks only count it, and it is resolved as soon as its
condition clears.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import mail_admins
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from avatars import breaker, spending
from avatars.models import Alert, Avatar
from credits.audit import find_ledger_problems
from credits.models import Compensation

logger = logging.getLogger(__name__)

WINDOW = timedelta(minutes=15)
QUEUED_TOO_LONG = timedelta(minutes=5)
PENDING_TOO_LONG = timedelta(hours=24)


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str
    # The alert's message when the condition holds at `now`, else None.
    check: Callable[[datetime], str | None]


def _ended_recently(now: datetime):
    return Avatar.objects.filter(completed_at__gte=now - WINDOW, completed_at__lte=now)


def provider_auth_failures(now: datetime) -> str | None:
    count = _ended_recently(now).filter(error_code="provider_auth").count()
    if count:
        return (
            f"{count} generation(s) failed with provider_auth in the last 15 minutes: check "
            "REPLICATE_API_TOKEN and OPENAI_API_KEY"
        )
    return None


def high_failure_rate(now: datetime) -> str | None:
    counts = _ended_recently(now).aggregate(
        total=Count("pk"), failed=Count("pk", filter=Q(status=Avatar.Status.FAILED))
    )
    total, failed = counts["total"], counts["failed"]
    if total >= settings.ALERT_FAILURE_RATE_MIN_GENERATIONS and failed > 0.2 * total:
        return f"{failed} of {total} generations failed in the last 15 minutes (over 20%)"
    return None


def content_policy_spike(now: datetime) -> str | None:
    count = _ended_recently(now).filter(error_code="content_policy").count()
    if count >= settings.ALERT_CONTENT_POLICY_SPIKE:
        return f"{count} content-policy refusals in the last 15 minutes"
    return None


def queued_too_long(now: datetime) -> str | None:
    # Claimed avatars (a deadline set) are waiting their turn in the pace, not for a worker.
    count = Avatar.objects.filter(
        status=Avatar.Status.QUEUED, deadline_at__isnull=True, created_at__lt=now - QUEUED_TOO_LONG
    ).count()
    if count:
        return f"{count} avatar(s) queued for over 5 minutes: are the worker and Redis up?"
    return None


def compensations_waiting(now: datetime) -> str | None:
    count = Compensation.objects.filter(
        status=Compensation.Status.PENDING, created_at__lt=now - PENDING_TOO_LONG
    ).count()
    if count:
        return f"{count} compensation(s) pending review for over 24 hours"
    return None


def ledger_mismatch(now: datetime) -> str | None:
    problems = find_ledger_problems()
    if problems:
        return f"check_ledger found {len(problems)} problem(s), first: {problems[0]}"
    return None


def provider_unavailable(now: datetime) -> str | None:
    state = breaker.current_state()
    if not state.open:
        return None
    since = state.opened_at.strftime("%H:%M:%S UTC") if state.opened_at else "a moment ago"
    return f"Replicate is failing (breaker open since {since}); generations are waiting it out"


def _spend_if_at(share: float, now: datetime) -> spending.DailySpend | None:
    """The day's spend, when it is at least `share` of AVATAR_DAILY_SPEND_LIMIT_USD."""
    if settings.AVATAR_DAILY_SPEND_LIMIT_USD is None:
        return None
    spend = spending.measure_daily_spend(now)
    return spend if spend.share >= share else None


def _describe(spend: spending.DailySpend) -> str:
    return (
        f"today's spend is {spend.share:.0%} of the daily limit: ${spend.spent:.2f} spent and "
        f"${spend.in_flight:.2f} estimated in flight, of ${spend.limit:.2f}"
    )


def spend_cap_near(now: datetime) -> str | None:
    spend = _spend_if_at(0.8, now)
    return _describe(spend) if spend else None


def spend_cap_reached(now: datetime) -> str | None:
    spend = _spend_if_at(1.0, now)
    if spend is None:
        return None
    return f"{_describe(spend)}; new submissions are refused until {spend.resets_at:%H:%M} UTC"


RULES = [
    Rule("provider_unavailable", Alert.Severity.CRITICAL, provider_unavailable),
    Rule("provider_auth", Alert.Severity.CRITICAL, provider_auth_failures),
    Rule("failure_rate", Alert.Severity.CRITICAL, high_failure_rate),
    Rule("content_policy_spike", Alert.Severity.WARNING, content_policy_spike),
    Rule("queued_too_long", Alert.Severity.CRITICAL, queued_too_long),
    Rule("compensations_pending", Alert.Severity.WARNING, compensations_waiting),
    Rule("ledger_mismatch", Alert.Severity.CRITICAL, ledger_mismatch),
    Rule("spend_cap_near", Alert.Severity.WARNING, spend_cap_near),
    Rule("spend_cap_reached", Alert.Severity.CRITICAL, spend_cap_reached),
]


def _fire(rule: Rule, message: str, now: datetime) -> None:
    updated = Alert.objects.filter(rule=rule.name, resolved_at__isnull=True).update(
        last_seen_at=now, message=message, count=F("count") + 1
    )
    if updated:
        return
    try:
        with transaction.atomic():
            Alert.objects.create(
                rule=rule.name,
                severity=rule.severity,
                message=message,
                first_seen_at=now,
                last_seen_at=now,
            )
    except IntegrityError:
        return  # another checker opened it a moment ago
    logger.critical("alert %s: %s", rule.name, message, extra={"alert": rule.name})
    mail_admins(f"{rule.severity}: {rule.name}", message, fail_silently=True)


def _resolve(rule: Rule, now: datetime) -> None:
    if Alert.objects.filter(rule=rule.name, resolved_at__isnull=True).update(resolved_at=now):
        logger.info("alert %s resolved", rule.name, extra={"alert": rule.name})


def _evaluate(rule: Rule, now: datetime) -> bool:
    message = rule.check(now)
    if message:
        _fire(rule, message, now)
    else:
        _resolve(rule, now)
    return bool(message)


def follow_breaker(sender=None, **kwargs) -> None:
    """The breaker opened or closed: its alert follows at once, not at the next check."""
    rule = next(rule for rule in RULES if rule.name == "provider_unavailable")
    try:
        _evaluate(rule, timezone.now())
    except Exception:
        logger.warning("could not update the provider_unavailable alert", exc_info=True)


def check_alerts(now: datetime | None = None) -> list[str]:
    """Evaluate every rule; returns the names of those firing."""
    now = now or timezone.now()
    return [rule.name for rule in RULES if _evaluate(rule, now)]


def raise_alert(name: str, severity: str, message: str) -> None:
    """Open (or refresh) an alert no periodic rule checks: its checker needs a network call."""
    _fire(Rule(name, severity, lambda now: message), message, timezone.now())


def clear_alert(name: str) -> None:
    """Resolve the alert `raise_alert` opened, once its checker finds the condition gone."""
    _resolve(Rule(name, Alert.Severity.WARNING, lambda now: None), timezone.now())
