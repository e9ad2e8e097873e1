"""`GET /v1/models/{owner}/{name}`: each model's Cog-style schema, and creates checked by it."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from replicate_simulator.control import SimulatorControlError
from replicate_simulator.schema import MODELS
from tests.simulator.helpers import api, create, model_input

MODEL_FIELDS = {
    "url",
    "owner",
    "name",
    "description",
    "visibility",
    "github_url",
    "paper_url",
    "license_url",
    "run_count",
    "cover_image_url",
    "default_example",
    "latest_version",
}


def get_model(sim, model: str):
    with api(sim) as http:
        return http.get(f"/v1/models/{model}")


def served_schema(sim, model: str) -> dict:
    response = get_model(sim, model)
    assert response.status_code == 200, response.text
    return response.json()["latest_version"]["openapi_schema"]


def input_errors(document: dict, payload: dict) -> list[str]:
    """What jsonschema finds wrong with `payload` by the served document's Input schema."""
    validator = Draft202012Validator({**document, "$ref": "#/components/schemas/Input"})
    return sorted(error.message for error in validator.iter_errors(payload))


@pytest.mark.parametrize("model", sorted(MODELS))
def test_each_model_is_served_with_its_latest_versions_openapi_schema(replicate_simulator, model):
    response = get_model(replicate_simulator, model)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == MODEL_FIELDS
    owner, name = model.split("/")
    assert (body["owner"], body["name"], body["url"]) == (
        owner,
        name,
        f"https://replicate.com/{model}",
    )
    version = body["latest_version"]
    assert set(version) == {"id", "created_at", "cog_version", "openapi_schema"}
    assert version["id"] == replicate_simulator.version_id(model)
    document = version["openapi_schema"]
    assert document["openapi"] == "3.0.2"
    schemas = document["components"]["schemas"]
    spec = MODELS[model]
    assert schemas["Input"]["required"] == list(spec.required)
    assert list(schemas["Input"]["properties"]) == [prop.name for prop in spec.properties]


def test_enums_are_referenced_the_way_cog_writes_them(replicate_simulator):
    schemas = served_schema(replicate_simulator, "openai/gpt-image-2")["components"]["schemas"]

    assert schemas["Input"]["properties"]["background"] == {
        "allOf": [{"$ref": "#/components/schemas/background"}],
        "default": "auto",
        "x-order": 6,
    }
    assert schemas["background"] == {
        "title": "background",
        "description": "An enumeration.",
        "enum": ["auto", "opaque"],
        "type": "string",
    }
    assert "input_fidelity" not in schemas["Input"]["properties"]


def test_an_unknown_model_is_a_404_problem(replicate_simulator):
    response = get_model(replicate_simulator, "openai/dall-e-9")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "The requested model could not be found."


def test_the_official_client_reads_the_model(client):
    model = client.models.get("openai/gpt-image-1")

    assert model.owner == "openai"
    assert "Input" in model.latest_version.openapi_schema["components"]["schemas"]


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize(
    "changes",
    [{}, {"quality": "ultra"}, {"number_of_images": 0}, {"size": "1024x1024"}],
    ids=["valid", "enum", "range", "unknown"],
)
def test_creates_are_refused_exactly_when_the_served_schema_says(
    replicate_simulator, model, changes
):
    payload = model_input(**changes)
    document = served_schema(replicate_simulator, model)

    response = create(replicate_simulator, model, input=payload)

    unknown = set(payload) - set(document["components"]["schemas"]["Input"]["properties"])
    fits = not input_errors(document, payload) and not unknown
    assert response.status_code == (201 if fits else 422), response.text


def test_a_changed_schema_is_served_and_enforced_until_restored(replicate_simulator):
    sim = replicate_simulator
    changed = sim.change_model_schema(
        "openai/gpt-image-1",
        drop=["input_fidelity"],
        properties={"quality": {"enum": ["standard", "hd"]}, "style": {"type": "string"}},
        require=["style"],
    )

    schemas = served_schema(sim, "openai/gpt-image-1")["components"]["schemas"]
    assert schemas["Input"] == changed["input"]
    assert "input_fidelity" not in schemas["Input"]["properties"]
    assert schemas["quality"]["enum"] == ["standard", "hd"]
    assert schemas["Input"]["required"] == ["prompt", "openai_api_key", "style"]
    refused = create(sim, input=model_input(input_fidelity="high", quality="high"))
    assert refused.status_code == 422
    assert [(f["type"], f["field"]) for f in refused.json()["invalid_fields"]] == [
        ("required", "input"),
        ("enum", "input.quality"),
        ("additional_property_not_allowed", "input"),
    ]
    assert create(sim, input=model_input(quality="hd", style="comic")).status_code == 201
    assert create(sim, "openai/gpt-image-1-mini").status_code == 201, "other models unchanged"
    assert [m["schema_changed"] for m in sim.models()] == [True, False, False, False]

    sim.restore_model_schema("openai/gpt-image-1")

    assert (
        "input_fidelity"
        in served_schema(sim, "openai/gpt-image-1")["components"]["schemas"]["Input"]["properties"]
    )
    assert create(sim, input=model_input(input_fidelity="high")).status_code == 201


def test_a_reset_restores_every_schema(replicate_simulator):
    replicate_simulator.change_model_schema("openai/gpt-image-2", drop=["user_id"])

    replicate_simulator.reset()

    assert not any(m["schema_changed"] for m in replicate_simulator.models())
    input_schema = served_schema(replicate_simulator, "openai/gpt-image-2")["components"]
    assert "user_id" in input_schema["schemas"]["Input"]["properties"]


def test_creates_by_version_are_checked_by_the_changed_schema(replicate_simulator):
    sim = replicate_simulator
    sim.change_model_schema("openai/gpt-image-1", drop=["moderation"])

    with api(sim) as http:
        response = http.post(
            "/v1/predictions",
            json={"version": sim.version_id(), "input": model_input(moderation="low")},
        )

    assert response.status_code == 422
    assert response.json()["invalid_fields"][0]["type"] == "additional_property_not_allowed"


@pytest.mark.parametrize(
    ("model", "changes", "status"),
    [
        ("openai/gpt-image-1", {"drop": ["no_such_input"]}, 400),
        ("openai/gpt-image-1", {"properties": {"seed": {}}}, 400),
        ("openai/gpt-image-1", {"properties": {"seed": {"type": "object"}}}, 400),
        ("openai/gpt-image-1", {"properties": {"quality": {"colour": "red"}}}, 400),
        ("openai/gpt-image-1", {"require": ["seed"]}, 400),
        ("openai/dall-e-9", {}, 404),
    ],
)
def test_a_schema_change_that_can_not_apply_is_refused(replicate_simulator, model, changes, status):
    with pytest.raises(SimulatorControlError) as refused:
        replicate_simulator.change_model_schema(model, **changes)

    assert refused.value.status == status
    assert not any(m["schema_changed"] for m in replicate_simulator.models())


def test_request_scenarios_can_target_the_model_endpoint(replicate_simulator):
    replicate_simulator.http_errors(503, on="model_get")

    assert get_model(replicate_simulator, "openai/gpt-image-1").status_code == 503
    assert get_model(replicate_simulator, "openai/gpt-image-1").status_code == 200
    assert [e["endpoint"] for e in replicate_simulator.requests()] == ["model_get"] * 2
