"""Who may read and manage an organization's members."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from tollway.auth.dependencies import require_role
from tollway.auth.principal import Principal
from tollway.auth.scopes import ROLES

AnyMember = Annotated[Principal, Depends(require_role(*ROLES))]
MemberManager = Annotated[Principal, Depends(require_role("owner", "admin"))]
