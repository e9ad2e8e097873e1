"""Checks the input we send against the schema Replicate publishes for our model.

A model's schema can change under us (an input dropped or renamed, an enum narrowed, a new
required input); every generation would then fail with a 422. Checked daily and at worker
start, a mismatch opens the `model_schema_changed` alert first.
"""

from __future__ import annotations

import logging

from django.conf import settings
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing.exceptions import Unresolvable

from avatars import image_models, monitoring, prompts, replicate_client
from avatars.models import Alert
from avatars.replicate_client import ReplicateCallError

logger = logging.getLogger(__name__)

ALERT = "model_schema_changed"
# Stand-ins for what a real generation sends: the real OpenAI key never enters the check, so
# it can not reach an alert or a log line however the schema describes it.
SAMPLE_IMAGE = "https://example.invalid/selfie.jpg"
KEY_PLACEHOLDER = "sk-schema-check-placeholder"
_COMPONENTS = "#/components/schemas/"


def sample_input(model: str) -> dict:
    """What a generation with `model` sends, with a stand-in selfie and key."""
    return image_models.build_model_input(
        image_models.get_model(model),
        prompt=prompts.build_prompt(prompts.DEFAULT_STYLE),
        image=SAMPLE_IMAGE,
        user_id=prompts.opaque_user_id(0),
        openai_api_key=KEY_PLACEHOLDER if settings.OPENAI_API_KEY else "",
        quality=settings.AVATAR_IMAGE_QUALITY,
    )


def find_input_problems(openapi_schema: dict, payload: dict) -> list[str]:
    """Each way `payload` breaks the document's Input schema, as "input.<path>: <message>".

    Inputs the schema does not name count too: Cog's Input schemas do not forbid them, but
    Replicate refuses them.
    """
    components = openapi_schema.get("components")
    schemas = components.get("schemas") if isinstance(components, dict) else None
    input_schema = schemas.get("Input") if isinstance(schemas, dict) else None
    if not isinstance(input_schema, dict):
        return ["input: the model publishes no Input schema"]
    used = {"Input", *_references(input_schema)} & set(schemas)
    invalid = _invalid_schemas({name: schemas[name] for name in sorted(used)})
    if invalid:
        return invalid
    # `$ref`s (Cog's enums) resolve against the whole document the Input schema sits in.
    validator = Draft202012Validator({**openapi_schema, "$ref": f"{_COMPONENTS}Input"})
    try:
        errors = list(validator.iter_errors(payload))
    except Unresolvable as exc:
        return [f"input: the published schema refers to {exc.ref}, which it does not have"]
    problems = sorted(
        f"{_path(error.absolute_path)}: {error.message}"
        for error in errors
        if error.validator != "additionalProperties"  # reported by name below
    )
    known = input_schema.get("properties") or {}
    problems += [
        f"input.{name}: we send it, the schema has no such input"
        for name in sorted(payload)
        if name not in known
    ]
    return problems


def _references(node: object) -> set[str]:
    """The component schemas `node` refers to (Cog's enums), however deep."""
    if isinstance(node, list):
        return set().union(*(_references(item) for item in node))
    if not isinstance(node, dict):
        return set()
    ref = node.get("$ref")
    found = {ref.removeprefix(_COMPONENTS)} if str(ref).startswith(_COMPONENTS) else set()
    return found.union(*(_references(value) for value in node.values()))


def _invalid_schemas(schemas: dict) -> list[str]:
    """Schemas our input is checked by that are not JSON Schema: nothing can be checked."""
    problems = []
    for name, schema in schemas.items():
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            problems.append(f"components.schemas.{name}: not a valid schema: {exc.message}")
    return problems


def _path(parts) -> str:
    return ".".join(["input", *(str(part) for part in parts)])


def check_model_schema() -> list[str]:
    """Check `REPLICATE_MODEL`'s published schema; the problems found (none: alert resolved).

    A read that fails (network, 5xx, the breaker open) decides nothing: the alert stays as it
    is and the next check tries again. A model Replicate does not know is a mismatch.
    """
    model = settings.REPLICATE_MODEL
    try:
        document = replicate_client.get_model_schema(model)
    except ReplicateCallError as exc:
        if exc.status != 404:
            logger.warning("schema of %s not checked: %s", model, exc.detail)
            return []
        problems = ["the model is not found on Replicate"]
    else:
        problems = find_input_problems(document, sample_input(model))
    if problems:
        message = f"{model}: our input no longer fits its schema:\n" + "\n".join(
            f"- {problem}" for problem in problems
        )
        monitoring.raise_alert(ALERT, Alert.Severity.CRITICAL, message)
    else:
        monitoring.clear_alert(ALERT)
    return problems
