"""The outermost middleware: request ids, access logs, metrics, and the last-resort 500."""

from __future__ import annotations

import re
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollway.errors import TollwayError
from tollway.kit.http import problem_response
from tollway.kit.ids import random_bytes
from tollway.observability.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = structlog.get_logger("tollway.http")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class InternalError(TollwayError):
    status = 500
    code = "internal_error"
    title = "Internal server error"


class RequestContextMiddleware:
    """Gives each request an id (``X-Request-ID``, accepted from the client when sane),
    binds it to every log line, logs one access line, records metrics by route template,
    and turns an unhandled exception into a problem+json 500 that shows no internals."""

    def __init__(self, app: ASGIApp, *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = (
            incoming if incoming and _VALID_REQUEST_ID.match(incoming) else random_bytes(16).hex()
        )
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                log.exception("request.crashed", method=scope["method"], path=scope["path"])
                if not response_started:
                    error = InternalError(
                        "something went wrong on our side; quote the request_id when reporting it"
                    )
                    await problem_response(error, request_id=request_id)(
                        scope, receive, send_with_id
                    )
            finally:
                elapsed = time.perf_counter() - started
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
                HTTP_LATENCY.labels(scope["method"], template).observe(elapsed)
                if self.access_log:
                    log.info(
                        "request",
                        method=scope["method"],
                        path=scope["path"],
                        route=template,
                        status=status,
                        duration_ms=round(elapsed * 1000, 2),
                    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
