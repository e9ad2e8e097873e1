"""Creates beyond the configured rate answer 429 with Replicate's body and Retry-After."""

from __future__ import annotations

import pytest

from replicate_simulator import FakeClock
from replicate_simulator.control import SimulatorControlError
from replicate_simulator.ratelimit import TokenBucket
from tests.simulator.helpers import api, create, model_input


def test_creates_beyond_the_limit_are_throttled(replicate_simulator):
    replicate_simulator.configure(rate_limit=3, rate_limit_window=60)

    statuses = [create(replicate_simulator).status_code for _ in range(3)]
    throttled = create(replicate_simulator)

    assert statuses == [201, 201, 201]
    assert throttled.status_code == 429
    wait = int(throttled.headers["retry-after"])
    # A token bucket (not a sliding window): one token comes back every 60/3 = 20 s, so the
    # wait is until the next token rather than until the first create leaves the window.
    assert 19 <= wait <= 20
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


def test_a_burst_drains_the_bucket_and_it_refills_at_the_rate(replicate_simulator):
    replicate_simulator.set_rate_limit(30, window=60, burst=20)

    with api(replicate_simulator) as http:
        url = "/v1/models/openai/gpt-image-1/predictions"
        statuses = [http.post(url, json={"input": model_input()}).status_code for _ in range(20)]
        throttled = http.post(url, json={"input": model_input()})

    assert statuses == [201] * 20
    assert throttled.status_code == 429
    # 30 per 60 s is one token every 2 s; the bucket is empty, so the next is ~2 s away.
    assert throttled.headers["retry-after"] == "2"
    assert throttled.json()["detail"] == "Request was throttled. Expected available in 2 seconds."
    assert len(replicate_simulator.predictions()) == 20
    replicate_simulator.wait_for(
        lambda: create(replicate_simulator).status_code == 201, timeout=5, message="a new token"
    )
    assert len(replicate_simulator.predictions()) == 21


def test_changing_the_limit_refills_the_bucket(replicate_simulator):
    replicate_simulator.set_rate_limit(1, window=60)
    assert [create(replicate_simulator).status_code for _ in range(2)] == [201, 429]

    settings = replicate_simulator.set_rate_limit(2, window=60, burst=3)

    assert (settings["rate_limit"], settings["rate_limit_burst"]) == (2, 3)
    assert [create(replicate_simulator).status_code for _ in range(4)] == [201, 201, 201, 429]


def test_a_throttled_create_logs_its_429(replicate_simulator):
    replicate_simulator.set_rate_limit(1)
    create(replicate_simulator)
    create(replicate_simulator)

    logged = replicate_simulator.requests(method="POST")
    assert [(e["status"], e["endpoint"]) for e in logged] == [(201, "create"), (429, "create")]


def test_a_burst_must_be_a_positive_integer(replicate_simulator):
    with pytest.raises(SimulatorControlError) as raised:
        replicate_simulator.configure(rate_limit_burst=0)
    assert raised.value.status == 400


def test_token_bucket_refills_continuously_up_to_its_capacity():
    clock = FakeClock()
    bucket = TokenBucket(clock, rate=30, window=60, capacity=20)

    assert [bucket.acquire() for _ in range(20)] == [None] * 20
    assert bucket.acquire() == 2
    clock.advance(1.5)
    assert bucket.acquire() == 1  # 0.75 of a token: 0.5 s to go, rounded up
    clock.advance(0.5)
    assert bucket.acquire() is None
    clock.advance(3600)
    assert bucket.tokens() == 20


def test_token_bucket_without_a_burst_allows_the_whole_rate_at_once():
    clock = FakeClock()
    bucket = TokenBucket(clock, rate=600, window=60)

    assert all(bucket.acquire() is None for _ in range(600))
    assert bucket.acquire() == 1  # ten tokens a second: a tenth of a second, at least 1


def test_reconfiguring_a_token_bucket_fills_it_at_the_new_capacity():
    clock = FakeClock()
    bucket = TokenBucket(clock, rate=1, window=60)
    bucket.acquire()

    bucket.configure(rate=5, window=60, capacity=2)

    assert bucket.tokens() == 2
