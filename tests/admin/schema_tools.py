"""Just enough JSON Schema for the admin tests: validate answers, generate requests.

Covers the subset admin/openapi.py uses ($ref, anyOf, allOf, type, properties,
required, additionalProperties, enum, items, string/number limits, pattern,
format uuid/date-time, examples).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

Schema = dict[str, Any]

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float), "null": (type(None),),
}


def resolve(schema: Schema, doc: Schema) -> Schema:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def errors(instance: Any, schema: Schema, doc: Schema, where: str = "$") -> list[str]:
    """Problems of ``instance`` against ``schema`` (empty when valid)."""
    schema = resolve(schema, doc)
    if "anyOf" in schema:
        if any(not errors(instance, s, doc, where) for s in schema["anyOf"]):
            return []
        return [f"{where}: matches none of anyOf"]
    found: list[str] = []
    for sub in schema.get("allOf", []):
        found += errors(instance, sub, doc, where)
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(instance, _TYPES[kind]) and not (
            kind in ("integer", "number") and isinstance(instance, bool))
        if not ok:
            return [*found, f"{where}: expected {kind}, got {type(instance).__name__}"]
    if "enum" in schema and instance not in schema["enum"]:
        found.append(f"{where}: {instance!r} not in enum")
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in instance:
                found.append(f"{where}: missing {name}")
        for name, value in instance.items():
            if name in properties:
                found += errors(value, properties[name], doc, f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                found.append(f"{where}: unexpected property {name}")
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            found += errors(item, schema["items"], doc, f"{where}[{i}]")
    return found


# -- generation -------------------------------------------------------------------

JSON_GARBAGE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


def _strings(schema: Schema) -> st.SearchStrategy[str]:
    low = schema.get("minLength", 0)
    high = schema.get("maxLength", 300)
    fmt = schema.get("format")
    if fmt == "uuid":
        return st.uuids().map(str) | st.text(max_size=40)
    if fmt == "date-time":
        moments = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1),
                               timezones=st.just(UTC))
        near = st.integers(-3600, 3600 * 24 * 365).map(
            lambda s: datetime.now(UTC) + timedelta(seconds=s))
        return (moments | near).map(datetime.isoformat) | st.text(max_size=30)
    if "pattern" in schema:
        pattern = schema["pattern"]
        matching = st.from_regex(pattern, fullmatch=True).filter(
            lambda s: low <= len(s) <= high)
        return matching | st.text(max_size=high + 1)
    lengths = st.text(min_size=low, max_size=min(high, 40))
    edge = st.sampled_from([low, high, high + 1]).flatmap(
        lambda n: st.text(alphabet="ab", min_size=n, max_size=n))
    return lengths | edge


def values(schema: Schema, doc: Schema, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values that mostly follow ``schema``, including its boundary values."""
    schema = resolve(schema, doc)
    if depth > 6:
        return JSON_GARBAGE
    if "anyOf" in schema:
        return st.one_of([values(s, doc, depth + 1) for s in schema["anyOf"]])
    if "allOf" in schema:
        return values(schema["allOf"][0], doc, depth + 1)
    if "examples" in schema:
        return st.sampled_from(schema["examples"]) | _typed(schema, doc, depth)
    return _typed(schema, doc, depth)


def _typed(schema: Schema, doc: Schema, depth: int) -> st.SearchStrategy[Any]:
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | st.text(max_size=12)
    kind = schema.get("type")
    if kind == "string":
        return _strings(schema)
    if kind == "integer":
        low, high = schema.get("minimum", -(2**63)), schema.get("maximum", 2**63 - 1)
        return (st.integers(low, high) | st.sampled_from([low - 1, high + 1, 0])
                | st.booleans() | st.floats(allow_nan=False, allow_infinity=False))
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10, 10**6)
    if kind == "boolean":
        return st.booleans() | st.sampled_from([0, 1, "true"])
    if kind == "array":
        item = values(schema.get("items", {}), doc, depth + 1)
        return st.lists(item, max_size=schema.get("maxItems", 4) + 1)
    if kind == "object" and "properties" in schema:
        return _objects(schema, doc, depth)
    if kind == "object":
        return st.dictionaries(st.text(max_size=12), JSON_GARBAGE, max_size=4)
    return JSON_GARBAGE


def _objects(schema: Schema, doc: Schema, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    properties: dict[str, Schema] = schema["properties"]
    required = set(schema.get("required", []))

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, sub in properties.items():
            if name in required or draw(st.booleans()):
                out[name] = draw(values(sub, doc, depth + 1))
        if required and draw(st.integers(0, 9)) == 0:  # sometimes drop a required field
            out.pop(draw(st.sampled_from(sorted(required))), None)
        if draw(st.integers(0, 9)) == 0:  # sometimes an unknown field
            out[draw(st.text(min_size=1, max_size=8))] = draw(JSON_GARBAGE)
        return out

    return build()


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def path_params(template: str) -> list[str]:
    return re.findall(r"{(\w+)}", template)
