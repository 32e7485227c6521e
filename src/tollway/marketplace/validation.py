"""What a package's author sends, checked and normalized: names of licences, categories,
keywords, descriptions, prices and dependency lists. Each rule is stated once and used at
creation, at edit and at upload; a refusal is 422 with its own code."""

from __future__ import annotations

import json
import re

from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression

from tollway.kit.money import normalize_currency
from tollway.marketplace.errors import invalid
from tollway.marketplace.quality import MIN_DESCRIPTION_LENGTH
from tollway.marketplace.versioning import parse_spec, validate_name

MAX_DEPENDENCIES = 100
MAX_KEYWORDS = 20
_CATEGORY = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_KEYWORD = re.compile(r"^[\w][\w .+#-]{0,39}$", re.UNICODE)


def canonical_license(raw: str, *, paid: bool) -> str:
    try:
        expression = str(canonicalize_license_expression(raw.strip()))
    except InvalidLicenseExpression as error:
        raise invalid("invalid_license", f"not an SPDX license expression: {error}") from None
    if "LicenseRef-" in expression and not paid:
        raise invalid(
            "invalid_license",
            "LicenseRef-... (a custom licence) is for paid packages; a free package takes "
            "an SPDX license such as MIT or Apache-2.0",
        )
    return expression


def clean_category(raw: str) -> str:
    category = raw.strip().lower()
    if not _CATEGORY.match(category):
        raise invalid("invalid_category", "a category is 1-40 lowercase letters, digits and '-'")
    return category


def clean_keywords(raw: list[str]) -> list[str]:
    keywords: list[str] = []
    for item in raw:
        keyword = " ".join(item.split()).lower()
        if not _KEYWORD.match(keyword):
            raise invalid(
                "invalid_keywords",
                f"{item[:50]!r}: a keyword is 1-40 letters, digits, spaces or '.+#-'",
            )
        if keyword not in keywords:
            keywords.append(keyword)
    return keywords[:MAX_KEYWORDS]


def clean_description(raw: str) -> str:
    """The same rule at creation and edit as at publish: a description worth listing."""
    description = raw.strip()
    if len(description) < MIN_DESCRIPTION_LENGTH:
        raise invalid(
            "invalid_description",
            f"the description needs at least {MIN_DESCRIPTION_LENGTH} characters",
        )
    return description


def clean_price(amount: int | None, currency: str | None) -> tuple[int, str | None]:
    if not amount:
        return 0, None
    try:
        code = normalize_currency(currency or "")
    except ValueError:
        raise invalid("invalid_currency", f"{currency!r} is not an ISO 4217 currency") from None
    return amount, code


def parse_dependencies(raw: str | None, *, own_name: str) -> list[dict[str, str]]:
    """The ``dependencies`` form field: a JSON list of ``{"name", "spec"}``."""
    if raw is None or not raw.strip():
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        raise invalid(
            "invalid_dependencies", 'dependencies must be JSON: [{"name": ..., "spec": ...}]'
        ) from None
    if not isinstance(items, list) or len(items) > MAX_DEPENDENCIES:
        raise invalid(
            "invalid_dependencies", f"dependencies must be a list of at most {MAX_DEPENDENCIES}"
        )
    dependencies: dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise invalid("invalid_dependencies", 'each dependency is {"name": ..., "spec": ...}')
        spec_text = item.get("spec", "*")
        if not isinstance(spec_text, str):
            raise invalid("invalid_dependencies", "a dependency's spec is a string")
        name = validate_name(item["name"])
        if name == own_name:
            raise invalid("invalid_dependencies", "a package cannot depend on itself")
        if name in dependencies:
            raise invalid("invalid_dependencies", f"{name} is listed twice")
        dependencies[name] = parse_spec(spec_text).text
    return [{"name": name, "spec": spec} for name, spec in dependencies.items()]
