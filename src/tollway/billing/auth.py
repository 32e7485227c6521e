"""Who may call billing: scope and role requirements of its endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from tollway.auth.dependencies import require_role, require_scope
from tollway.auth.principal import Principal

BillingReader = Annotated[Principal, Depends(require_scope("billing:read"))]
BillingWriter = Annotated[Principal, Depends(require_scope("billing:write"))]
#: People of the organization in these roles (an API key has no role).
BillingManager = Annotated[Principal, Depends(require_role("owner", "admin", "billing"))]
