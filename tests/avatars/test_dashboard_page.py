"""The dashboard page: staff only, linked from the admin index, five SVG charts, both ranges."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from freezegun import freeze_time

from avatars.models import Alert, Avatar
from tests.avatars.test_dashboard import NOW, add_generation, at, build_day

URL = "/admin/dashboard/"


@pytest.fixture
def day(alice):
    build_day(alice)


@pytest.fixture
def staff_client(django_user_model) -> Client:
    client = Client()
    client.force_login(
        django_user_model.objects.create_user(username="ops", password="ops-pw-1", is_staff=True)
    )
    return client


def test_someone_signed_out_is_sent_to_the_admin_sign_in(db):
    response = Client().get(URL)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={URL}"


def test_a_signed_in_user_who_is_not_staff_is_refused(alice):
    client = Client()
    client.force_login(alice)

    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_admin_index_links_to_the_dashboard(staff_client):
    response = staff_client.get("/admin/")

    assert response.status_code == 200
    assert f'href="{URL}"' in response.content.decode()


def test_staff_see_five_charts_the_provider_and_open_alerts(day, staff_client):
    Alert.objects.create(rule="failure_rate", severity="critical", message="31% failed")

    with freeze_time(NOW):
        page = staff_client.get(URL).content.decode()

    assert page.count('<svg class="chart"') == 5
    for panel in ("outcomes", "waits", "refunds", "cost", "errors", "provider", "alerts"):
        assert f'id="{panel}"' in page
    assert '<rect class="bar" data-series="Succeeded"' in page
    assert '<li><span class="swatch"' in page and "goodwill" in page
    assert "31% failed" in page and "closed" in page
    assert "1 queued or running" in page


@pytest.mark.parametrize(
    ("asked", "shown", "label"),
    [
        ("30d", "30d", "Dec 4: Succeeded 3"),
        ("7y", "48h", "Dec 4 11:00: Succeeded 2"),
        ("", "48h", "Dec 4 11:00: Succeeded 2"),
    ],
)
def test_the_range_is_chosen_by_the_query_string(day, staff_client, asked, shown, label):
    with freeze_time(NOW):
        page = staff_client.get(URL, {"range": asked} if asked else {}).content.decode()

    assert f'data-range="{shown}"' in page
    assert label in page


def _page_queries(client: Client) -> int:
    with freeze_time(NOW), CaptureQueriesContext(connection) as queries:
        assert client.get(URL, {"range": "30d"}).status_code == 200
    return len(queries)


def test_the_page_makes_as_many_queries_with_more_rows(day, staff_client, alice, settings):
    settings.CREDITS_AUTO_REFUND_DAILY_LIMIT = 100
    _page_queries(staff_client)  # keeps the ended days
    before = _page_queries(staff_client)
    session = Avatar.objects.first().session
    for minute in range(10):
        add_generation(alice, session, at(f"2026-12-04 12:0{minute}"), 30, "failed", error_code="x")

    assert _page_queries(staff_client) == before
