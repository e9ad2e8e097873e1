"""Hostile input at every door: uploads, webhooks, output URLs and the ledger in admin.

Each scenario goes through the real endpoint (or the real pipeline: PostgreSQL, Redis, a
worker and the simulator) and checks that the input is refused with a stable code and that
nothing moved: no row, no file, no credit, no request to an internal address.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import IntegrityError, models, transaction
from django.test import Client
from PIL import Image, ImageFile

from avatars import storage
from avatars.models import Avatar, SelfieSession, WebhookDelivery
from credits import services as credit_services
from credits.models import Compensation, LedgerEntry
from tests.avatars.selfie_corpus import BOMB_FILES, CorpusFile, corpus_id
from tests.avatars.test_pipeline import ledger_for, submit, wait_until_finished
from tests.avatars.test_sessions_api import _stored_files, _upload
from tests.avatars.test_webhooks import (
    WEBHOOK_PATH,
    _finished_prediction,
    post_webhook,
    signed_headers,
    wait_until_applied,
)
from tests.reliability.tally import assert_invariants

pytestmark = pytest.mark.django_db(transaction=True)

MB = 1024 * 1024


@pytest.fixture
def funded_alice(alice):
    credit_services.grant_credits(user=alice, amount=5)
    return alice


class _Summary:
    """Figures of a parametrized group, reported as one line once every case has run."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, dict]] = {}

    def add(self, report, group: str, case: str, size: int, line: Callable[[dict], str], **kw):
        cases = self.seen.setdefault(group, {})
        cases[case] = kw
        if len(cases) == size:
            report(line(cases))


SUMMARY = _Summary()


# --- 1. Uploads: decompression bombs -------------------------------------------------------


@pytest.fixture
def pixel_decodes(monkeypatch) -> list[str]:
    """Every image whose pixels get decoded; the decode itself is refused.

    Like `no_pixel_decoding` in tests/avatars/test_selfies.py, but it also records: the upload
    path turns any exception from `load()` into a "corrupt" refusal, which would hide it.
    """
    decoded: list[str] = []

    def forbidden(self: ImageFile.ImageFile) -> None:
        decoded.append(f"{self.format} {self.size}")
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)
    return decoded


@pytest.mark.parametrize("make", BOMB_FILES, ids=corpus_id)
def test_a_decompression_bomb_is_refused_from_its_header_and_nothing_is_stored(
    alice, alice_client, settings, monkeypatch, pixel_decodes, make, report
):
    # The existing corpus (BAD_FILES) already goes through this endpoint in
    # tests/avatars/test_sessions_api.py::test_a_bad_file_is_refused_and_nothing_is_stored.
    credit_services.grant_credits(user=alice, amount=3)
    ledger_before = list(LedgerEntry.objects.order_by("pk").values())
    bomb: CorpusFile = make()
    with monkeypatch.context() as patched:  # Pillow reads only the header here
        patched.setattr(Image, "MAX_IMAGE_PIXELS", None)
        with Image.open(io.BytesIO(bomb.data)) as probe:
            pass
    assert probe.width * probe.height > settings.SELFIE_MAX_PIXELS, "not a bomb"
    assert len(bomb.data) < 300 * 1024 < settings.SELFIE_MAX_BYTES, "small, so not too_large"

    tracemalloc.start()
    started = time.monotonic()
    try:
        response = _upload(alice_client, bomb)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert pixel_decodes == []
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["fields"]["reason"]) == ("invalid_selfie", bomb.expected_reason)
    assert elapsed < 5.0, f"{elapsed:.2f} s"  # header-only work: well under a second
    # Python-side allocations (the upload, parsing): a decoded bomb needs hundreds of MB.
    assert peak < 32 * MB, f"{peak / MB:.1f} MB"
    assert not SelfieSession.objects.exists()
    assert _stored_files(settings) == []
    assert credit_services.get_balance(user=alice) == 3
    assert list(LedgerEntry.objects.order_by("pk").values()) == ledger_before
    assert_invariants()
    SUMMARY.add(
        report,
        "bombs",
        make.__name__,
        len(BOMB_FILES),
        lambda cases: (
            f"uploads: {len(cases)} decompression bombs ({', '.join(cases)}) refused, "
            f"none decoded, nothing stored, no credit moved; slowest "
            f"{max(c['ms'] for c in cases.values()):.0f} ms, traced peak "
            f"{max(c['peak'] for c in cases.values()) / MB:.1f} MB"
        ),
        ms=elapsed * 1000,
        peak=peak,
    )


