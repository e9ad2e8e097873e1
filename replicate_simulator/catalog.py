"""The models as served now: the built-in ones, unless a test changed a schema through control.

One `ModelSpec` per model is both what `GET /v1/models/...` serves (as OpenAPI) and what a
create is validated against, so a changed schema changes both at once.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any

from .schema import MODELS, ModelSpec, Property

_TYPES = frozenset({"string", "integer", "array"})
_PROPERTY_FIELDS = frozenset({"type", "enum", "minimum", "maximum", "default", "item_format"})


class SchemaChangeError(ValueError):
    """A schema change that can not be applied (unknown property, bad field, ...)."""


class ModelCatalog:
    """Thread-safe current specs, each restorable to its built-in original."""

    def __init__(self, originals: Mapping[str, ModelSpec] = MODELS) -> None:
        self._originals = dict(originals)
        self._current = dict(originals)
        self._lock = threading.Lock()

    def get(self, name: str) -> ModelSpec | None:
        with self._lock:
            return self._current.get(name)

    def specs(self) -> dict[str, ModelSpec]:
        with self._lock:
            return dict(self._current)

    def is_changed(self, name: str) -> bool:
        with self._lock:
            return self._current.get(name) != self._originals.get(name)

    def change(self, name: str, changes: Any) -> ModelSpec | None:
        """Apply `changes` to the model's current schema; None for an unknown model."""
        with self._lock:
            spec = self._current.get(name)
            if spec is None:
                return None
            self._current[name] = changed_spec(spec, changes)
            return self._current[name]

    def restore(self, name: str | None = None) -> ModelSpec | None:
        """Back to the built-in schema: one model's, or (no name) every model's."""
        with self._lock:
            if name is None:
                self._current = dict(self._originals)
                return None
            if name in self._originals:
                self._current[name] = self._originals[name]
            return self._current.get(name)


def changed_spec(spec: ModelSpec, changes: Any) -> ModelSpec:
    """`spec` with `{"drop": [names], "properties": {name: fields}, "require": [names]}` applied.

    `drop` removes properties (and their requirement); `properties` changes the given fields
    of an existing property or adds a new one (`type` required); `require` makes properties
    required. Fields: `type` (string, integer, array), `enum`, `minimum`, `maximum`,
    `default`, `item_format`.
    """
    if not isinstance(changes, dict) or set(changes) - {"drop", "properties", "require"}:
        raise SchemaChangeError("a schema change is an object of drop, properties and require")
    drop = _names(changes.get("drop", []), "drop")
    require = _names(changes.get("require", []), "require")
    updates = changes.get("properties", {})
    if not isinstance(updates, dict):
        raise SchemaChangeError("properties must be an object of property name to fields")
    properties = {prop.name: prop for prop in spec.properties}
    for name in drop:
        if properties.pop(name, None) is None:
            raise SchemaChangeError(f"{spec.full_name} has no input {name} to drop")
    for name, fields in updates.items():
        properties[name] = _changed_property(name, properties.get(name), fields)
    missing = [name for name in require if name not in properties]
    if missing:
        raise SchemaChangeError(f"can not require unknown inputs: {', '.join(missing)}")
    required = [name for name in spec.required if name in properties]
    required += [name for name in require if name not in required]
    return dataclasses.replace(
        spec, properties=tuple(properties.values()), required=tuple(required)
    )


def _names(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise SchemaChangeError(f"{key} must be a list of input names")
    return value


def _changed_property(name: str, current: Property | None, fields: Any) -> Property:
    if not isinstance(fields, dict) or set(fields) - _PROPERTY_FIELDS:
        allowed = ", ".join(sorted(_PROPERTY_FIELDS))
        raise SchemaChangeError(f"the fields of input {name} must be some of: {allowed}")
    if current is None and "type" not in fields:
        raise SchemaChangeError(f"the new input {name} needs a type")
    if fields.get("type", "string") not in _TYPES:
        raise SchemaChangeError(f"type of {name} must be one of: {', '.join(sorted(_TYPES))}")
    for bound in ("minimum", "maximum"):
        value = fields.get(bound)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise SchemaChangeError(f"{bound} of {name} must be an integer")
    values = dict(fields)
    if values.get("enum") is not None:
        enum = values["enum"]
        if not isinstance(enum, list) or not all(isinstance(choice, str) for choice in enum):
            raise SchemaChangeError(f"enum of {name} must be a list of strings")
        values["enum"] = tuple(enum)
    if current is None:
        return Property(name, **values)
    return dataclasses.replace(current, **values)
