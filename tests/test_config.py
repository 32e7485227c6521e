from pathlib import Path

import pytest

from tollway.config import Settings, ensure_secrets
from tollway.errors import ConfigurationError


class TestSecrets:
    def test_missing_secrets_are_generated_once_and_kept(self, tmp_path: Path) -> None:
        first = ensure_secrets(Settings(data_dir=tmp_path))
        second = ensure_secrets(Settings(data_dir=tmp_path))
        assert first.secret("api_key_pepper") == second.secret("api_key_pepper")
        assert len(first.secret("secret_key")) >= 40
        assert (tmp_path / "secrets.json").stat().st_mode & 0o777 == 0o600

    def test_given_secrets_win_over_generated_ones(self, tmp_path: Path) -> None:
        settings = ensure_secrets(Settings(data_dir=tmp_path, secret_key="given-value-xyz"))
        assert settings.secret("secret_key") == "given-value-xyz"

    @pytest.mark.parametrize("value", ["changeme", "", "secret"])
    def test_production_refuses_placeholder_secrets(self, tmp_path: Path, value: str) -> None:
        settings = Settings(
            env="production",
            data_dir=tmp_path,
            secret_key=value,
            api_key_pepper="a-real-pepper-value-123",
            webhook_secret="a-real-webhook-secret-1",
        )
        with pytest.raises(ConfigurationError, match="TOLLWAY_SECRET_KEY"):
            ensure_secrets(settings)

    def test_production_refuses_to_generate_secrets(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError):
            ensure_secrets(Settings(env="production", data_dir=tmp_path))
        assert not (tmp_path / "secrets.json").exists()


class TestSettings:
    def test_settings_come_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("TOLLWAY_PORT", "9001")
        monkeypatch.setenv("TOLLWAY_REDIS_URL", "redis://127.0.0.1:6379/3")
        settings = Settings()
        assert settings.port == 9001
        assert settings.redis_url == "redis://127.0.0.1:6379/3"

    def test_unsupported_databases_are_refused(self) -> None:
        with pytest.raises(ValueError, match="database_url"):
            Settings(database_url="mysql://root@localhost/tollway")

    def test_sweeps_run_in_process_only_on_sqlite_by_default(self) -> None:
        assert Settings().sweeps_in_process
        assert not Settings(database_url="postgresql+asyncpg://u@h/db").sweeps_in_process


class TestBaseUrl:
    def test_the_base_url_follows_the_port_when_not_given(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("TOLLWAY_PORT", "9001")
        assert Settings().base_url == "http://127.0.0.1:9001"
        assert Settings(port=9100).base_url == "http://127.0.0.1:9100"

    def test_a_wildcard_bind_address_links_to_localhost(self) -> None:
        assert Settings(host="0.0.0.0", port=9002).base_url == "http://localhost:9002"  # noqa: S104
        assert Settings(host="::", port=9003).base_url == "http://localhost:9003"

    def test_a_given_base_url_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TOLLWAY_BASE_URL", "https://billing.example.com")
        settings = Settings(port=9004)
        assert settings.base_url == "https://billing.example.com"
        assert settings.pages_base_url == "https://billing.example.com/dashboard"


class TestTrustedProxies:
    def test_nobody_is_trusted_by_default(self) -> None:
        assert Settings().trusted_proxy_list == []

    def test_addresses_and_networks_are_listed(self) -> None:
        settings = Settings(trusted_proxies="10.0.0.5, 10.1.0.0/16,::1")
        assert settings.trusted_proxy_list == ["10.0.0.5", "10.1.0.0/16", "::1"]

    def test_a_name_that_is_no_address_is_refused(self) -> None:
        with pytest.raises(ValueError, match="trusted_proxies"):
            Settings(trusted_proxies="10.0.0.5,proxy.internal")
