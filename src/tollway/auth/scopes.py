"""Scopes an API key or a user's role grants, and the roles of an organization.

Every endpoint declares the scope it needs (``require_scope``) or the role
(``require_role``). Users get the scopes of their role; API keys get the scopes
chosen when they were made (by default :data:`DEFAULT_API_KEY_SCOPES`).
"""

from __future__ import annotations

from typing import Final, Literal

Role = Literal["owner", "admin", "billing", "member"]
ROLES: Final[tuple[Role, ...]] = ("owner", "admin", "billing", "member")

#: scope -> what it allows
SCOPES: Final[dict[str, str]] = {
    "authorize": "ask for entitlement decisions (POST /authorize)",
    "usage:write": "record usage events",
    "usage:read": "read usage and entitlements",
    "credits:read": "read the credit balance and ledger",
    "credits:write": "reserve, commit and release credits",
    "billing:read": "read the subscription, invoices and payment methods",
    "billing:write": "change the subscription and payment methods",
    "billing:purchase": "spend the saved payment method off-session: buy token packs and "
    "paid packages (never in the default set of a key)",
    "marketplace:read": "search, resolve and download packages",
    "marketplace:purchase": "buy packages",
    "marketplace:publish": "create packages and publish versions",
    "keys:manage": "create, list and revoke API keys",
    "members:manage": "invite and remove members, change roles",
    "webhooks:manage": "manage outgoing webhook endpoints",
}
ALL_SCOPES: Final[frozenset[str]] = frozenset(SCOPES)

#: The scope of an API key that may charge the organization's saved card off-session.
PURCHASE_SCOPE: Final = "billing:purchase"
#: The roles of the users who may: the people who answer for the money.
SPENDING_ROLES: Final[tuple[Role, ...]] = ("owner", "billing")

_READ = frozenset({"usage:read", "credits:read", "billing:read", "marketplace:read"})

ROLE_SCOPES: Final[dict[str, frozenset[str]]] = {
    "owner": ALL_SCOPES,
    "admin": ALL_SCOPES - {PURCHASE_SCOPE},
    "billing": _READ | {"billing:write", "credits:write", "marketplace:purchase", PURCHASE_SCOPE},
    "member": _READ
    | {"authorize", "usage:write", "credits:write", "marketplace:purchase", "marketplace:publish"},
}

#: What a new API key may do unless its creator narrows it: use the product, not
#: administer the organization, and never spend its saved card (``billing:purchase``
#: must be asked for by name).
DEFAULT_API_KEY_SCOPES: Final[frozenset[str]] = frozenset(
    {
        "authorize",
        "usage:write",
        "usage:read",
        "credits:read",
        "credits:write",
        "marketplace:read",
        "marketplace:purchase",
    }
)
