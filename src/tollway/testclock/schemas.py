from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from tollway.kit.numbers import Count


class ClockAdvanceIn(BaseModel):
    seconds: Count = Field(ge=0, description="how far to move business time forward")


class ClockStateOut(BaseModel):
    now: datetime
    offset_seconds: float
    handled: int = Field(description="billing items processed on the way")
