"""The plans domain's errors."""

from __future__ import annotations

from tollway.errors import NotFound, Unprocessable


class UnknownPlan(NotFound):
    code = "unknown_plan"
    title = "No such plan"


class OrganizationNotFound(NotFound):
    code = "organization_not_found"
    title = "No such organization"


class UnknownFeature(Unprocessable):
    code = "unknown_feature"
    title = "No such feature"


class UnknownMeter(Unprocessable):
    code = "unknown_meter"
    title = "No such meter"


class InvalidLicenseState(Unprocessable):
    code = "invalid_license_state"
    title = "Invalid license state"


class InvalidOverride(Unprocessable):
    code = "invalid_override"
    title = "Invalid override"
