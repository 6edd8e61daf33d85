"""The admin API's OpenAPI 3.1 description, as data.

Request schemas mirror admin/validation.py (strict objects, the same limits);
tests fuzz every operation from these schemas and check each answer against the
documented response schema, so this document and the code cannot drift apart
silently.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

from abgate.upstream import API_KINDS, MAX_TIMEOUT_S
from admin.validation import (
    API_KEY_MAX,
    AUDIT_LIMIT_DEFAULT,
    AUDIT_LIMIT_MAX,
    DESCRIPTION_MAX,
    LABEL_MAX,
    NAME_MAX,
    PUBLIC_MODEL_ID_MAX,
    WEIGHT_MAX,
    WEIGHT_MIN,
)

__all__ = ["ERROR_CODES", "EXTENSION_MODULES", "document"]

ERROR_CODES = (
    "BAD_REQUEST", "NOT_FOUND", "CONFLICT", "UNAUTHORIZED", "FORBIDDEN", "INTERNAL_SERVER_ERROR",
)

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


_TIMESTAMP: Schema = {"type": "string", "format": "date-time"}
_NAME: Schema = {"type": "string", "minLength": 1, "maxLength": NAME_MAX}
_DESCRIPTION: Schema = {"type": "string", "maxLength": DESCRIPTION_MAX}
_PUBLIC_MODEL_ID: Schema = {
    "type": "string", "minLength": 1, "maxLength": PUBLIC_MODEL_ID_MAX,
    "pattern": "^[A-Za-z0-9._:/@+-]+$",
    "description": "The preview model id clients send in `model`.",
}
_LABEL: Schema = {"type": "string", "minLength": 1, "maxLength": LABEL_MAX}
_WEIGHT: Schema = {"type": "integer", "minimum": WEIGHT_MIN, "maximum": WEIGHT_MAX}
_API_KEY: Schema = {
    "type": "string", "minLength": 1, "maxLength": API_KEY_MAX, "writeOnly": True,
    "description": "Encrypted before it is stored; never returned.",
}
_EFFECTIVE_AT: Schema = {
    **_TIMESTAMP,
    "description": "When the version takes effect (with a UTC offset, not in the past); "
                   "default now.",
}

_SCHEMAS: dict[str, Schema] = {
    "Error": _obj(
        {"error": _obj(
            {"code": {"type": "string", "enum": list(ERROR_CODES)},
             "message": {"type": "string"}},
            ("code", "message"),
        )},
        ("error",),
    ),
    "Experiment": _obj(
        {
            "id": {"type": "string", "format": "uuid"},
            "public_model_id": {"type": "string"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "status": {"type": "string", "enum": ["draft", "active", "paused", "completed"]},
            "is_archived": {"type": "boolean"},
            "created_at": _TIMESTAMP,
            "updated_at": _TIMESTAMP,
            "started_at": _nullable(_TIMESTAMP),
            "ended_at": _nullable(_TIMESTAMP),
        },
        ("id", "public_model_id", "name", "description", "status", "is_archived",
         "created_at", "updated_at", "started_at", "ended_at"),
    ),
    "Upstream": _obj(
        {
            "internal_id": {"type": "string", "minLength": 1, "maxLength": 200,
                            "examples": ["partner/checkpoint-2025-01"]},
            "base_url": {
                "type": "string", "minLength": 1, "maxLength": 2048,
                "examples": ["https://api.partner.example/v1"],
                "description": "https URL (http and private hosts only with "
                               "ABGATE_ALLOW_INSECURE_UPSTREAM); the endpoint path is "
                               "appended from api_kind.",
            },
            "api_kind": {"type": "string", "enum": list(API_KINDS)},
            "extra_body": {"type": "object", "description": "Merged into each request body."},
            "remove_from_body": {"type": "array", "maxItems": 64,
                                 "items": {"type": "string", "minLength": 1, "maxLength": 256}},
            "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S},
        },
        ("internal_id", "base_url", "api_kind"),
    ),
    "Version": _obj(
        {
            "id": {"type": "integer"},
            "variant_id": {"type": "integer"},
            "upstream": _ref("Upstream"),
            "effective_at": _TIMESTAMP,
            "created_at": _TIMESTAMP,
            "api_key_configured": {"type": "boolean"},
        },
        ("id", "variant_id", "upstream", "effective_at", "created_at", "api_key_configured"),
    ),
    "Variant": _obj(
        {
            "id": {"type": "integer"},
            "experiment_id": {"type": "string", "format": "uuid"},
            "label": {"type": "string"},
            "weight": {"type": "integer"},
            "share": {"type": "number", "description": "weight / sum of the experiment's weights"},
            "created_at": _TIMESTAMP,
            "current_version": _nullable(_ref("Version")),
            "versions": {"type": "array", "items": _ref("Version")},
        },
        ("id", "experiment_id", "label", "weight", "share", "created_at"),
    ),
    "ExperimentList": _obj(
        {"experiments": {"type": "array", "items": _ref("Experiment")}}, ("experiments",)
    ),
    "ExperimentCreate": _obj(
        {"public_model_id": _PUBLIC_MODEL_ID, "name": _NAME, "description": _DESCRIPTION},
        ("public_model_id", "name"),
    ),
    "ExperimentPatch": _obj(
        {"name": _NAME, "description": _DESCRIPTION, "public_model_id": _PUBLIC_MODEL_ID},
    ),
    "Archive": _obj({"archived": {"type": "boolean"}}, ("archived",)),
    "VariantCreate": _obj({"label": _LABEL, "weight": _WEIGHT}, ("label", "weight")),
    "VariantPatch": _obj({"label": _LABEL}, ("label",)),
    "VersionCreate": _obj(
        {
            "upstream": _ref("Upstream"),
            "api_key": {**_API_KEY, "description": "Required when the variant has no prior "
                                                   "version; otherwise the prior key is kept."},
            "effective_at": _EFFECTIVE_AT,
        },
        ("upstream",),
    ),
    "RotateKey": _obj({"api_key": _API_KEY, "effective_at": _EFFECTIVE_AT}, ("api_key",)),
    "AuditEntry": _obj(
        {
            "id": {"type": "integer"},
            "created_at": _TIMESTAMP,
            "actor": {"type": "string", "description": "Name of the token used."},
            "action": {"type": "string", "examples": [
                "experiment.create", "experiment.activate", "variant.update",
                "version.create", "version.rotate_key", "experiment.archive"]},
            "experiment_id": _nullable({"type": "string", "format": "uuid"}),
            "variant_id": _nullable({"type": "integer"}),
            "version_id": _nullable({"type": "integer"}),
            "before": _nullable({"type": "object"}),
            "after": _nullable({"type": "object"}),
        },
        ("id", "created_at", "actor", "action", "experiment_id", "variant_id", "version_id",
         "before", "after"),
    ),
    "AuditPage": _obj(
        {"entries": {"type": "array", "items": _ref("AuditEntry")},
         "next_cursor": _nullable({"type": "string"})},
        ("entries", "next_cursor"),
    ),
    "Status": _obj({"status": {"type": "string"}}, ("status",)),
}

_SCHEMAS["ExperimentDetail"] = _obj(
    {
        **_SCHEMAS["Experiment"]["properties"],
        "variants": {"type": "array", "items": _ref("Variant"),
                     "description": "In id order, each with current_version and versions "
                                    "(newest first)."},
    },
    (*_SCHEMAS["Experiment"]["required"], "variants"),
)

_EXAMPLES: dict[str, list[Schema]] = {
    "ExperimentCreate": [{"public_model_id": "partner/preview-foo", "name": "Foo vs bar",
                          "description": "Blind test of two checkpoints"}],
    "ExperimentPatch": [{"name": "Foo vs bar (round 2)"}],
    "Archive": [{"archived": True}],
    "VariantCreate": [{"label": "candidate", "weight": 1}],
    "VariantPatch": [{"label": "control"}],
    "VersionCreate": [
        {"upstream": {"internal_id": "partner/checkpoint-2025-01",
                      "base_url": "https://api.partner.example/v1",
                      "api_kind": "chat_completions"},
         "api_key": "sk-partner-key"},
        {"upstream": {"internal_id": "partner/checkpoint-2025-02",
                      "base_url": "https://api.partner.example/v1",
                      "api_kind": "chat_completions", "extra_body": {"temperature": 0.2},
                      "timeout_s": 120}},
    ],
    "RotateKey": [{"api_key": "sk-partner-key-2"}],
}
for _name, _examples in _EXAMPLES.items():
    _SCHEMAS[_name]["examples"] = _examples

_EXPERIMENT_ID = {
    "name": "id", "in": "path", "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
_VARIANT_ID = {
    "name": "id", "in": "path", "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
}


def _json(schema: Schema) -> Schema:
    return {"content": {"application/json": {"schema": schema}}}


def _ok(description: str, schema: Schema) -> Schema:
    return {"description": description, **_json(schema)}


def _error(description: str) -> Schema:
    return {"description": description, **_json(_ref("Error"))}


_AUTH_ERRORS = {
    "401": _error("No token, or an invalid or revoked one"),
}
_WRITE_ERRORS = {
    **_AUTH_ERRORS,
    "400": _error("Invalid body or a lifecycle rule forbids it"),
    "403": _error("The token's role (viewer) may only read"),
}


def _op(
    summary: str,
    responses: dict[str, Schema],
    *,
    params: list[Schema] | None = None,
    body: str | None = None,
    write: bool = False,
    key_touching: bool = False,
) -> Schema:
    op: Schema = {"summary": summary, "responses": {**(_WRITE_ERRORS if write else _AUTH_ERRORS),
                                                    **responses}}
    if write and key_touching:
        op["responses"]["500"] = _error(
            "encryption keys are not configured (ABGATE_ENCRYPTION_KEYS)")
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, **_json(_ref(body))}
    return op


_NOT_FOUND_EXPERIMENT = {"404": _error("No such experiment (also for a malformed id)")}
_NOT_FOUND_VARIANT = {"404": _error("No such variant (also for a malformed id)")}


def _transition(verb: str, rule: str, conflict: bool = False) -> Schema:
    responses = {"200": _ok("The experiment (unchanged when it already was in that state)",
                            _ref("Experiment")), **_NOT_FOUND_EXPERIMENT}
    if conflict:
        responses["409"] = _error("Another experiment on the public id is active or paused")
    return {"post": _op(f"{verb} the experiment ({rule})", responses,
                        params=[_EXPERIMENT_ID], write=True)}


_PATHS: dict[str, Schema] = {
    "/healthz": {"get": {"summary": "Liveness", "security": [],
                         "responses": {"200": _ok("Alive", _ref("Status"))}}},
    "/readyz": {"get": {"summary": "Readiness: the database answers", "security": [],
                        "responses": {"200": _ok("Ready", _ref("Status")),
                                      "503": _error("Database unreachable")}}},
    "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {
        "200": {"description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {
        "200": _ok("OpenAPI 3.1 document", {"type": "object"})}}},
    "/api/experiments": {
        "get": _op(
            "List experiments",
            {"200": _ok("Experiments, newest first", _ref("ExperimentList")),
             "400": _error("Invalid archived filter")},
            params=[{"name": "archived", "in": "query", "required": False,
                     "description": "false (default) hides archived ones; all shows both",
                     "schema": {"type": "string", "enum": ["false", "true", "all"]}}],
        ),
        "post": _op("Create a draft experiment",
                    {"201": _ok("The new draft", _ref("Experiment"))},
                    body="ExperimentCreate", write=True),
    },
    "/api/experiments/{id}": {
        "get": _op("An experiment with its variants and versions",
                   {"200": _ok("The experiment", _ref("ExperimentDetail")),
                    **_NOT_FOUND_EXPERIMENT}, params=[_EXPERIMENT_ID]),
        "patch": _op("Rename or describe an experiment; public_model_id only while draft",
                     {"200": _ok("The experiment", _ref("Experiment")), **_NOT_FOUND_EXPERIMENT},
                     params=[_EXPERIMENT_ID], body="ExperimentPatch", write=True),
        "delete": _op("Delete a draft experiment with its variants and versions",
                      {"204": {"description": "Deleted"}, **_NOT_FOUND_EXPERIMENT},
                      params=[_EXPERIMENT_ID], write=True),
    },
    "/api/experiments/{id}/activate": _transition(
        "Activate", "draft or paused; needs >= 2 variants, a current version each, one "
        "api_kind", conflict=True),
    "/api/experiments/{id}/pause": _transition("Pause", "active only"),
    "/api/experiments/{id}/complete": _transition("Complete", "active or paused; terminal"),
    "/api/experiments/{id}/archive": {"post": _op(
        "Archive or unarchive (not while active)",
        {"200": _ok("The experiment", _ref("Experiment")), **_NOT_FOUND_EXPERIMENT},
        params=[_EXPERIMENT_ID], body="Archive", write=True)},
    "/api/experiments/{id}/variants": {"post": _op(
        "Add a variant (draft only)",
        {"201": _ok("The new variant", _ref("Variant")), **_NOT_FOUND_EXPERIMENT,
         "409": _error("The label is taken in this experiment")},
        params=[_EXPERIMENT_ID], body="VariantCreate", write=True)},
    "/api/variants/{id}": {
        "patch": _op("Relabel a variant (until completed)",
                     {"200": _ok("The variant", _ref("Variant")), **_NOT_FOUND_VARIANT,
                      "409": _error("The label is taken in this experiment")},
                     params=[_VARIANT_ID], body="VariantPatch", write=True),
        "delete": _op("Remove a variant (draft only)",
                      {"204": {"description": "Removed"}, **_NOT_FOUND_VARIANT},
                      params=[_VARIANT_ID], write=True),
    },
    "/api/variants/{id}/versions": {"post": _op(
        "Hot-swap: a new version (until completed; keeps api_kind while live)",
        {"201": _ok("The new version", _ref("Version")), **_NOT_FOUND_VARIANT},
        params=[_VARIANT_ID], body="VersionCreate", write=True, key_touching=True)},
    "/api/variants/{id}/rotate-key": {"post": _op(
        "A new version with the prior upstream and a new key",
        {"201": _ok("The new version", _ref("Version")), **_NOT_FOUND_VARIANT},
        params=[_VARIANT_ID], body="RotateKey", write=True, key_touching=True)},
    "/api/audit": {"get": _op(
        "Audit log, newest first",
        {"200": _ok("A page of entries", _ref("AuditPage")),
         "400": _error("Invalid query parameter")},
        params=[
            {"name": "experiment_id", "in": "query", "required": False,
             "schema": {"type": "string", "format": "uuid"}},
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": AUDIT_LIMIT_MAX,
                        "default": AUDIT_LIMIT_DEFAULT}},
            {"name": "cursor", "in": "query", "required": False,
             "description": "next_cursor of the previous page", "schema": {"type": "string"}},
        ])},
}

_DOCUMENT: Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "abgate admin API",
        "version": "1",
        "description": "Control plane of abgate: experiments, variants, versions, keys and the "
                       "audit log. Every error is {\"error\": {\"code\", \"message\"}}.",
    },
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": _SCHEMAS,
    },
    "paths": _PATHS,
}


# Optional route modules (evidence endpoints): admin.app registers their
# ``register_routes(app)`` when present, and they describe those routes here with
# module-level OPENAPI_PATHS and, if they need them, OPENAPI_SCHEMAS.
EXTENSION_MODULES: tuple[str, ...] = ("admin.stats", "admin.requests_browser", "admin.rate_cards")


def document() -> Schema:
    """A fresh copy of the OpenAPI document (callers may mutate it)."""
    doc = copy.deepcopy(_DOCUMENT)
    for name in EXTENSION_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        doc["paths"].update(copy.deepcopy(getattr(module, "OPENAPI_PATHS", {})))
        doc["components"]["schemas"].update(copy.deepcopy(getattr(module, "OPENAPI_SCHEMAS", {})))
    return doc
