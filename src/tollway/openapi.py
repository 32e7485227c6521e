"""The OpenAPI document says what the edge answers, not only what handlers return.

FastAPI describes each route's success and its 422; every answer of Tollway's edge
(problem+json errors, the credentials it takes) is added here, once for all routes:

- ``components.schemas.Problem`` (RFC 9457 with ``code``) for every error, including
  the 422 that FastAPI describes as ``HTTPValidationError``;
- per operation the statuses the shared machinery can answer: 400/413/415 for routes
  with a body, 401/403 (and 429 for the API-key rate limits) for routes that need a
  principal, 404 for routes with path parameters, 409 for unsafe methods
  (``Idempotency-Key``), 500, and a ``default`` problem for the domain's own codes
  (docs/errors.md lists them all);
- security schemes (``Authorization: Bearer`` with an access token or an API key, and
  the dashboard's session cookie), and per operation which of them it takes, read from
  its dependencies: one that returns a ``Principal`` needs credentials, one that returns
  ``Principal | None`` takes them if sent.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from tollway.auth.principal import Principal
from tollway.auth.sessions import CSRF_HEADER, SESSION_COOKIE
from tollway.errors import PROBLEM_TYPE_BASE

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem document; clients switch on `code` (docs/errors.md).",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "examples": [PROBLEM_TYPE_BASE + "not_found"]},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "examples": ["not_found"]},
        "request_id": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "validation_error: each invalid field",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
        "retry_after": {"type": "integer", "description": "429: seconds to wait"},
    },
    "additionalProperties": True,
}

SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "an access token from POST /api/v1/auth/login, or an API key (tw_...)",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": f"the dashboard's session cookie (unsafe methods also need {CSRF_HEADER})",
    },
}

#: What each status means when the shared machinery answers it.
EDGE_STATUSES = {
    "400": "malformed_json, malformed_multipart or another unreadable request",
    "401": "unauthenticated, invalid_token, token_expired or invalid_api_key",
    "403": "insufficient_scope, insufficient_role or admin_only",
    "404": "not_found (also for other organizations' objects)",
    "409": "conflict, idempotency_conflict or idempotency_in_progress",
    "413": "payload_too_large",
    "415": "unsupported_media_type",
    "422": "validation_error (errors lists each field) or a domain's invalid_* code",
    "429": "rate_limited (Retry-After)",
    "500": "internal_error: quote request_id when reporting it",
    "default": "another documented error code (docs/errors.md)",
}

UNSAFE_METHODS = frozenset({"post", "put", "patch", "delete"})


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` answer the document with the edge's answers added."""
    generate = app.openapi
    decorated: list[int] = []

    def openapi() -> dict[str, Any]:
        schema = generate()
        if decorated != [id(schema)]:
            describe_edge(schema, app.routes)
            decorated[:] = [id(schema)]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def describe_edge(schema: dict[str, Any], routes: typing.Sequence[object]) -> None:
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    components["securitySchemes"] = SECURITY_SCHEMES
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        operations = schema.get("paths", {}).get(route.path_format, {})
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if operation is not None:
                _describe_operation(operation, route, method.lower())


def _describe_operation(operation: dict[str, Any], route: APIRoute, method: str) -> None:
    authentication = _authentication(route.dependant)
    statuses = ["500", "default"]
    if route.body_field is not None:
        statuses += ["400", "413", "415", "422"]
    if route.dependant.path_params:
        statuses.append("404")
    if route.dependant.query_params or route.dependant.header_params:
        statuses.append("422")
    if method in UNSAFE_METHODS:
        statuses.append("409")
    if authentication is not None:
        statuses += ["401", "403", "429"]
        operation["security"] = [{"bearer": []}, {"session": []}] + (
            [{}] if authentication == "optional" else []
        )
    responses = operation.setdefault("responses", {})
    for status in statuses:
        responses.setdefault(status, {"description": EDGE_STATUSES[status]})
    for status, answer in responses.items():
        if status[0] in "45" or status == "default":
            # Every error is a problem document, FastAPI's own 422 (which it describes as
            # application/json HTTPValidationError) included; a declared example stays.
            declared: dict[str, Any] = next(iter(answer.get("content", {}).values()), {})
            example = {"example": declared["example"]} if "example" in declared else {}
            answer["content"] = {PROBLEM_CONTENT_TYPE: {"schema": PROBLEM_REF, **example}}


def _authentication(dependant: Dependant) -> str | None:
    """``required`` if a dependency returns a Principal, ``optional`` for one that returns
    ``Principal | None``, else None (a public route)."""
    found: str | None = None
    for call in _calls(dependant):
        returned = _return_type(call)
        if returned is Principal:
            return "required"
        if _is_optional_principal(returned):
            found = "optional"
    return found


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _return_type(call: Callable[..., Any]) -> object:
    try:
        return inspect.signature(call, eval_str=True).return_annotation
    except (NameError, TypeError, ValueError):
        return None


def _is_optional_principal(annotation: object) -> bool:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return Principal in typing.get_args(annotation)
    return False
