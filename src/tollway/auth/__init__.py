"""Who is calling: principals, scopes, roles and the dependencies endpoints declare."""
