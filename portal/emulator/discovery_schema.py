"""Validation of response bodies against the schemas of the Calendar API discovery document that
google-api-python-client ships (googleapiclient/discovery_cache/documents/calendar.v3.json)."""

from __future__ import annotations

import json
import pathlib
import re

import googleapiclient

DISCOVERY = json.loads(
    (pathlib.Path(googleapiclient.__file__).parent / "discovery_cache/documents/calendar.v3.json").read_text()
)
"""The discovery document the installed google-api-python-client uses."""

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

ERROR_ENVELOPE = {  # Google's JSON error body (not part of the discovery document)
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "errors": {"type": "array", "items": {"type": "object", "properties": {
                    "domain": {"type": "string"}, "reason": {"type": "string"}, "message": {"type": "string"},
                    "location": {"type": "string"}, "locationType": {"type": "string"}}}},
                "code": {"type": "integer"},
                "message": {"type": "string"},
                "status": {"type": "string"},
                "details": {"type": "array", "items": {"type": "any"}},
            },
        }
    },
}


def schema_errors(schema, value, where="$"):
    """Walk `value` against a discovery-document schema: types, formats, enums, properties, $ref,
    items and additionalProperties. Unknown properties are errors. Returns a list of messages."""
    if "$ref" in schema:
        return schema_errors(DISCOVERY["schemas"][schema["$ref"]], value, where)
    kind = schema.get("type")
    check = _TYPE_CHECKS.get(kind)
    if check is not None:
        return check(schema, value, where)
    if kind not in (None, "any"):
        return [f"{where}: unsupported schema type {kind}"]
    return []


def _object_errors(schema, value, where):
    if not isinstance(value, dict):
        return [f"{where}: expected object, got {type(value).__name__}"]
    errors = []
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        if key in props:
            errors += schema_errors(props[key], item, f"{where}.{key}")
        elif extra is not None:
            errors += schema_errors(extra, item, f"{where}[{key!r}]")
        else:
            errors.append(f"{where}: unknown property {key!r}")
    return errors


def _array_errors(schema, value, where):
    if not isinstance(value, list):
        return [f"{where}: expected array, got {type(value).__name__}"]
    errors = []
    for i, item in enumerate(value):
        errors += schema_errors(schema.get("items", {}), item, f"{where}[{i}]")
    return errors


def _string_errors(schema, value, where):
    if not isinstance(value, str):
        return [f"{where}: expected string, got {type(value).__name__}"]
    errors = []
    fmt = schema.get("format")
    if fmt == "date-time" and not _DATE_TIME.match(value):
        errors.append(f"{where}: not an RFC 3339 date-time: {value!r}")
    if fmt == "date" and not _DATE.match(value):
        errors.append(f"{where}: not a date: {value!r}")
    if fmt in ("int64", "uint64") and not re.match(r"^-?\d+$", value):
        errors.append(f"{where}: not an int64 string: {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    return errors


# Python's bool is an int, but JSON's true and false are neither integers nor numbers.
_SCALAR_TYPES = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


def _scalar_errors(schema, value, where):
    kind = schema["type"]
    return [] if _SCALAR_TYPES[kind](value) else [f"{where}: expected {kind}, got {value!r}"]


_TYPE_CHECKS = {"object": _object_errors, "array": _array_errors, "string": _string_errors,
                "integer": _scalar_errors, "number": _scalar_errors, "boolean": _scalar_errors}


def _discovery_methods():
    methods = []

    def walk(resources):
        for res in resources.values():
            for method in res.get("methods", {}).values():
                pattern = re.sub(r"\{[^}]+\}", "[^/]+", method["path"])
                methods.append((method["httpMethod"], re.compile("^" + pattern + "$"), method))
            walk(res.get("resources", {}))

    walk(DISCOVERY["resources"])
    return methods


DISCOVERY_METHODS = _discovery_methods()


def response_method(http_method, api_path):
    """The discovery method description for a request (path relative to calendar/v3/), or None."""
    for method, pattern, desc in DISCOVERY_METHODS:
        if method == http_method and pattern.match(api_path):
            return desc
    return None
