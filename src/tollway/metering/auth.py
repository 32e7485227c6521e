"""Who may send and read usage."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from tollway.auth.dependencies import require_scope
from tollway.auth.principal import Principal

UsageWriter = Annotated[Principal, Depends(require_scope("usage:write"))]
UsageReader = Annotated[Principal, Depends(require_scope("usage:read"))]
