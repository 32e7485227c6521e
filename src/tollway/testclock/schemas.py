from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from tollway.kit.numbers import Count


class ClockAdvance(BaseModel):
    seconds: Count = Field(ge=0, description="how far to move business time forward")


class ClockState(BaseModel):
    now: datetime
    offset_seconds: float
    handled: int = Field(description="billing items processed on the way")
