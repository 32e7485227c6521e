"""Tollway's own API goes through the same decision when called with an API key.

Every request that authenticates with an API key is one unit of the ``api`` feature
(meter ``api_calls``) under the plan's per-minute tier limit: over the rate limit it
is answered 429 ``rate_limited`` (``Retry-After``), over the quota 402
``quota_exceeded``, without the feature 403 ``feature_not_in_plan``, with a degraded
license 403 ``license_degraded``; otherwise it proceeds with ``RateLimit-*`` headers.
Endpoints that are themselves metering (``/authorize``, usage ingestion) and the
health, readiness, metrics and documentation routes are exempt. Requests with
access tokens (people in the dashboard or CLI) are not metered.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollway.auth.dependencies import optional_principal
from tollway.entitlements.service import API_FEATURE, EntitlementsRuntime, entitlements_service
from tollway.errors import Forbidden, PaymentRequired, RateLimited, TollwayError, Unauthorized
from tollway.kit.http import problem_response
from tollway.ledger.auth import spending_subject

#: Routes never metered as API calls: (method or None for any, path).
EXEMPT: frozenset[tuple[str | None, str]] = frozenset(
    {
        (None, "/api/v1/authorize"),
        ("POST", "/api/v1/billing/usage"),
        (None, "/api/v1/health"),
        (None, "/api/v1/ready"),
        (None, "/api/v1/openapi.json"),
    }
)
_API_KEY_PREFIXES = (b"bearer tw_live_", b"bearer tw_test_")


def _is_exempt(method: str, path: str) -> bool:
    if not path.startswith("/api/v1/") or path.startswith("/api/v1/docs"):
        return True
    return (None, path) in EXEMPT or (method, path) in EXEMPT


def _sends_api_key(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bool(value[:15].lower() in _API_KEY_PREFIXES)
    return False


class ApiUsageMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or _is_exempt(scope["method"], scope["path"])
            or not _sends_api_key(scope)
        ):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            principal = await optional_principal(request)
        except Unauthorized:
            # Let the route answer the 401 the way it always does.
            await self.app(scope, receive, send)
            return
        if principal is None or principal.kind != "api_key":
            await self.app(scope, receive, send)
            return
        runtime: EntitlementsRuntime = request.app.state.entitlements
        try:
            decision = await entitlements_service.decide(
                runtime,
                organization_id=principal.organization_id,
                subject=spending_subject(principal),
                feature=API_FEATURE,
                tier_rate_limit=True,
                source="middleware",
            )
        except TollwayError as error:
            await problem_response(error)(scope, receive, send)
            return
        if not decision.allowed:
            denial = _denial(decision.code, decision.detail, decision.retry_after)
            denial.headers = {**denial.headers, **decision.headers}
            await problem_response(denial)(scope, receive, send)
            return
        extra = [
            (name.lower().encode(), value.encode()) for name, value in decision.headers.items()
        ]
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _denial(code: str | None, detail: str | None, retry_after: int | None) -> TollwayError:
    if code in ("rate_limited", "too_frequent", "temporarily_blocked"):
        return RateLimited(detail, code=code, retry_after=retry_after or 1)
    if code == "quota_exceeded":
        return PaymentRequired(detail, code=code)
    return Forbidden(detail, code=code or "forbidden")
