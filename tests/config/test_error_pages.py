"""What never reaches a DRF view still answers the API's envelope under /api/, HTML elsewhere."""

from __future__ import annotations

import pytest


@pytest.mark.django_db
def test_an_api_url_no_route_matches_is_a_json_404(alice_client):
    response = alice_client.get("/api/v1/avatars/not-a-uuid/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.django_db
def test_a_site_page_that_does_not_exist_is_still_an_html_404(client):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.django_db
def test_a_webhook_body_over_the_size_limit_is_a_json_400(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024

    response = client.post(
        "/api/v1/webhooks/replicate/?avatar=x", b"{" + b" " * 2048 + b"}", "application/json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
