"""Settings: one class, the ``TOLLWAY_`` prefix, ``.env`` support.

Secrets (JWT signing key, API-key pepper, webhook secrets) are generated on first
start and kept in ``<data_dir>/secrets.json`` when they are not given, so the embedded
default needs no set-up. In production they must be given explicitly, and a
placeholder value is refused.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlencode

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tollway.errors import ConfigurationError

#: Names of the settings that hold secrets, with the number of random bytes a
#: generated value gets.
SECRET_SETTINGS: dict[str, int] = {
    "secret_key": 32,
    "api_key_pepper": 32,
    "webhook_secret": 32,
}

#: Values that mean "somebody copied the example file and never changed it".
PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "change_me", "secret", "placeholder", "xxx", "todo", "test"}
)


def split_list(value: str) -> list[str]:
    """The entries of a comma-separated setting, without blanks."""
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def _link_host(host: str) -> str:
    """The host a link names for a bind address: a wildcard is reached on localhost."""
    if host in ("0.0.0.0", "::", ""):  # noqa: S104  # compared, not bound
        return "localhost"
    return f"[{host}]" if ":" in host else host


class Settings(BaseSettings):
    """Every setting Tollway reads; the README lists them with their defaults."""

    model_config = SettingsConfigDict(
        env_prefix="TOLLWAY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    env: Literal["development", "test", "production"] = Field(
        "development",
        description="development, test or production; production refuses placeholders",
    )
    database_url: str = Field(
        "sqlite+aiosqlite:///./tollway.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    database_pool_size: int = Field(10, ge=1, description="connections per process (PostgreSQL)")
    database_echo: bool = Field(False, description="log every SQL statement")
    sqlite_synchronous: Literal["full", "normal"] = Field(
        "full", description="SQLite fsync policy: full survives power loss, normal only crashes"
    )
    sqlite_driver: Literal["inline", "thread"] = Field(
        "inline",
        description="inline: SQLite calls run on the event loop (fast, one process); "
        "thread: aiosqlite's helper threads",
    )
    redis_url: str | None = Field(
        None, description="redis://host:port/db for shared rate limits and caches"
    )
    data_dir: Path = Field(
        Path("./var"), description="generated secrets, artifacts and other local state"
    )
    base_url: str = Field(
        "http://127.0.0.1:8000",
        description="public URL, used in links Tollway sends; default "
        "http://{TOLLWAY_HOST}:{TOLLWAY_PORT} (localhost for a wildcard host)",
    )
    pages_url: str | None = Field(
        None,
        description=(
            "where the links in Tollway's mails lead (password reset, email verification, "
            "invitations): pages of your own product that call Tollway's API; "
            "default {TOLLWAY_BASE_URL}/dashboard"
        ),
    )
    host: str = Field("127.0.0.1", description="address `tollway serve` binds")
    port: int = Field(8000, ge=1, le=65535, description="port `tollway serve` binds")
    workers: int = Field(1, ge=1, description="uvicorn worker processes for `tollway serve`")
    trusted_proxies: str = Field(
        "",
        description="comma-separated addresses or networks (10.0.0.0/8) of the proxies "
        "whose X-Forwarded-For and X-Forwarded-Proto are believed; empty: nobody's, "
        "a request counts against its peer's address",
    )
    run_worker_in_process: bool | None = Field(
        None,
        description="run background sweeps inside `serve`; default: on SQLite yes, else no",
    )
    migrate_on_start: bool = Field(True, description="apply database migrations at start-up")
    load_demo: bool = Field(False, description="run the demo loaders at start-up")
    log_level: str = Field("info", description="debug, info, warning or error")
    log_json: bool = Field(True, description="JSON log lines (false: coloured console lines)")
    max_json_body_bytes: int = Field(
        1024 * 1024, ge=1, description="largest JSON request body accepted (bytes)"
    )
    max_upload_bytes: int = Field(
        50 * 1024 * 1024, ge=1, description="largest multipart upload accepted (bytes)"
    )
    idempotency_ttl_seconds: int = Field(
        24 * 3600, ge=60, description="how long an Idempotency-Key answer is replayed"
    )
    sweep_interval_seconds: float = Field(
        1.0, gt=0, description="pause between two rounds of background sweeps"
    )
    catalog_path: Path | None = Field(
        None,
        description="catalog TOML file (plans, features, meters, token packs, taxes) loaded "
        "at start-up; default: the catalog shipped with Tollway",
    )
    payment_provider: Literal["sandbox", "stripe"] = Field(
        "sandbox", description="sandbox (offline, default) or stripe"
    )
    stripe_api_key: SecretStr | None = Field(
        None, description="Stripe secret key (sk_test_... or sk_live_...); needed for stripe"
    )
    stripe_webhook_secret: SecretStr | None = Field(
        None,
        description="the webhook endpoint's signing secret(s) (whsec_...), comma-separated "
        "during a rotation; needed for stripe",
    )
    stripe_api_base: str | None = Field(
        None,
        description="another Stripe API address (tests, stripe-mock); default: Stripe's",
    )
    stripe_max_network_retries: int = Field(
        2, ge=0, le=10, description="retries of a failed Stripe call (same idempotency key)"
    )
    stripe_timeout_seconds: float = Field(
        20.0, gt=0, description="timeout of one Stripe API request"
    )
    credits_hold_ttl_seconds: int = Field(
        30, ge=1, description="how long a credit hold lives when the caller names no ttl_seconds"
    )
    credits_hold_max_ttl_seconds: int = Field(
        3600, ge=1, description="the longest ttl_seconds a credit hold may ask for"
    )
    credits_low_balance_threshold: int = Field(
        10,
        ge=0,
        description="a credits.low_balance event is published when the balance drops below "
        "this (0: never)",
    )
    seller_name: str = Field("Tollway operator", description="seller name printed on invoices")
    seller_address: str = Field("", description="seller postal address printed on invoices")
    seller_tax_id: str = Field("", description="seller VAT / tax number printed on invoices")
    secret_key: SecretStr | None = Field(
        None,
        description="encrypts TOTP secrets and hashes 2FA recovery codes; generated in development",
    )
    api_key_pepper: SecretStr | None = Field(
        None, description="HMAC key for stored API-key hashes; generated in development"
    )
    webhook_secret: SecretStr | None = Field(
        None, description="signs sandbox provider events; generated in development"
    )
    login_max_failures: int = Field(
        5, ge=1, description="failed logins per account or client address before a lock-out"
    )
    login_window_seconds: int = Field(
        900, ge=1, description="the window in which failed logins are counted"
    )
    login_lockout_seconds: int = Field(
        60, ge=1, description="the first lock-out; each repeated one doubles it (up to a day)"
    )
    email_token_max_requests: int = Field(
        5,
        ge=1,
        description="password-reset or verification emails per account within the window",
    )
    email_token_max_requests_per_address: int = Field(
        20, ge=1, description="password-reset requests per client address within the window"
    )
    email_token_window_seconds: int = Field(
        3600, ge=1, description="the window in which those email requests are counted"
    )
    email_token_lockout_seconds: int = Field(
        900, ge=1, description="the first lock-out after too many; each repeated one doubles it"
    )
    session_ttl_seconds: int = Field(
        7 * 24 * 3600, ge=60, description="lifetime of a dashboard cookie session"
    )
    github_client_id: str | None = Field(None, description="GitHub OAuth app client id")
    github_client_secret: SecretStr | None = Field(
        None, description="GitHub OAuth app client secret"
    )
    github_authorize_url: str = Field(
        "https://github.com/login/oauth/authorize", description="GitHub authorization endpoint"
    )
    github_token_url: str = Field(
        "https://github.com/login/oauth/access_token", description="GitHub token endpoint"
    )
    github_userinfo_url: str = Field(
        "https://api.github.com/user", description="GitHub user endpoint"
    )
    github_emails_url: str = Field(
        "https://api.github.com/user/emails",
        description="GitHub endpoint listing the user's emails and whether they are verified",
    )
    google_client_id: str | None = Field(None, description="Google OAuth client id")
    google_client_secret: SecretStr | None = Field(None, description="Google OAuth client secret")
    google_authorize_url: str = Field(
        "https://accounts.google.com/o/oauth2/v2/auth",
        description="Google authorization endpoint",
    )
    google_token_url: str = Field(
        "https://oauth2.googleapis.com/token", description="Google token endpoint"
    )
    google_userinfo_url: str = Field(
        "https://openidconnect.googleapis.com/v1/userinfo",
        description="Google OpenID Connect userinfo endpoint",
    )
    signing_keys: SecretStr | None = Field(
        None,
        description="Ed25519 private keys (base64url, comma-separated, newest last) that sign "
        "artifacts and license tokens; generated into data_dir in development",
    )

    marketplace_storage: Literal["local", "s3"] = Field(
        "local",
        description="where package artifacts live: local (data_dir/artifacts) or s3 "
        "(an S3-compatible bucket)",
    )
    marketplace_max_artifact_bytes: int = Field(
        50 * 1024 * 1024, ge=1, description="largest package artifact accepted (bytes)"
    )
    marketplace_s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint, e.g. https://s3.eu-central-1.amazonaws.com"
    )
    marketplace_s3_bucket: str | None = Field(None, description="bucket for package artifacts")
    marketplace_s3_region: str = Field(
        "us-east-1", description="region the requests are signed for"
    )
    marketplace_s3_prefix: str = Field("", description="key prefix inside the bucket")
    marketplace_s3_access_key_id: str | None = Field(None, description="S3 access key id")
    marketplace_s3_secret_access_key: SecretStr | None = Field(
        None, description="S3 secret access key"
    )
    marketplace_publish_burst: int = Field(
        20, ge=1, description="version uploads an organization may make in a burst"
    )
    marketplace_publish_per_hour: int = Field(
        60, ge=1, description="version uploads an organization's bucket regains per hour"
    )
    marketplace_resolve_max_rounds: int = Field(
        2000, ge=1, description="resolution rounds before a resolve request is refused"
    )
    marketplace_resolve_timeout_ms: int = Field(
        2000, ge=1, description="wall-clock time a resolve request may take (milliseconds)"
    )

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "database_url must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        return value

    @model_validator(mode="after")
    def _base_url_follows_the_bind_address(self) -> Settings:
        if "base_url" not in self.model_fields_set:
            self.base_url = f"http://{_link_host(self.host)}:{self.port}"
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies_are_addresses(cls, value: str) -> str:
        for entry in split_list(value):
            if entry == "*":
                continue
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as error:
                raise ValueError(
                    f"trusted_proxies: {entry!r} is not an address or network"
                ) from error
        return value

    @property
    def trusted_proxy_list(self) -> list[str]:
        return split_list(self.trusted_proxies)

    @field_validator("stripe_api_base")
    @classmethod
    def _stripe_api_base_is_a_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("stripe_api_base must start with http:// or https://")
        return value.rstrip("/") if value else value

    @cached_property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sweeps_in_process(self) -> bool:
        if self.run_worker_in_process is None:
            return self.is_sqlite
        return self.run_worker_in_process

    @property
    def pages_base_url(self) -> str:
        """Where the links people open from Tollway's mails lead, without a trailing slash."""
        return (self.pages_url or f"{self.base_url.rstrip('/')}/dashboard").rstrip("/")

    @property
    def secure_cookies(self) -> bool:
        """Cookies carry ``Secure`` when Tollway is served over https."""
        return self.base_url.lower().startswith("https://")

    @property
    def secrets_file(self) -> Path:
        return self.data_dir / "secrets.json"

    def secret(self, name: str) -> str:
        """The value of secret ``name``; call :func:`ensure_secrets` first."""
        value = getattr(self, name)
        if value is None:
            raise ConfigurationError(f"secret {name} is not set; call ensure_secrets() first")
        assert isinstance(value, SecretStr)
        return value.get_secret_value()

    @property
    def stripe_webhook_secrets(self) -> list[str]:
        """Every configured Stripe webhook secret (several while one is being rotated)."""
        if self.stripe_webhook_secret is None:
            return []
        return split_list(self.stripe_webhook_secret.get_secret_value())


