"""The accounts domain's errors."""

from __future__ import annotations

from tollway.errors import Conflict, NotFound, Unprocessable


class EmailTaken(Conflict):
    code = "email_taken"
    title = "Email already registered"


class InvitationNotFound(NotFound):
    code = "invitation_not_found"
    title = "No such invitation"


class LastOwner(Conflict):
    code = "last_owner"
    title = "The last owner cannot leave"


class InvalidEmail(Unprocessable):
    code = "invalid_email"
    title = "Invalid email address"


class InvalidCountry(Unprocessable):
    code = "invalid_country"
    title = "Unknown country"
