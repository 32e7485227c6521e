"""Users, organizations (tenants) and memberships with roles."""
