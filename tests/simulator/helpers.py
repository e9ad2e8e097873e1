"""Small helpers shared by the simulator tests (raw HTTP next to the official client)."""

from __future__ import annotations

from typing import Any

import httpx

from replicate_simulator.testing import SimulatorHandle

MODEL = "openai/gpt-image-1"


def model_input(**extra: Any) -> dict[str, Any]:
    return {"prompt": "a comic portrait", "openai_api_key": "sk-test-secret", **extra}


def api(sim: SimulatorHandle, **kwargs: Any) -> httpx.Client:
    """A plain httpx client with the simulator's token (no replicate retry transport)."""
    headers = {"Authorization": f"Bearer {sim.token}", **kwargs.pop("headers", {})}
    kwargs.setdefault("timeout", 10)
    return httpx.Client(base_url=sim.base_url, headers=headers, **kwargs)


def create(sim: SimulatorHandle, model: str = MODEL, **body: Any) -> httpx.Response:
    body.setdefault("input", model_input())
    with api(sim) as http:
        return http.post(f"/v1/models/{model}/predictions", json=body)


def get(sim: SimulatorHandle, prediction_id: str) -> dict[str, Any]:
    with api(sim) as http:
        response = http.get(f"/v1/predictions/{prediction_id}")
        response.raise_for_status()
        return response.json()


def wait_status(sim: SimulatorHandle, prediction_id: str, *statuses: str, timeout: float = 5.0):
    """Poll until the prediction has one of ``statuses``; returns its JSON."""
    return sim.wait_for(
        lambda: (p := get(sim, prediction_id))["status"] in statuses and p,
        timeout=timeout,
        message=f"{prediction_id} to become {'/'.join(statuses)}",
    )
