"""The views the accounts services answer with, and the rules of an email address and an
invitation token."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic.networks import validate_email
from pydantic_core import PydanticCustomError

from tollway.accounts.errors import InvalidEmail
from tollway.accounts.models import Invitation, Membership, Organization, User

INVITATION_TTL = timedelta(days=14)


INVITATION_TOKEN_PREFIX = "twi_"  # noqa: S105 - a visible prefix, not a secret


#: The dashboard page an invitation link opens; it accepts through the API.
INVITATION_ACCEPT_PAGE = "invitations/accept"


#: Roles that manage members; only owners make, unmake or remove owners.
MANAGER_ROLES = frozenset({"owner", "admin"})


@dataclass(frozen=True, slots=True)
class Member:
    membership: Membership
    user: User


@dataclass(frozen=True, slots=True)
class IssuedInvitation:
    """A new invitation and its accept token, which exists only in this answer and in
    the ``member.invited`` event (the database keeps its SHA-256)."""

    invitation: Invitation
    token: str
    accept_url: str


@dataclass(frozen=True, slots=True)
class AddedMember:
    member: Member | None
    invitation: IssuedInvitation | None


@dataclass(frozen=True, slots=True)
class AcceptedInvitation:
    membership: Membership
    organization: Organization


@dataclass(frozen=True, slots=True)
class Tenancy:
    user: User
    organization: Organization
    membership: Membership


def normalize_email(email: str) -> str:
    return email.strip().lower()


def valid_email(email: str) -> str:
    """``email`` normalized, if it is an address the API's ``EmailStr`` fields accept
    (the same email-validator rules: an @, a dotted domain, no special-use names such as
    ``.test`` or ``localhost``); else 422 ``invalid_email``. Every way of creating an
    account checks with it, so none creates one its owner cannot log in with."""
    try:
        _, address = validate_email(email.strip())
    except PydanticCustomError as error:
        raise InvalidEmail(str(error)) from error
    return normalize_email(address)


def hash_invitation_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class OrganizationView:
    """What callers show of an organization; cheap to cache."""

    id: str
    name: str
    billing_country: str | None
    billing_email: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UserView:
    """What callers show of a user (``/auth/me``, each dashboard page); cheap to cache."""

    id: str
    email: str
    name: str | None
    email_verified: bool
    totp_enabled: bool
    is_platform_admin: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MembershipView:
    """A user's current role in an organization (``None``: not a member), what every
    authenticated request is authorized by; cheap to cache."""

    role: str | None


@dataclass(frozen=True, slots=True)
class BillingProfile:
    """Who invoices are made out to; ``country`` selects the catalog's tax rate."""

    name: str | None
    country: str | None
    address_lines: list[str]
    tax_id: str | None
