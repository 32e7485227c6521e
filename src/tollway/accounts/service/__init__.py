"""Users, organizations and memberships: the tenancy every other domain hangs on.

One module and singleton per aggregate: :mod:`.users` (``user_service``: registration,
lookups, the platform-admin flag), :mod:`.organizations` (``organization_service``: lookups
and the billing profile), :mod:`.members` (``membership_service``: memberships, roles and
invitations). :mod:`.records` holds the views they answer with and the email rules.
"""
