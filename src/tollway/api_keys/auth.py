"""Who may manage API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from tollway.auth.dependencies import require_scope
from tollway.auth.principal import Principal

KeyManager = Annotated[Principal, Depends(require_scope("keys:manage"))]
