"""The marketplace's errors: each a stable ``code`` and an HTTP status (docs/marketplace.md)."""

from __future__ import annotations

from typing import Any

from tollway.errors import Conflict, Forbidden, NotFound, PaymentRequired, Unprocessable


class PackageNotFound(NotFound):
    code = "package_not_found"
    title = "Package not found"


class VersionNotFound(NotFound):
    code = "version_not_found"
    title = "Version not found"


class PackageNameTaken(Conflict):
    code = "package_name_taken"
    title = "Package name taken"


class DuplicateVersion(Conflict):
    code = "duplicate_version"
    title = "Version already exists"


class InvalidTransition(Conflict):
    code = "invalid_transition"
    title = "Not possible in this state"


class PackagePublished(Conflict):
    code = "package_published"
    title = "Package has published versions"


class NotPackageOwner(Forbidden):
    code = "not_package_owner"
    title = "Not the package's author"


class PurchaseRequired(PaymentRequired):
    code = "purchase_required"
    title = "Purchase required"


class PackageUnavailable(Conflict):
    code = "package_unavailable"
    title = "Package unavailable"


class OrderNotFound(NotFound):
    code = "order_not_found"
    title = "Order not found"


class OrderNotPaid(Conflict):
    code = "order_not_paid"
    title = "Order not paid"


class OwnPackage(Conflict):
    code = "own_package"
    title = "Your own package"


def invalid(code: str, detail: str, **extra: Any) -> Unprocessable:
    """A 422 with the marketplace's own ``code`` (``invalid_license``, ``package_invalid`` ...)."""
    return Unprocessable(detail, code=code, **extra)
