"""The staff dashboard in Chromium: sign in to the admin, follow its link, see the charts drawn.

Screenshots: test-artifacts/dashboard.png (48 hours) and test-artifacts/dashboard-30d.png.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from freezegun import freeze_time

from avatars.models import Alert
from avatars.selfies import prepare_selfie_from_settings
from avatars.services import create_selfie_session
from credits.services import grant_credits
from tests.avatars.selfie_corpus import encode, fixture_image
from tests.avatars.test_dashboard import add_generation

pytestmark = pytest.mark.timeout(180)
VIEWPORT = {"width": 1280, "height": 900}
# (every n-th generation, how it ends): the rest succeed
ENDINGS = [(7, "failed", "content_policy"), (11, "failed", "timeout"), (13, "canceled", "canceled")]


def _ending(n: int, hours_ago: int) -> tuple[str, str]:
    if hours_ago in (20, 21) and n % 2:
        return "failed", "provider_unavailable"  # an incident, 20 hours ago
    return next(((s, code) for every, s, code in ENDINGS if n % every == 0), ("succeeded", ""))


def _recent_generations(owner) -> None:
    """Three generations an hour for 48 hours, one a day before that, and their refunds."""
    now = timezone.now()
    with freeze_time(now - timedelta(days=31)):
        session = create_selfie_session(
            owner=owner, selfie=prepare_selfie_from_settings(encode(fixture_image(), "JPEG"))
        )
    times = [now - timedelta(hours=h, minutes=10 + 15 * i) for h in range(48) for i in range(3)]
    times += [now - timedelta(days=d, hours=3) for d in range(2, 30)]
    for n, requested in enumerate(times):
        status, code = _ending(n, int((now - requested).total_seconds() // 3600))
        cost = Decimal("0.05") if status == "succeeded" else Decimal(0)
        add_generation(
            owner, session, requested, 30 + n % 50, status, error_code=code, cost_usd=cost
        )


@pytest.fixture
def staff_with_data(transactional_db, settings):
    settings.CREDITS_AUTO_REFUND_DAILY_LIMIT = 1000
    staff = get_user_model().objects.create_user(username="ops", password="ops-pw-1", is_staff=True)
    grant_credits(user=staff, amount=500, memo="browser test")
    _recent_generations(staff)
    Alert.objects.create(
        rule="content_policy_spike", severity="warning", message="12 refusals in 15 minutes"
    )
    return staff


def test_staff_open_the_dashboard_from_the_admin_and_see_its_charts(
    staff_with_data, live_server, chromium, artifacts_dir
):
    with chromium() as browser:
        page = browser.new_context(viewport=VIEWPORT).new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{live_server.url}/admin/login/?next=/admin/")
        page.get_by_label("Username").fill("ops")
        page.get_by_label("Password").fill("ops-pw-1")
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("link", name="Dashboard", exact=True).click()
        page.wait_for_selector('#staff-dashboard[data-range="48h"]')

        charts = page.locator("svg.chart")
        assert charts.count() == 5
        # Drawn, not only present: every chart has a real size on the page
        assert all(charts.nth(i).bounding_box()["height"] > 80 for i in range(5))
        outcomes = page.locator("#outcomes")
        # (the hour under way may have none yet)
        assert outcomes.locator("rect.bar[data-series=Succeeded]").count() >= 47
        assert outcomes.locator("rect.bar[data-series=Failed]").count() > 10
        assert outcomes.locator("ul.legend li").all_text_contents() == [
            "Succeeded",
            "Failed",
            "Canceled",
        ]
        assert page.locator("#waits polyline").count() >= 2
        assert "provider_unavailable" in page.locator("#refunds ul.legend").text_content()
        assert page.locator("#errors rect.bar").count() == 3  # a cancellation is no error
        assert "content_policy_spike" in page.locator("#alerts").text_content()
        assert "closed" in page.locator("#provider").text_content()
        page.screenshot(path=artifacts_dir / "dashboard.png", full_page=True)

        page.get_by_role("link", name="Last 30 days, per day").click()
        page.wait_for_selector('#staff-dashboard[data-range="30d"]')
        # one generation or more on each day (the earliest may fall just outside the range)
        assert outcomes.locator("rect.bar").count() >= 28
        page.screenshot(path=artifacts_dir / "dashboard-30d.png", full_page=True)
