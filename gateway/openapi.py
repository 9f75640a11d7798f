"""``GET /api/v1/openapi.json``: the OpenAPI 3.1 description of every ``/api/v1/`` route.

Operations are declared in one table (``OPERATIONS``); a test checks it covers every
``/api/v1/`` route of ``gateway.routes`` and nothing else.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
from aiohttp import web

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


ERROR = ref("Error")
STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
OBJ: Schema = {"type": "object"}

# Client-settable fields.  A request body lists them with ``additionalProperties: false``; a
# response adds the server's fields, so it cannot be an ``allOf`` of a closed schema (JSON
# Schema's ``additionalProperties`` does not see the properties of a sibling ``allOf``).
INSPECTION_FIELDS: Schema = {
    "template_id": STR,
    "title": STR,
    "site": {},
    "status": {"enum": ["draft", "submitted", "approved", "rejected"]},
    "responses": OBJ,
    "submitted_at": {"type": ["string", "null"]},
}
TEMPLATE_FIELDS: Schema = {
    "name": STR,
    "description": STR,
    "fields": {"type": "array", "items": OBJ, "maxItems": 1000},
    "active": {"type": "boolean"},
}


def closed(properties: Schema, required: tuple[str, ...] = ()) -> Schema:
    """An object with exactly these members (a request body)."""
    out: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        out["required"] = list(required)
    return out


SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error", "reason"],
        "properties": {"error": STR, "reason": STR},
        "description": "CouchDB-shaped error; a merge refusal adds `fields`, a stale version "
        "adds `conflict_id` and `current`.",
    },
    "Tokens": {
        "type": "object",
        "properties": {
            "access_token": STR,
            "refresh_token": STR,
            "token_type": {"const": "bearer"},
            "expires_in": INT,
        },
    },
    "InspectionFields": closed(INSPECTION_FIELDS),
    "Inspection": {
        "type": "object",
        "properties": {
            **INSPECTION_FIELDS,
            "id": {"type": "string", "format": "uuid"},
            "version": INT,
            "rev": STR,
            "inspector": STR,
            "created_at": STR,
            "updated_at": STR,
        },
    },
    "Operation": {
        "type": "object",
        "required": ["op"],
        "properties": {
            "op": {"enum": ["create", "update", "delete"]},
            "id": STR,
            "version": INT,
            "data": ref("InspectionFields"),
        },
    },
    "OperationResult": {
        "type": "object",
        "properties": {
            "index": INT,
            "status": INT,
            "outcome": {"enum": ["created", "updated", "deleted", "conflict", "error"]},
            "id": {"type": ["string", "null"]},
            "version": {"type": ["integer", "null"]},
            "error": STR,
            "reason": STR,
            "conflict_id": INT,
            "current": ref("Inspection"),
        },
    },
    "TemplateFields": closed(TEMPLATE_FIELDS),
    "Template": {
        "type": "object",
        "properties": {
            **TEMPLATE_FIELDS,
            "id": STR,
            "version": INT,
            "rev": STR,
            "created_at": STR,
            "updated_at": STR,
            "updated_by": STR,
        },
    },
    "Photo": {
        "type": "object",
        "properties": {
            "id": STR,
            "inspection_id": STR,
            "public_id": STR,
            "version": INT,
            "format": STR,
            "bytes": INT,
            "width": {"type": ["integer", "null"]},
            "height": {"type": ["integer", "null"]},
            "secure_url": STR,
            "uploaded_by": {"type": ["string", "null"]},
            "created_at": STR,
        },
    },
    "ConflictRecord": {
        "type": "object",
        "properties": {
            "id": INT,
            "db": STR,
            "doc_id": STR,
            "status": {"enum": ["open", "resolved", "auto_resolved"]},
            "strategy": {"type": ["string", "null"]},
            "mine": OBJ,
            "theirs": OBJ,
            "ancestor": OBJ,
            "pushed_by": {"type": ["string", "null"]},
            "device": {"type": ["string", "null"]},
            "created_at": STR,
            "resolved_by": {"type": ["string", "null"]},
            "resolved_rev": {"type": ["string", "null"]},
            "resolved_at": {"type": ["string", "null"]},
        },
    },
    "Checkpoint": {
        "type": "object",
        "properties": {
            "user": STR,
            "db": STR,
            "id": STR,
            "seq": {"type": ["integer", "null"]},
            "db_seq": INT,
            "lag": {"type": ["integer", "null"]},
            "updated_at": STR,
        },
    },
}


def _body(schema: Schema) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _answer(status: int, description: str, schema: Schema | None = None) -> tuple[str, Schema]:
    out: Schema = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    return str(status), out


def _q(name: str, schema: Schema = STR, description: str = "") -> Schema:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _list_of(item: Schema) -> Schema:
    return {
        "type": "object",
        "properties": {
            "results": {"type": "array", "items": item},
            "next": {"type": ["string", "null"]},
        },
    }


IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "schema": STR,
    "description": "Replays of the same key and body return the stored answer; another body "
    "is 422. Keys are per user and expire after 24 h.",
}
COMMON_ERRORS = dict(
    [_answer(400, "bad input", ERROR), _answer(401, "not authenticated", ERROR)]
)  # fmt: skip

MUTATING_ERRORS = (
    ("409", "request_in_progress: the same Idempotency-Key is still running"),
    ("422", "idempotency_key_reused with another request"),
    ("429", "too_many_requests (see Retry-After)"),
)
ERROR_JSON = {"application/json": {"schema": ERROR}}
TOO_LARGE = {
    "description": "too_large: the body is above GATEWAY_MAX_REQUEST_BYTES; "
    "document_too_large: a document above GATEWAY_MAX_DOCUMENT_BYTES",
    "content": ERROR_JSON,
}
BAD_CONTENT_TYPE = {"description": "bad_content_type: the body is not JSON", "content": ERROR_JSON}

# (method, path, summary, parameters, request body, answers)
OPERATIONS: list[tuple[str, str, str, list[Schema], Schema | None, dict[str, Schema]]] = [
    ("post", "/api/v1/auth/login", "Log in: an access and a refresh token", [],
     _body({"type": "object", "required": ["username", "password"],
            "properties": {"username": STR, "password": STR}}),
     dict([_answer(200, "tokens", ref("Tokens")), _answer(429, "too many failures", ERROR)])),
    ("post", "/api/v1/auth/refresh", "Rotate a refresh token (reuse revokes its family)", [],
     _body({"type": "object", "required": ["refresh_token"],
            "properties": {"refresh_token": STR}}),
     dict([_answer(200, "tokens", ref("Tokens"))])),
    ("post", "/api/v1/auth/logout", "Revoke the access token and a refresh family", [],
     None, dict([_answer(200, "logged out")])),
    ("get", "/api/v1/auth/me", "The caller", [], None, dict([_answer(200, "user", OBJ)])),
    ("get", "/api/v1/checkpoints", "The checkpoint registry (staff)",
     [_q("user"), _q("db")], None,
     dict([_answer(200, "checkpoints", _list_of(ref("Checkpoint"))),
           _answer(403, "not a manager or admin", ERROR)])),
    ("delete", "/api/v1/checkpoints", "Delete or rewind a user's checkpoints (admins)",
     [_q("user", description="required"), _q("db"), _q("id"), _q("to_seq", INT),
      _q("dry_run", {"type": "boolean"})], None,
     dict([_answer(200, "what changed", OBJ), _answer(404, "no such user", ERROR),
           _answer(403, "not an admin", ERROR)])),
    ("get", "/api/v1/inspections", "List inspections (the caller's, or all for staff)",
     [_q("status"), _q("template_id"), _q("inspector"), _q("limit", INT), _q("cursor")], None,
     dict([_answer(200, "a page", _list_of(ref("Inspection")))])),
    ("post", "/api/v1/inspections", "Create an inspection", [IDEMPOTENCY],
     _body(closed({**INSPECTION_FIELDS, "id": {"format": "uuid", **STR}})),
     dict([_answer(201, "created", ref("Inspection")), _answer(409, "id taken", ERROR),
           _answer(403, "workflow", ERROR)])),
    ("get", "/api/v1/inspections/{inspection_id}", "Read an inspection", [], None,
     dict([_answer(200, "the inspection", ref("Inspection")), _answer(404, "missing", ERROR)])),
    ("patch", "/api/v1/inspections/{inspection_id}", "Update with the current version",
     [IDEMPOTENCY],
     _body(closed({**INSPECTION_FIELDS, "version": INT}, ("version",))),
     dict([_answer(200, "updated", ref("Inspection")),
           _answer(409, "stale version: the server's copy and a conflict_id", ERROR),
           _answer(403, "workflow", ERROR), _answer(404, "missing", ERROR)])),
    ("delete", "/api/v1/inspections/{inspection_id}", "Soft delete (a tombstone)",
     [_q("version", INT, "required"), IDEMPOTENCY], None,
     dict([_answer(200, "deleted", OBJ), _answer(409, "stale version", ERROR),
           _answer(403, "workflow", ERROR), _answer(404, "missing", ERROR)])),
    ("post", "/api/v1/sync/batch", "Up to 100 operations, each applied on its own",
     [IDEMPOTENCY],
     _body({"type": "object", "required": ["operations"],
            "properties": {"operations": {"type": "array", "maxItems": 100,
                                          "items": ref("Operation")}}}),
     dict([_answer(207, "one result per operation",
                   {"type": "object", "properties": {
                       "results": {"type": "array", "items": ref("OperationResult")}}}),
           _answer(413, "more than 100 operations", ERROR)])),
    ("get", "/api/v1/sync/changes", "The caller's inspection changes",
     [_q("since", INT), _q("limit", INT)], None,
     dict([_answer(200, "changes", {"type": "object", "properties": {
         "results": {"type": "array", "items": OBJ}, "last_seq": INT,
         "has_more": {"type": "boolean"}}}),
           _answer(429, "too_many_requests: the sync rate limit (see Retry-After)", ERROR)])),
    ("get", "/api/v1/templates", "List templates (strong ETag, If-None-Match → 304)",
     [_q("limit", INT), _q("cursor"), {"name": "If-None-Match", "in": "header", "schema": STR}],
     None, dict([_answer(200, "a page", _list_of(ref("Template"))),
                 _answer(304, "not modified")])),
    ("post", "/api/v1/templates", "Create a template (managers, admins)", [IDEMPOTENCY],
     _body(closed({**TEMPLATE_FIELDS, "id": STR}, ("name",))),
     dict([_answer(201, "created", ref("Template")), _answer(403, "not staff", ERROR),
           _answer(409, "id taken", ERROR)])),
    ("get", "/api/v1/templates/{template_id}", "Read a template (strong ETag)",
     [{"name": "If-None-Match", "in": "header", "schema": STR}], None,
     dict([_answer(200, "the template", ref("Template")), _answer(304, "not modified"),
           _answer(404, "missing", ERROR)])),
    ("patch", "/api/v1/templates/{template_id}", "Update a template with its version",
     [IDEMPOTENCY],
     _body(closed({**TEMPLATE_FIELDS, "version": INT}, ("version",))),
     dict([_answer(200, "updated", ref("Template")), _answer(409, "stale version", ERROR),
           _answer(403, "not staff", ERROR), _answer(404, "missing", ERROR)])),
    ("delete", "/api/v1/templates/{template_id}", "Delete a template (a tombstone)",
     [_q("version", INT, "required"), IDEMPOTENCY], None,
     dict([_answer(200, "deleted", OBJ), _answer(409, "stale version", ERROR),
           _answer(403, "not staff", ERROR), _answer(404, "missing", ERROR)])),
    ("post", "/api/v1/photos/upload-params",
     "Signed Cloudinary direct-upload parameters for an inspection", [IDEMPOTENCY],
     _body({"type": "object", "required": ["inspection_id"],
            "properties": {"inspection_id": STR}}),
     dict([_answer(200, "`upload_url`, the signed form `params`, `expires_at`", OBJ),
           _answer(404, "no such inspection", ERROR),
           _answer(503, "Cloudinary not configured", ERROR)])),
    ("post", "/api/v1/photos/confirm", "Verify an upload with Cloudinary and record the photo",
     [IDEMPOTENCY],
     _body({"type": "object", "required": ["inspection_id", "public_id"],
            "properties": {"inspection_id": STR, "public_id": STR, "version": INT}}),
     dict([_answer(201, "recorded", ref("Photo")), _answer(200, "already recorded",
                                                            ref("Photo")),
           _answer(409, "confirmed for another inspection", ERROR),
           _answer(502, "Cloudinary failed; retry", ERROR),
           _answer(503, "Cloudinary unreachable; retry", ERROR)])),
    ("get", "/api/v1/inspections/{inspection_id}/photos", "An inspection's photos", [], None,
     dict([_answer(200, "photos", {"type": "object", "properties": {
         "results": {"type": "array", "items": ref("Photo")}}})])),
    ("get", "/api/v1/conflicts", "List ConflictRecords",
     [_q("db"), _q("status"), _q("doc_id"), _q("limit", INT), _q("cursor")], None,
     dict([_answer(200, "a page", _list_of(ref("ConflictRecord")))])),
    ("get", "/api/v1/conflicts/{conflict_id}", "Read a ConflictRecord", [], None,
     dict([_answer(200, "the record", ref("ConflictRecord")), _answer(404, "missing", ERROR)])),
    ("post", "/api/v1/conflicts/{conflict_id}/resolve", "Resolve a ConflictRecord",
     [IDEMPOTENCY],
     _body({"type": "object", "required": ["strategy"],
            "properties": {"strategy": {"enum": ["keep_mine", "keep_theirs", "merge"]},
                           "body": OBJ}}),
     dict([_answer(200, "resolved; `rev` is the document's new revision",
                   ref("ConflictRecord")),
           _answer(409, "already resolved, or a merge with clashing `fields`", ERROR),
           _answer(404, "no such conflict (or not yours)", ERROR)])),
    ("get", "/api/v1/activity", "What changed where and by whom, across databases (staff)",
     [_q("since", description="the token of the previous answer"), _q("limit", INT),
      _q("feed", {"enum": ["normal", "longpoll"]}), _q("timeout", INT)], None,
     dict([_answer(200, "changes and the next `since` token", {"type": "object", "properties": {
         "results": {"type": "array", "items": OBJ}, "since": STR}}),
           _answer(403, "not a manager or admin", ERROR)])),
    ("get", "/api/v1/activity/stats", "Documents in (written) and out (served) per minute (staff)",
     [_q("minutes", INT, "how many minutes up to now, 1 to 180 (default 60)")], None,
     dict([_answer(200, "oldest minute first", {"type": "object", "properties": {
         "minutes": {"type": "array", "items": {"type": "object", "properties": {
             "at": STR, "in": INT, "out": INT}}}}}),
           _answer(403, "not a manager or admin", ERROR)])),
    ("get", "/api/v1/openapi.json", "This document", [], None,
     dict([_answer(200, "OpenAPI 3.1", OBJ)])),
]  # fmt: skip


def _path_params(path: str) -> list[Schema]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [{"name": n, "in": "path", "required": True, "schema": STR} for n in names]


@cache
def document() -> bytes:
    """The OpenAPI document, serialized once."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, params, body, answers in OPERATIONS:
        operation: dict[str, Any] = {
            "summary": summary,
            "parameters": _path_params(path) + params,
            "responses": {**answers, **COMMON_ERRORS},
        }
        if body is not None:
            operation["requestBody"] = body
            operation["responses"].setdefault("413", TOO_LARGE)
            operation["responses"].setdefault("415", BAD_CONTENT_TYPE)
        if IDEMPOTENCY in params:  # mutating: idempotency keys and the write rate limit
            for status, text in MUTATING_ERRORS:
                found = operation["responses"].get(status)
                if found is None:
                    operation["responses"][status] = {"description": text, "content": ERROR_JSON}
                else:  # a copy: the table's entries stay as declared
                    joined = found["description"] + "; or " + text
                    operation["responses"][status] = {**found, "description": joined}
        if path.startswith("/api/v1/auth/login") or path.startswith("/api/v1/auth/refresh"):
            operation["security"] = []
        paths.setdefault(path, {})[method] = operation
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "Replication gateway field API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "basic": {"type": "http", "scheme": "basic"},
            },
        },
        "security": [{"bearer": []}, {"basic": []}],
    }
    return orjson.dumps(doc)


async def openapi_handler(request: web.Request) -> web.Response:
    """``GET /api/v1/openapi.json`` (public)."""
    return web.Response(body=document(), content_type="application/json")
