from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer
from sqlalchemy.orm import Mapped, mapped_column

from tollway.kit.models import Base


class ClockOffset(Base):
    """The sandbox test clock: how far business time runs ahead of the wall clock.

    One row; every process reads it at start and follows it, so an advance made
    through one process (or the CLI) holds for all of them and survives restarts.
    """

    __tablename__ = "clock_offsets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset_microseconds: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    updated_at: Mapped[datetime | None] = mapped_column()