def check_payment_provider(settings: Settings) -> None:
    """Refuse to start when the chosen payment provider lacks its configuration."""
    if settings.payment_provider != "stripe":
        return
    missing = []
    key = settings.stripe_api_key.get_secret_value().strip() if settings.stripe_api_key else ""
    if not key:
        missing.append("TOLLWAY_STRIPE_API_KEY")
    if not settings.stripe_webhook_secrets:
        missing.append("TOLLWAY_STRIPE_WEBHOOK_SECRET")
    if missing:
        raise ConfigurationError(
            "TOLLWAY_PAYMENT_PROVIDER=stripe needs "
            + " and ".join(missing)
            + " (see docs/stripe.md)"
        )
    if not key.startswith(("sk_", "rk_")):
        raise ConfigurationError(
            "TOLLWAY_STRIPE_API_KEY must be a secret or restricted key (sk_... or rk_...), "
            "not a publishable key"
        )


def ensure_secrets(settings: Settings) -> Settings:
    """Fill every missing secret, persisting generated ones; refuse placeholders in production.

    A generated secret is written to ``secrets.json`` (mode 0600) so that it survives a
    restart: losing the API-key pepper would invalidate every key.
    """
    updates: dict[str, SecretStr] = {}
    if settings.env == "production":
        for name in SECRET_SETTINGS:
            value = getattr(settings, name)
            if value is None or value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                raise ConfigurationError(
                    f"TOLLWAY_{name.upper()} must be set to a real secret "
                    "when TOLLWAY_ENV=production"
                )
        return settings

    missing = [name for name in SECRET_SETTINGS if getattr(settings, name) is None]
    if not missing:
        return settings
    stored: dict[str, str] = {}
    if settings.secrets_file.exists():
        stored = json.loads(settings.secrets_file.read_text(encoding="utf-8"))
    changed = False
    for name in missing:
        if name not in stored:
            stored[name] = secrets.token_urlsafe(SECRET_SETTINGS[name])
            changed = True
        updates[name] = SecretStr(stored[name])
    if changed:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = settings.secrets_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(stored, handle, indent=2, sort_keys=True)
        tmp.replace(settings.secrets_file)
    return settings.model_copy(update=updates)


def page_link(pages_url: str, page: str, *, token: str) -> str:
    """The link to ``page`` (``password-reset``, ``invitations/accept``...) under
    :attr:`Settings.pages_base_url`, carrying ``token``."""
    return f"{pages_url}/{page}?{urlencode({'token': token})}"