# --- 2. Webhooks -----------------------------------------------------------------------------

ID, TIMESTAMP, SIGNATURE = "HTTP_WEBHOOK_ID", "HTTP_WEBHOOK_TIMESTAMP", "HTTP_WEBHOOK_SIGNATURE"
OTHER_SECRET = "whsec_" + base64.b64encode(b"A" * 32).decode()

Signer = Callable[..., dict]


def _without(name: str) -> Callable[[Signer, bytes], tuple[dict, bytes]]:
    def forge(signed: Signer, body: bytes) -> tuple[dict, bytes]:
        return {k: v for k, v in signed(body).items() if k != name}, body

    return forge


def _signature_with_one_byte_changed(signed: Signer, body: bytes) -> tuple[dict, bytes]:
    headers = signed(body)
    version, mac = headers[SIGNATURE].split(",", 1)
    digest = bytearray(base64.b64decode(mac))
    digest[len(digest) // 2] ^= 0x01
    return {**headers, SIGNATURE: f"{version},{base64.b64encode(digest).decode()}"}, body


def _body_with_one_byte_changed(signed: Signer, body: bytes) -> tuple[dict, bytes]:
    # Still valid JSON, still a moderation failure (the classifier ignores case): only the
    # signature can tell.
    changed = body.replace(b"safety", b"Safety", 1)
    assert len(changed) == len(body)
    assert sum(a != b for a, b in zip(body, changed, strict=True)) == 1
    return signed(body), changed


def _timestamp_moved_by_a_second(signed: Signer, body: bytes) -> tuple[dict, bytes]:
    headers = signed(body)
    return {**headers, TIMESTAMP: str(int(headers[TIMESTAMP]) - 1)}, body


def _id_changed(signed: Signer, body: bytes) -> tuple[dict, bytes]:
    # A new id would dodge de-duplication; the signature covers it.
    headers = signed(body)
    return {**headers, ID: headers[ID] + "x"}, body


FORGERIES = [
    pytest.param(lambda s, b: ({**s(b), SIGNATURE: "v1,AAAA"}, b), id="bad-signature"),
    pytest.param(_signature_with_one_byte_changed, id="signature-one-byte-changed"),
    pytest.param(_body_with_one_byte_changed, id="body-one-byte-changed"),
    pytest.param(lambda s, b: (signed_headers(OTHER_SECRET, b), b), id="another-secret"),
    pytest.param(lambda s, b: (s(b, age=600), b), id="timestamp-10-minutes-old"),
    pytest.param(lambda s, b: (s(b, age=-600), b), id="timestamp-10-minutes-ahead"),
    pytest.param(_timestamp_moved_by_a_second, id="timestamp-changed"),
    pytest.param(_id_changed, id="id-changed"),
    pytest.param(_without(ID), id="no-webhook-id"),
    pytest.param(_without(TIMESTAMP), id="no-webhook-timestamp"),
    pytest.param(_without(SIGNATURE), id="no-webhook-signature"),
    pytest.param(lambda s, b: ({}, b), id="unsigned"),
]


def post_webhook_body(payload: dict) -> bytes:
    """The bytes `post_webhook` sends for `payload`."""
    return json.dumps(payload).encode()


def _post_body(avatar_id: str, body: bytes, headers: dict):
    return Client().post(
        f"{WEBHOOK_PATH}?avatar={avatar_id}", body, content_type="application/json", **headers
    )


@pytest.mark.parametrize("forge", FORGERIES)
def test_a_forged_webhook_gets_401_and_changes_nothing(
    pipeline, funded_alice, alice_client, settings, forge, request, report
):
    avatar_id, payload = _finished_prediction(pipeline, alice_client, settings)
    body = post_webhook_body(payload)

    def signed(content: bytes, age: int = 0) -> dict:
        return signed_headers(pipeline.webhook_secret, content, age=age)

    headers, sent = forge(signed, body)
    response = _post_body(avatar_id, sent, headers)

    assert response.status_code == 401, response.content
    assert response.json()["error"]["code"] == "invalid_signature"
    avatar = Avatar.objects.get(pk=avatar_id)
    assert (avatar.status, avatar.error_code) == ("running", "")
    assert ledger_for(avatar_id) == [("spend", -1)]
    assert credit_services.get_balance(user=funded_alice) == 4
    assert not WebhookDelivery.objects.exists()
    # The same payload, correctly signed, would have ended it: the refusal is what held.
    assert payload["status"] == "failed"
    assert_invariants()
    case = request.node.callspec.id
    SUMMARY.add(
        report,
        "webhooks",
        case,
        len(FORGERIES),
        lambda cases: (
            f"webhooks: {len(cases)} forged deliveries ({', '.join(cases)}) got 401 "
            "invalid_signature; no transition, no refund, nothing recorded"
        ),
    )


def test_a_replayed_webhook_id_is_a_duplicate_and_makes_no_second_transition(
    pipeline, funded_alice, alice_client, settings, report
):
    avatar_id, payload = _finished_prediction(pipeline, alice_client, settings)
    body = post_webhook_body(payload)
    message_id = "msg_replayed"
    # Given a delivery signed two minutes ago (still inside the five-minute window)...
    first_headers = signed_headers(pipeline.webhook_secret, body, message_id=message_id, age=120)
    first = post_webhook(avatar_id, payload, first_headers)
    assert (first.status_code, first.json()) == (200, {"status": "ok"})
    done = wait_until_applied(avatar_id)
    assert (done.status, done.error_code) == ("failed", "content_policy")
    completed_at = done.completed_at

    # ...when the very same request comes again, and again signed afresh with the same id
    # (as Replicate's retries are):
    replay = post_webhook(avatar_id, payload, first_headers)
    resent = post_webhook(
        avatar_id, payload, signed_headers(pipeline.webhook_secret, body, message_id=message_id)
    )

    assert (replay.status_code, replay.json()) == (200, {"status": "duplicate"})
    assert (resent.status_code, resent.json()) == (200, {"status": "duplicate"})
    avatar = Avatar.objects.get(pk=avatar_id)
    assert (avatar.status, avatar.completed_at) == ("failed", completed_at)
    assert ledger_for(avatar_id) == [("spend", -1), ("refund", 1)]
    assert Compensation.objects.filter(reference=f"avatar:{avatar_id}").count() == 1
    assert credit_services.get_balance(user=funded_alice) == 5
    assert list(WebhookDelivery.objects.values_list("webhook_id", flat=True)) == [message_id]
    assert_invariants()
    report(
        "webhooks: a replayed webhook-id (same bytes, then re-signed later) answered "
        "duplicate twice; one transition, one refund"
    )


def test_a_reused_webhook_id_is_a_duplicate_even_with_another_body(
    pipeline, funded_alice, alice_client, settings
):
    # De-duplication, not only "terminal states never change", holds the line: the first
    # delivery under this id changed nothing, and the second (which would end the avatar) is
    # still a duplicate.
    avatar_id, payload = _finished_prediction(pipeline, alice_client, settings)
    still_running = {**payload, "status": "processing", "error": None, "completed_at": None}
    message_id = "msg_reused"

    first = post_webhook(
        avatar_id,
        still_running,
        signed_headers(
            pipeline.webhook_secret, post_webhook_body(still_running), message_id=message_id
        ),
    )
    second = post_webhook(
        avatar_id,
        payload,
        signed_headers(pipeline.webhook_secret, post_webhook_body(payload), message_id=message_id),
    )

    assert first.json() == {"status": "ignored"}  # nothing to hand on: it is still running
    assert (second.status_code, second.json()) == (200, {"status": "duplicate"})
    assert Avatar.objects.get(pk=avatar_id).status == "running"
    assert ledger_for(avatar_id) == [("spend", -1)]
    assert_invariants()


# --- 3. Output URLs through the pipeline -------------------------------------------------------


def _png_1024() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1024, 1024), (40, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


class LocalServer:
    """A tiny HTTP server on 127.0.0.1 (free port) that records every request it gets."""

    def __init__(self, answer: Callable[[str], tuple[int, dict[str, str], bytes]]):
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                server.requests.append(self.path)
                status, headers, body = answer(self.path)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@dataclass
class Network:
    """An internal target that would serve a perfect avatar, and redirectors on 127.0.0.1."""

    target: LocalServer
    redirectors: list[LocalServer] = field(default_factory=list)

    def redirect_to(self, location: str) -> str:
        server = LocalServer(lambda path: (302, {"Location": location}, b""))
        self.redirectors.append(server)
        return f"http://127.0.0.1:{server.port}/delivery/output.png"


@pytest.fixture
def network() -> Iterator[Network]:
    png = _png_1024()
    net = Network(LocalServer(lambda path: (200, {"Content-Type": "image/png"}, png)))
    yield net
    for server in [net.target, *net.redirectors]:
        server.close()


@pytest.fixture
def downloads(monkeypatch) -> Iterator[list[str]]:
    """Every URL the worker's download client really sends a request to."""
    sent: list[str] = []
    client = httpx.Client(
        timeout=storage.DOWNLOAD_TIMEOUT,
        follow_redirects=False,
        event_hooks={"request": [lambda request: sent.append(str(request.url))]},
    )
    monkeypatch.setattr(storage, "_http_client", lambda private_addresses: client)
    yield sent
    client.close()


METADATA = "http://169.254.169.254/latest/meta-data/"


@dataclass(frozen=True)
class OutputCase:
    """`output(net)`: the URL the prediction returns; `internal(net)`: where it must not go."""

    output: Callable[[Network], str]
    internal: Callable[[Network], str]
    allow_http: bool = True


OUTPUT_CASES = {
    "metadata": OutputCase(lambda n: METADATA, lambda n: METADATA),
    "localhost": OutputCase(
        lambda n: f"http://localhost:{n.target.port}/x.png",
        lambda n: f"http://localhost:{n.target.port}/x.png",
    ),
    "http-to-allowed-host-when-https-only": OutputCase(
        lambda n: f"http://127.0.0.1:{n.target.port}/x.png",
        lambda n: f"http://127.0.0.1:{n.target.port}/x.png",
        allow_http=False,
    ),
    "redirect-to-metadata": OutputCase(
        lambda n: n.redirect_to(METADATA + "iam/security-credentials/"),
        lambda n: METADATA + "iam/security-credentials/",
    ),
    "redirect-to-localhost": OutputCase(
        lambda n: n.redirect_to(f"http://localhost:{n.target.port}/x.png"),
        lambda n: f"http://localhost:{n.target.port}/x.png",
    ),
    "redirect-to-mapped-ipv6-loopback": OutputCase(
        lambda n: n.redirect_to(f"http://[::ffff:127.0.0.1]:{n.target.port}/x.png"),
        lambda n: f"http://[::ffff:127.0.0.1]:{n.target.port}/x.png",
    ),
    "mapped-ipv6-loopback": OutputCase(
        lambda n: f"http://[::ffff:127.0.0.1]:{n.target.port}/x.png",
        lambda n: f"http://[::ffff:127.0.0.1]:{n.target.port}/x.png",
    ),
    "mapped-ipv6-metadata": OutputCase(
        lambda n: "http://[::ffff:169.254.169.254]/latest/meta-data/",
        lambda n: "http://[::ffff:169.254.169.254]/latest/meta-data/",
    ),
}


@pytest.mark.parametrize("case_id", list(OUTPUT_CASES))
def test_an_output_url_to_an_internal_address_fails_refunded_and_is_never_fetched(
    pipeline, funded_alice, alice_client, settings, network, downloads, case_id, report
):
    case = OUTPUT_CASES[case_id]
    settings.AVATAR_OUTPUT_ALLOW_HTTP = case.allow_http
    internal = case.internal(network)
    if "169.254" not in internal:
        # The target answers at that address (with a perfect avatar, even), so only the guard
        # can explain it seeing no request from the worker.
        assert httpx.get(internal, timeout=5).status_code == 200
        assert len(network.target.requests) == 1
        network.target.requests.clear()
    output_url = case.output(network)
    pipeline.empty_output(output=[output_url])

    done = wait_until_finished(alice_client, submit(alice_client)["id"])

    assert (done["status"], done["error"]["code"]) == ("failed", "output_unavailable"), done
    assert done["refund"] == {"status": "refunded", "amount": 1}
    assert ledger_for(done["id"]) == [("spend", -1), ("refund", 1)]
    assert Compensation.objects.filter(reference=f"avatar:{done['id']}").count() == 1
    assert credit_services.get_balance(user=funded_alice) == 5
    assert network.target.requests == []
    # Only the allowed first hop of a redirect was ever requested, once.
    redirects = [f"http://127.0.0.1:{r.port}/delivery/output.png" for r in network.redirectors]
    assert downloads == redirects
    assert [len(r.requests) for r in network.redirectors] == [1] * len(redirects)
    avatar = Avatar.objects.get(pk=done["id"])
    assert not avatar.image
    assert avatar.predictions.get().output_url == output_url
    assert not (settings.MEDIA_ROOT / "avatars").exists() or not any(
        (settings.MEDIA_ROOT / "avatars").iterdir()
    )
    assert_invariants()
    SUMMARY.add(
        report,
        "outputs",
        case_id,
        len(OUTPUT_CASES),
        lambda cases: (
            f"output URLs: {len(cases)} internal targets ({', '.join(cases)}) failed "
            "output_unavailable, refunded once each, never fetched, nothing stored"
        ),
    )


# --- 4. The ledger in admin and in the database ------------------------------------------------

LEDGER = "/admin/credits/ledgerentry/"


@pytest.fixture
def ledger(alice) -> list[LedgerEntry]:
    """A grant, a spend and its refund (for no avatar: credits knows nothing of them)."""
    credit_services.grant_credits(user=alice, amount=3, memo="welcome")
    credit_services.spend_credits(user=alice, amount=1, reference="order:abc")
    credit_services.compensate(
        reference="order:abc", reason="generation_failed", source="automatic", approve=True
    )
    return list(LedgerEntry.objects.order_by("pk"))


def _snapshot() -> list[dict]:
    return list(LedgerEntry.objects.order_by("pk").values())


def test_a_superuser_can_not_edit_or_delete_ledger_entries_in_admin(
    alice, ledger, admin_client, report
):
    before = _snapshot()
    assert [e.kind for e in ledger] == ["grant", "spend", "refund"]
    entry = ledger[0]
    form = {
        "account": entry.account_id,
        "kind": "grant",
        "amount": "99",
        "balance_after": "99",
        "reference": "",
        "memo": "edited",
        "_save": "Save",
    }

    page = admin_client.get(f"{LEDGER}{entry.pk}/change/")
    change = admin_client.post(f"{LEDGER}{entry.pk}/change/", form)
    delete_page = admin_client.get(f"{LEDGER}{entry.pk}/delete/")
    delete = admin_client.post(f"{LEDGER}{entry.pk}/delete/", {"post": "yes"})
    add = admin_client.post(f"{LEDGER}add/", form)
    changelist = admin_client.get(LEDGER)
    bulk = admin_client.post(
        LEDGER,
        {"action": "delete_selected", ACTION_CHECKBOX_NAME: [e.pk for e in ledger], "post": "yes"},
    )

    # The change page is a read-only view: no form fields, no save, no delete link.
    assert page.status_code == 200
    content = page.content.decode()
    assert 'name="_save"' not in content and 'name="amount"' not in content
    assert f"{LEDGER}{entry.pk}/delete/" not in content
    assert [change.status_code, delete_page.status_code, delete.status_code] == [403, 403, 403]
    assert add.status_code == 403
    # The bulk delete is not offered, and asking for it anyway does nothing.
    assert changelist.status_code == 200
    assert 'value="delete_selected"' not in changelist.content.decode()
    # (With no action available, Django just shows the list again.)
    assert bulk.status_code in (200, 302, 403), bulk.status_code
    assert b"Are you sure" not in bulk.content
    assert _snapshot() == before
    assert credit_services.get_balance(user=alice) == 3
    assert_invariants()
    report(
        "admin: ledger change/delete/add/bulk-delete as superuser refused (403 or not offered); "
        f"{len(before)} entries unchanged"
    )


def test_the_database_refuses_ledger_changes_that_skip_the_models_guards(alice, ledger, report):
    # LedgerEntry.save/delete and its queryset raise AppendOnlyError in Python; these ORM
    # paths skip them, so only the trigger stands in the way. (Raw SQL: tests/credits.)
    before = _snapshot()
    grant = ledger[0]
    plain = models.QuerySet(model=LedgerEntry)
    grant.amount = 100
    attempts = {
        "base manager update": lambda: LedgerEntry._base_manager.filter(pk=grant.pk).update(
            amount=100
        ),
        "base manager bulk_update": lambda: LedgerEntry._base_manager.bulk_update(
            [grant], ["amount"]
        ),
        "Model.save": lambda: models.Model.save(grant),
        "plain QuerySet update": lambda: plain.filter(pk=grant.pk).update(memo="edited"),
        "plain QuerySet delete": lambda: plain.filter(pk=grant.pk).delete(),
        "Model.delete": lambda: models.Model.delete(grant),
    }

    for name, attempt in attempts.items():
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            attempt()
            pytest.fail(f"{name} was allowed")

    assert _snapshot() == before
    assert_invariants()
    report(f"database: {len(attempts)} ORM changes that skip the model's guards refused")
