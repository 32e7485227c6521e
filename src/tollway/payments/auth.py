"""Who may call the payments endpoints: the organization's billing scopes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from tollway.auth.dependencies import require_scope
from tollway.auth.principal import Principal

BillingReader = Annotated[Principal, Depends(require_scope("billing:read"))]
BillingWriter = Annotated[Principal, Depends(require_scope("billing:write"))]
