"""OpenAPI fragments shared by the evidence endpoints (stats, request browser, rate cards).

Each endpoint module exposes ``OPENAPI_PATHS`` and ``OPENAPI_SCHEMAS``, which
admin/openapi.py merges into the document; these helpers build them in the same
style as the core document.
"""

from __future__ import annotations

from typing import Any

__all__ = ["error", "nullable", "obj", "ok", "op", "query", "ref"]

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], required: tuple[str, ...] | None = None) -> Schema:
    """A closed object; every property is required unless ``required`` says otherwise."""
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "required": list(properties if required is None else required),
    }


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def ok(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(description: str) -> Schema:
    return ok(description, ref("Error"))


def query(name: str, schema: Schema, description: str = "") -> Schema:
    param: Schema = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        param["description"] = description
    return param


def op(summary: str, responses: dict[str, Schema], *, params: list[Schema] | None = None,
       body: str | None = None, write: bool = False) -> Schema:
    all_responses = {"401": error("No token, or an invalid or revoked one")}
    if write:
        all_responses["403"] = error("The token's role (viewer) may only read")
        all_responses["400"] = error("Invalid body")
    operation: Schema = {"summary": summary, "responses": {**all_responses, **responses}}
    if params:
        operation["parameters"] = params
    if body:
        operation["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": ref(body)}},
        }
    return operation
