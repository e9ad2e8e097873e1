"""Standard Webhooks signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac

from replicate.webhook import Webhooks, WebhookSigningSecret

from replicate_simulator.signing import new_webhook_secret, sign


def test_signature_is_hmac_sha256_of_id_timestamp_body_with_the_decoded_secret():
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()

    signature = sign(secret, "msg_1", 1700000000, b'{"id":"p"}')

    expected = hmac.new(
        b"0123456789abcdef0123456789abcdef", b'msg_1.1700000000.{"id":"p"}', hashlib.sha256
    ).digest()
    assert signature == "v1," + base64.b64encode(expected).decode()


def test_the_official_client_accepts_the_signature():
    secret = new_webhook_secret()
    headers = {
        "webhook-id": "msg_2",
        "webhook-timestamp": "1700000000",
        "webhook-signature": sign(secret, "msg_2", 1700000000, b"{}"),
    }

    Webhooks.validate(headers=headers, body="{}", secret=WebhookSigningSecret(key=secret))
