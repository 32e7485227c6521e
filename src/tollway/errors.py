"""The error hierarchy every service raises; one handler renders it as problem+json.

Each error carries a stable snake_case ``code`` that clients switch on, an HTTP
status, and optional extra members that the problem document includes (RFC 9457
allows extension members). ``docs/errors.md`` lists every code.
"""

from __future__ import annotations

from typing import Any

PROBLEM_TYPE_BASE = "https://tollway.dev/problems/"


class TollwayError(Exception):
    """An expected failure: rendered as a 4xx problem, never logged as a crash."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"
    #: Keep the request's database changes although the request fails (for example a
    #: failed-login counter); the default is to roll back.
    commit_transaction: bool = False

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.detail = detail or self.title
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.extra = extra
        super().__init__(self.detail)

    def problem(self, *, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance is not None:
            body["instance"] = instance
        body.update(self.extra)
        return body


class BadRequest(TollwayError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class Unauthorized(TollwayError):
    status = 401
    code = "unauthenticated"
    title = "Authentication required"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        headers = kwargs.pop("headers", None) or {"WWW-Authenticate": "Bearer"}
        super().__init__(detail, headers=headers, **kwargs)


class PaymentRequired(TollwayError):
    status = 402
    code = "payment_required"
    title = "Payment required"


class Forbidden(TollwayError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(TollwayError):
    status = 404
    code = "not_found"
    title = "Not found"


class MethodNotAllowed(TollwayError):
    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"


class Conflict(TollwayError):
    status = 409
    code = "conflict"
    title = "Conflict"


class PayloadTooLarge(TollwayError):
    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class UnsupportedMediaType(TollwayError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class Unprocessable(TollwayError):
    status = 422
    code = "validation_error"
    title = "Invalid input"


class RateLimited(TollwayError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int, **kwargs: Any) -> None:
        headers = {"Retry-After": str(max(1, retry_after)), **(kwargs.pop("headers", None) or {})}
        super().__init__(detail, headers=headers, retry_after=max(1, retry_after), **kwargs)


class ServiceUnavailable(TollwayError):
    status = 503
    code = "service_unavailable"
    title = "Service unavailable"


class ConfigurationError(Exception):
    """Tollway cannot start with the settings it was given."""
