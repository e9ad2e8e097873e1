"""Many clients at once against one account: the database decides, nobody is charged twice."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from avatars import generation
from avatars.models import Avatar, AvatarTransition
from credits import services as credit_services
from credits.models import Compensation, LedgerEntry
from tests.avatars.selfie_corpus import fixture_bytes
from tests.avatars.test_pipeline import ledger_for
from tests.avatars.test_recovery import make_avatar, wait_until_all_finished
from tests.avatars.test_sessions_api import CorpusFile, _upload
from tests.avatars.test_webhooks import (
    _finished_prediction,
    post_webhook,
    signed_headers,
    wait_until_applied,
)
from tests.concurrency import run_concurrently
from tests.reliability.tally import assert_invariants

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def session_and_token(pipeline, alice, alice_client, settings):
    settings.AVATAR_MAX_IN_FLIGHT_PER_USER = 100
    session = _upload(alice_client, CorpusFile("me.jpg", fixture_bytes(), None)).json()["id"]
    return session, Token.objects.get(user=alice).key


def post(token: str, body: dict, **headers):
    return Client().post(
        "/api/v1/avatars/",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {token}",
        **headers,
    )


def test_fifty_concurrent_submissions_with_ten_credits_accept_exactly_ten(alice, session_and_token):
    session, token = session_and_token
    credit_services.grant_credits(user=alice, amount=10)

    responses = run_concurrently(lambda i: post(token, {"session": session}), 50)

    codes = sorted(r.status_code for r in responses)
    assert codes == [202] * 10 + [402] * 40, codes
    assert all(
        r.json()["error"]["code"] == "insufficient_credits"
        for r in responses
        if r.status_code == 402
    )
    assert credit_services.get_balance(user=alice) == 0
    assert Avatar.objects.count() == 10
    assert LedgerEntry.objects.filter(kind="spend").count() == 10
    wait_until_all_finished(Avatar.objects.values_list("pk", flat=True))
    assert_invariants()


def test_one_idempotency_key_twenty_times_at_once_makes_one_avatar_and_one_charge(
    alice, session_and_token
):
    session, token = session_and_token
    credit_services.grant_credits(user=alice, amount=10)

    responses = run_concurrently(
        lambda i: post(token, {"session": session}, HTTP_IDEMPOTENCY_KEY="same-key"), 20
    )
    conflict = post(token, {"session": session, "style": "manga"}, HTTP_IDEMPOTENCY_KEY="same-key")

    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert conflict.status_code == 422
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    assert Avatar.objects.count() == 1
    assert credit_services.get_balance(user=alice) == 9
    assert_invariants()


def test_a_reviewer_approving_while_the_worker_refunds_refunds_once(alice, settings):
    settings.CREDITS_AUTO_REFUND_DAILY_LIMIT = 100
    credit_services.grant_credits(user=alice, amount=1)
    avatar = make_avatar(alice, status="succeeded")
    goodwill = credit_services.compensate(
        reference=avatar.credit_reference, reason="goodwill", source="staff", approve=False
    )

    def race(i: int):
        if i % 2:
            return credit_services.approve_compensation(compensation_id=goodwill.pk)
        return credit_services.compensate(reference=avatar.credit_reference, reason="timeout")

    results = run_concurrently(race, 6)

    assert not [
        r
        for r in results
        if isinstance(r, Exception) and not isinstance(r, credit_services.AlreadyDecided)
    ]
    assert Compensation.objects.get().status == "refunded"
    assert LedgerEntry.objects.filter(kind="refund").count() == 1
    assert credit_services.get_balance(user=alice) == 1
    assert_invariants()


def test_the_same_webhook_three_times_at_once_makes_one_transition_and_one_refund(
    pipeline, alice, alice_client, settings, report
):
    credit_services.grant_credits(user=alice, amount=1)
    avatar_id, payload = _finished_prediction(pipeline, alice_client, settings)
    headers = signed_headers(pipeline.webhook_secret, json.dumps(payload).encode())

    responses = run_concurrently(lambda i: post_webhook(avatar_id, payload, headers), 3)

    assert sorted(r.status_code for r in responses) == [200, 200, 200]
    assert sorted(r.json()["status"] for r in responses) == ["duplicate", "duplicate", "ok"]
    avatar = wait_until_applied(avatar_id)
    assert (avatar.status, avatar.error_code) == ("failed", "content_policy")
    assert AvatarTransition.objects.filter(avatar_id=avatar_id, to_status="failed").count() == 1
    assert ledger_for(avatar_id) == [("spend", -1), ("refund", 1)]
    assert_invariants()
    report("same webhook 3x at once: 1 applied, 2 duplicates; one transition, one refund")


def test_webhooks_racing_a_poll_make_one_transition_and_one_refund(
    pipeline, alice, alice_client, settings, report
):
    credit_services.grant_credits(user=alice, amount=1)
    avatar_id, payload = _finished_prediction(pipeline, alice_client, settings)
    seq = Avatar.objects.get(pk=avatar_id).poll_seq

    def deliver_or_poll(i: int):
        if i == 0:
            return generation.advance_generation(avatar_id, seq)  # the poll, in this thread
        body = json.dumps(payload).encode()
        return post_webhook(avatar_id, payload, signed_headers(pipeline.webhook_secret, body))

    poll, *webhooks = run_concurrently(deliver_or_poll, 4)

    assert poll is None, poll
    assert [r.status_code for r in webhooks] == [200, 200, 200]
    avatar = Avatar.objects.get(pk=avatar_id)
    assert (avatar.status, avatar.error_code) == ("failed", "content_policy")
    assert AvatarTransition.objects.filter(avatar_id=avatar_id, to_status="failed").count() == 1
    assert ledger_for(avatar_id) == [("spend", -1), ("refund", 1)]
    assert avatar.predictions.get().status == "failed"
    assert_invariants()
    report("3 webhooks racing a poll: one transition, one refund")
