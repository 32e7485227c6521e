"""Housekeeping of the identity tables: expired OAuth states, dashboard sessions and
revoked-token rows and two-factor challenges, password-reset and verification tokens a
week past their expiry, and login throttles quiet for a day."""

from __future__ import annotations

from tollway.auth import repository
from tollway.auth.credentials import credential_service
from tollway.auth.oauth import oauth_service
from tollway.auth.sessions import dashboard_session_service
from tollway.auth.throttle import login_throttle_service
from tollway.kit.sweeps import SweepContext, register_sweep


@register_sweep("auth.purge_expired", interval_seconds=600)
async def purge_expired(context: SweepContext) -> int:
    """Delete rows whose only purpose has passed; running it twice deletes nothing more."""
    now = context.wall.now()
    async with context.database.transaction() as session:
        purged = await oauth_service.purge(session, now=now)
        purged += await dashboard_session_service.purge(session, now=now)
        purged += await login_throttle_service.purge(session, now=now)
        purged += await repository.revoked_tokens(session).purge_expired(now=now)
        purged += await repository.two_factor_challenges(session).purge_expired(now=now)
        purged += await credential_service.purge(session, now=now)
    return purged
