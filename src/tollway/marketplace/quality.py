"""The quality score (0-100) of a package and the checks that block publishing.

================================  ======  =========================================
part                              points  rule
================================  ======  =========================================
description                       25      1 point per 8 characters, at most 25
license                           15      an SPDX license (``LicenseRef-`` only: 5)
keywords                          15      5 per keyword, at most 15
recent release                    20      newest published version < 180 days: 20,
                                          < 365 days: 10
downloads                         15      3 x log10(1 + downloads), at most 15
not only yanked                   10      at least one published or deprecated version
================================  ======  =========================================

It is computed when a version is published, deprecated or yanked (so the
"recent release" part is as of the last lifecycle change).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

MIN_DESCRIPTION_LENGTH = 20


@dataclass(frozen=True, slots=True)
class QualityInput:
    description: str
    license: str
    keywords: list[str]
    latest_published_at: datetime | None
    downloads: int
    has_live_version: bool


def quality_score(facts: QualityInput, *, now: datetime) -> int:
    score = min(25, len(facts.description.strip()) // 8)
    only_refs = all(
        part.startswith("LicenseRef-")
        for part in facts.license.replace("(", " ").replace(")", " ").split()
        if part not in ("AND", "OR", "WITH")
    )
    score += 5 if only_refs else 15
    score += min(15, 5 * len(facts.keywords))
    if facts.latest_published_at is not None:
        age = now - facts.latest_published_at
        if age < timedelta(days=180):
            score += 20
        elif age < timedelta(days=365):
            score += 10
    score += min(15, round(3 * math.log10(1 + max(0, facts.downloads))))
    if facts.has_live_version:
        score += 10
    return max(0, min(100, score))
