"""Who spends: the one subject the rate limits and the abuse battery count.

``POST /api/v1/authorize``, Tollway's own API and ``POST /api/v1/credits/reservations``
all name the caller this way, so one caller has one set of limits on every path:

- a person (access token or dashboard session), and every API key a person created:
  ``user:<user id>`` (making more keys does not multiply the limits);
- an API key no person created: ``api_key:<key id>``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from tollway.auth.dependencies import require_scope
from tollway.auth.principal import Principal

CreditsReader = Annotated[Principal, Depends(require_scope("credits:read"))]
CreditsWriter = Annotated[Principal, Depends(require_scope("credits:write"))]


def spending_subject(principal: Principal) -> str:
    if principal.user_id is not None:
        return f"user:{principal.user_id}"
    return principal.actor
