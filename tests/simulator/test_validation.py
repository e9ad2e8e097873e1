"""Input validation as Replicate reports it for the gpt-image-1 family (422 invalid_fields)."""

from __future__ import annotations

import pytest

from replicate_simulator.schema import MODELS, validate_input, validate_request_body
from tests.simulator.helpers import api, create, model_input


def _fields(errors):
    return [(e.type, e.field, e.description) for e in errors]


@pytest.mark.parametrize("model", ["openai/gpt-image-1", "openai/gpt-image-1-mini"])
def test_prompt_and_openai_key_are_required(model):
    assert _fields(validate_input(MODELS[model], {})) == [
        ("required", "input", "prompt is required"),
        ("required", "input", "openai_api_key is required"),
    ]


def test_openai_key_is_optional_for_gpt_image_1_5():
    spec = MODELS["openai/gpt-image-1.5"]

    assert validate_input(spec, {"prompt": "x"}) == []
    assert _fields(validate_input(spec, {})) == [("required", "input", "prompt is required")]


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("aspect_ratio", "16:9", '"1:1", "3:2", "2:3"'),
        ("input_fidelity", "max", '"low", "high"'),
        ("quality", "ultra", '"low", "medium", "high", "auto"'),
        ("background", "green", '"auto", "transparent", "opaque"'),
        ("output_format", "gif", '"png", "jpeg", "webp"'),
        ("moderation", "off", '"auto", "low"'),
    ],
)
def test_enums(name, value, allowed):
    errors = validate_input(MODELS["openai/gpt-image-1"], model_input(**{name: value}))

    assert _fields(errors) == [
        ("enum", f"input.{name}", f"{name} must be one of the following: {allowed}")
    ]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("number_of_images", 0, ("number_gte", "Must be greater than or equal to 1")),
        ("number_of_images", 11, ("number_lte", "Must be less than or equal to 10")),
        ("output_compression", -1, ("number_gte", "Must be greater than or equal to 0")),
        ("output_compression", 101, ("number_lte", "Must be less than or equal to 100")),
        (
            "number_of_images",
            1.5,
            ("invalid_type", "Invalid type. Expected: integer, given: number"),
        ),
        (
            "number_of_images",
            "2",
            ("invalid_type", "Invalid type. Expected: integer, given: string"),
        ),
    ],
)
def test_ranges_and_types(name, value, expected):
    errors = validate_input(MODELS["openai/gpt-image-1"], model_input(**{name: value}))

    assert _fields(errors) == [(expected[0], f"input.{name}", expected[1])]


def test_whole_floats_count_as_integers():
    assert validate_input(MODELS["openai/gpt-image-1"], model_input(number_of_images=2.0)) == []


def test_input_images_must_be_a_list_of_uris():
    spec = MODELS["openai/gpt-image-1"]

    assert _fields(validate_input(spec, model_input(input_images="https://x/a.png"))) == [
        ("invalid_type", "input.input_images", "Invalid type. Expected: array, given: string")
    ]
    assert _fields(validate_input(spec, model_input(input_images=["not a uri", 3]))) == [
        ("format", "input.input_images.0", "Does not match format 'uri'"),
        ("invalid_type", "input.input_images.1", "Invalid type. Expected: string, given: integer"),
    ]
    assert validate_input(spec, model_input(input_images=["data:image/png;base64,AAAA"])) == []


def test_unknown_input_fields_are_rejected():
    errors = validate_input(MODELS["openai/gpt-image-1"], model_input(size="1024x1024"))

    assert _fields(errors) == [
        ("additional_property_not_allowed", "input", "Additional property size is not allowed")
    ]


def test_request_body_top_level_checks():
    errors = validate_request_body(
        {"input": {}, "webhook": "not a url", "webhook_events_filter": ["done"], "model": "x"},
        needs_version=True,
    )

    assert _fields(errors) == [
        ("required", "", "version is required"),
        ("format", "webhook", "Does not match format 'uri'"),
        (
            "enum",
            "webhook_events_filter.0",
            'webhook_events_filter.0 must be one of the following: "start", "output", "logs", '
            '"completed"',
        ),
        ("additional_property_not_allowed", "", "Additional property model is not allowed"),
    ]


def test_422_over_http_lists_every_problem(replicate_simulator):
    response = create(replicate_simulator, input={"aspect_ratio": "4:3", "extra": 1})

    assert response.status_code == 422
    body = response.json()
    assert body["title"] == "Input validation failed"
    assert body["detail"] == (
        "- input: prompt is required\n"
        "- input: openai_api_key is required\n"
        '- input.aspect_ratio: aspect_ratio must be one of the following: "1:1", "3:2", "2:3"\n'
        "- input: Additional property extra is not allowed\n"
    )
    assert [f["type"] for f in body["invalid_fields"]] == [
        "required",
        "required",
        "enum",
        "additional_property_not_allowed",
    ]
    assert replicate_simulator.predictions() == []


def test_missing_input_and_bad_json(replicate_simulator):
    with api(replicate_simulator) as http:
        no_input = http.post("/v1/models/openai/gpt-image-1/predictions", json={})
        not_json = http.post(
            "/v1/models/openai/gpt-image-1/predictions",
            content=b"{",
            headers={"content-type": "application/json"},
        )

    assert no_input.status_code == 422
    assert no_input.json()["invalid_fields"][0] == {
        "type": "required",
        "field": "",
        "description": "input is required",
    }
    assert not_json.status_code == 400


def test_unknown_version_and_unknown_model(replicate_simulator):
    with api(replicate_simulator) as http:
        bad_version = http.post("/v1/predictions", json={"version": "0" * 64, "input": {}})
        bad_model = http.post("/v1/models/acme/nope/predictions", json={"input": {}})

    assert bad_version.status_code == 422
    assert bad_version.json()["title"] == "Invalid version or not permitted"
    assert bad_model.status_code == 404


def test_gpt_image_1_5_without_a_key_runs(replicate_simulator):
    response = create(replicate_simulator, model="openai/gpt-image-1.5", input={"prompt": "x"})

    assert response.status_code == 201
    assert response.json()["model"] == "openai/gpt-image-1.5"
