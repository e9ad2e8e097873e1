from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.simulator.webhook_receiver import WebhookReceiver

SELFIE = Path(__file__).resolve().parents[1] / "fixtures" / "selfie-astronaut.jpg"


@pytest.fixture
def selfie_path() -> Path:
    return SELFIE


@pytest.fixture
def selfie_bytes() -> bytes:
    return SELFIE.read_bytes()


@pytest.fixture
def client(replicate_simulator):
    """The official client, polling quickly so tests stay short."""
    return replicate_simulator.replicate_client(poll_interval=0.02)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()
