"""The provider ``TOLLWAY_PAYMENT_PROVIDER`` names."""

from __future__ import annotations

from tollway.payments.env import PaymentEnv
from tollway.payments.errors import ProviderNotConfigured
from tollway.payments.providers.protocol import PaymentProvider
from tollway.payments.providers.sandbox import Deliver, SandboxProvider
from tollway.payments.providers.stripe import StripeProvider


def provider_for(
    env: PaymentEnv, *, name: str | None = None, deliver: Deliver | None = None
) -> PaymentProvider:
    """The configured provider (or ``name``, which must be the configured one, except
    the sandbox: its events can always be verified). ``deliver`` receives the events
    the sandbox sends; the caller chooses where they go."""
    chosen = name or env.settings.payment_provider
    if chosen == "sandbox":
        return sandbox_for(env, deliver=deliver)
    if chosen == "stripe" and env.settings.payment_provider == "stripe":
        return StripeProvider.from_settings(env.settings, env.clock)
    raise ProviderNotConfigured(f"the payment provider {chosen!r} is not configured here")


def sandbox_for(env: PaymentEnv, *, deliver: Deliver | None = None) -> SandboxProvider:
    return SandboxProvider(
        secret=env.settings.secret("webhook_secret"),
        clock=env.clock,
        base_url=env.settings.base_url,
        deliver=deliver,
    )
