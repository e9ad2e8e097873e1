"""Creates beyond the configured rate answer 429 with Replicate's body and Retry-After."""

from __future__ import annotations

from tests.simulator.helpers import api, create


def test_creates_beyond_the_limit_are_throttled(replicate_simulator):
    replicate_simulator.configure(rate_limit=3, rate_limit_window=60)

    statuses = [create(replicate_simulator).status_code for _ in range(3)]
    throttled = create(replicate_simulator)

    assert statuses == [201, 201, 201]
    assert throttled.status_code == 429
    wait = int(throttled.headers["retry-after"])
    assert 59 <= wait <= 60
    assert throttled.json() == {
        "title": "Request was throttled",
        "detail": f"Request was throttled. Expected available in {wait} seconds.",
        "status": 429,
    }
    assert len(replicate_simulator.predictions()) == 3


def test_reads_are_not_limited(replicate_simulator):
    replicate_simulator.configure(rate_limit=1)
    created = create(replicate_simulator).json()

    with api(replicate_simulator) as http:
        statuses = {http.get(f"/v1/predictions/{created['id']}").status_code for _ in range(5)}

    assert statuses == {200}


def test_the_window_slides(replicate_simulator):
    replicate_simulator.configure(rate_limit=2, rate_limit_window=0.5)
    assert [create(replicate_simulator).status_code for _ in range(3)] == [201, 201, 429]

    replicate_simulator.wait_for(
        lambda: create(replicate_simulator).status_code == 201, message="a free slot"
    )
