"""HTTP plumbing shared by every route: problem+json answers and request-body guards."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request, params
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollway.errors import (
    PROBLEM_TYPE_BASE,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    TollwayError,
    Unprocessable,
    UnsupportedMediaType,
)

PROBLEM_CONTENT_TYPE = "application/problem+json"
BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH", b"DELETE"})
FORM_MEDIA_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})
#: FastAPI's detail when it cannot read a request body (json.loads or the form parser raised).
BODY_PARSE_FAILURE = "There was an error parsing the body"
_STATUS_CODES = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def problem_response(error: TollwayError, *, request_id: str | None = None) -> Response:
    body = error.problem()
    if request_id is not None:
        body["request_id"] = request_id
    return Response(
        content=orjson.dumps(body),
        status_code=error.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=error.headers,
    )


def _request_id(request: Request) -> str | None:
    value = structlog.contextvars.get_contextvars().get("request_id")
    return str(value) if value is not None else None


async def _tollway_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, TollwayError)
    return problem_response(error, request_id=_request_id(request))


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _malformed_json() -> TollwayError:
    return BadRequest(
        "the request body is not valid JSON (UTF-8, nested at most a few hundred levels)",
        code="malformed_json",
    )


def _wrong_media_type(request: Request) -> TollwayError | None:
    """A 415 when the body's media type is not the one the matched route reads.

    FastAPI reads the body by the route's declaration: a JSON route given a form sees
    bytes, a form route given JSON sees an empty form, and both end as a 422 about the
    whole body. The route (``scope["route"]``) says which media type it wanted.
    """
    route = request.scope.get("route")
    body_field = getattr(route, "body_field", None)
    if body_field is None:
        return None
    media_type = _media_type(request)
    if isinstance(body_field.field_info, params.Form):
        if media_type in FORM_MEDIA_TYPES:
            return None
        return UnsupportedMediaType(f"send multipart/form-data (got {media_type or 'none'})")
    if not media_type or _is_json(media_type):
        return None
    return UnsupportedMediaType(f"send application/json (got {media_type})")


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    errors = error.errors()
    wrong_media_type = _wrong_media_type(request)
    if wrong_media_type is not None:
        problem: TollwayError = wrong_media_type
    elif any(item.get("type") == "json_invalid" for item in errors):
        problem = _malformed_json()
    else:
        problem = Unprocessable(
            "the request has invalid fields; see errors",
            errors=[
                {
                    "loc": list(item.get("loc", ())),
                    "msg": item.get("msg", ""),
                    "type": item.get("type", ""),
                }
                for item in errors
            ],
        )
    return problem_response(problem, request_id=_request_id(request))


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    if isinstance(error.__cause__, TollwayError):
        # FastAPI wraps failures while reading the body (our size guard among them) in a 400.
        return problem_response(error.__cause__, request_id=_request_id(request))
    if error.status_code == 400 and _media_type(request) in FORM_MEDIA_TYPES:
        # Starlette's form parser: no boundary, a part without a name, too many parts...
        problem: TollwayError = BadRequest(
            f"the form body cannot be parsed: {error.detail}", code="malformed_multipart"
        )
        return problem_response(problem, request_id=_request_id(request))
    if error.status_code == 400 and error.detail == BODY_PARSE_FAILURE:
        # json.loads failed otherwise than on syntax: not UTF-8, or nested too deeply.
        return problem_response(_malformed_json(), request_id=_request_id(request))
    error_class = _STATUS_CODES.get(error.status_code)
    if error_class is not None:
        problem = error_class(
            None if error.detail in (None, "Not Found", "Method Not Allowed") else str(error.detail)
        )
    else:
        problem = TollwayError(
            str(error.detail), code=f"http_{error.status_code}", status=error.status_code
        )
    if error.headers:
        problem.headers = {**problem.headers, **error.headers}
    return problem_response(problem, request_id=_request_id(request))


def install_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TollwayError, _tollway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


class BodyGuardMiddleware:
    """Refuses request bodies of the wrong type (415) or over the size limit (413).

    JSON and form bodies are limited to ``max_json_bytes``; multipart uploads to
    ``max_upload_bytes``. A declared Content-Length over the limit is refused before
    reading; a chunked body is counted as it streams in.
    """

    def __init__(self, app: ASGIApp, *, max_json_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"].encode() not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_length_raw = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        try:
            content_length = int(content_length_raw) if content_length_raw is not None else None
        except ValueError:
            await self._refuse(scope, send, BadRequest("Content-Length is not a number"))
            return
        if not chunked and not content_length:
            await self.app(scope, receive, send)
            return

        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";")[0]
        content_type = content_type.strip().lower()
        if content_type == "multipart/form-data":
            limit = self.max_upload_bytes
        elif _is_json(content_type) or content_type == "application/x-www-form-urlencoded":
            limit = self.max_json_bytes
        else:
            await self._refuse(
                scope,
                send,
                UnsupportedMediaType(
                    f"send application/json (got {content_type or 'no Content-Type'})"
                ),
            )
            return
        too_large = PayloadTooLarge(f"the request body is larger than {limit} bytes", limit=limit)
        if content_length is not None and content_length > limit:
            await self._refuse(scope, send, too_large)
            return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, scope: Scope, send: Send, error: TollwayError) -> None:
        value = structlog.contextvars.get_contextvars().get("request_id")
        response = problem_response(error, request_id=str(value) if value else None)
        await response(scope, _empty_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def problem_example(code: str, status: int, title: str) -> dict[str, Any]:
    """An OpenAPI example of a problem document, for endpoint ``responses=``."""
    return {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": title,
        "code": code,
    }
