"""Who spends: the abuse battery counts per user, or per API key when no user is known."""

from __future__ import annotations

from tollway.auth.principal import Principal


def spending_subject(principal: Principal) -> str:
    if principal.user_id is not None:
        return f"user:{principal.user_id}"
    return principal.actor
