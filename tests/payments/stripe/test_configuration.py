"""Start-up on the stripe provider: missing configuration is refused, clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tollway.app import create_app
from tollway.cli import app as cli
from tollway.config import Settings
from tollway.errors import ConfigurationError

runner = CliRunner()


def stripe_settings(tmp_path: Path, **values: str) -> Settings:
    return Settings(data_dir=tmp_path, migrate_on_start=False, payment_provider="stripe", **values)


class TestStartUp:
    @pytest.mark.parametrize(
        ("values", "missing"),
        [
            ({}, "TOLLWAY_STRIPE_API_KEY and TOLLWAY_STRIPE_WEBHOOK_SECRET"),
            ({"stripe_api_key": "sk_test_123"}, "TOLLWAY_STRIPE_WEBHOOK_SECRET"),
            ({"stripe_webhook_secret": "whsec_123"}, "TOLLWAY_STRIPE_API_KEY"),
            ({"stripe_api_key": " ", "stripe_webhook_secret": " , "}, "TOLLWAY_STRIPE_API_KEY"),
        ],
    )
    def test_the_stripe_provider_without_its_keys_refuses_to_start_naming_them(
        self, tmp_path: Path, values: dict[str, str], missing: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=missing):
            create_app(stripe_settings(tmp_path, **values))

    def test_a_publishable_key_is_refused(self, tmp_path: Path) -> None:
        settings = stripe_settings(
            tmp_path, stripe_api_key="pk_test_123", stripe_webhook_secret="whsec_1"
        )
        with pytest.raises(ConfigurationError, match="not a publishable key"):
            create_app(settings)

    def test_a_complete_configuration_starts_and_rotating_secrets_are_split(
        self, tmp_path: Path
    ) -> None:
        settings = stripe_settings(
            tmp_path, stripe_api_key="sk_test_123", stripe_webhook_secret="whsec_a, whsec_b"
        )
        assert create_app(settings).state.settings.stripe_webhook_secrets == ["whsec_a", "whsec_b"]

    def test_an_api_base_that_is_not_a_url_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="stripe_api_base"):
            stripe_settings(tmp_path, stripe_api_base="localhost:12111")

    def test_the_cli_says_what_is_missing_and_exits_2(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("TOLLWAY_PAYMENT_PROVIDER", "stripe")
        monkeypatch.setenv("TOLLWAY_DATA_DIR", str(tmp_path))
        monkeypatch.delenv("TOLLWAY_STRIPE_API_KEY", raising=False)
        monkeypatch.delenv("TOLLWAY_STRIPE_WEBHOOK_SECRET", raising=False)
        result = runner.invoke(cli, ["serve"])
        assert result.exit_code == 2
        assert "TOLLWAY_STRIPE_API_KEY" in result.output
