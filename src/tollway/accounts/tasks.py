"""Expired invitations are deleted: they can no longer be accepted."""

from __future__ import annotations

from tollway.accounts.service.members import membership_service
from tollway.kit.sweeps import SweepContext, register_sweep


@register_sweep("accounts.purge_expired_invitations", interval_seconds=3600)
async def purge_expired_invitations(context: SweepContext) -> int:
    async with context.database.transaction() as session:
        return await membership_service.purge_expired_invitations(session, now=context.wall.now())
