"""The web page and its sign-in, served by Django (tests/e2e drives it in a browser)."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def _page_config(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="page-config" type="application/json">') + len(
        '<script id="page-config" type="application/json">'
    )
    return json.loads(html[start : html.index("</script>", start)])


def test_anonymous_visitor_is_sent_to_sign_in(client):
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next=/"


def test_sign_in_page_labels_its_fields(client):
    response = client.get(reverse("login"))

    html = response.content.decode()
    assert response.status_code == 200
    assert '<label for="id_username">' in html
    assert '<label for="id_password">' in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_signing_in_leads_to_the_page_with_the_api_addresses_and_the_cost(client, alice, settings):
    settings.AVATAR_CREDIT_COST = 2

    response = client.post(
        reverse("login"), {"username": "alice", "password": "alice-password-1"}, follow=True
    )

    assert response.redirect_chain[-1][0] == reverse("home")
    config = _page_config(response)
    assert config["creditCost"] == 2
    assert config["urls"] == {
        "credits": reverse("api-credits"),
        "sessions": reverse("api-sessions"),
        "styles": reverse("api-styles"),
        "status": reverse("api-status"),
        "avatars": reverse("api-avatars"),
        "login": reverse("login"),
    }
    html = response.content.decode()
    assert "Generate avatar · 2 credits" in html
    assert "csrftoken" in response.cookies
    assert 'src="/static/web/app.js"' in html


def test_wrong_password_shows_an_error(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "nope"})

    assert response.status_code == 200
    assert "didn't match" in response.content.decode()


def test_sign_out_is_a_post_and_returns_to_sign_in(client, alice):
    client.force_login(alice)

    response = client.post(reverse("logout"))

    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert client.get("/").status_code == 302


def test_api_accepts_the_page_session_only_with_a_csrf_token(alice):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    page = client.get("/")
    token = page.cookies["csrftoken"].value

    refused = client.post(reverse("api-avatars"), {}, content_type="application/json")
    accepted = client.post(
        reverse("api-avatars"), {}, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )

    assert refused.status_code == 403
    assert accepted.status_code == 400  # past CSRF: now the body is checked


def test_static_files_of_the_page_are_found():
    from django.contrib.staticfiles import finders

    assert finders.find("web/app.js")
    assert finders.find("web/app.css")
