import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tollway.auth.credentials import PASSWORD_RESET
from tollway.auth.throttle import ThrottlePolicy, account_key, login_throttle_service, scoped_key
from tollway.cli import app
from tollway.cli._context import load_settings, run_async
from tollway.kit.sweeps import SweepContext

runner = CliRunner()


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TOLLWAY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("TOLLWAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TOLLWAY_LOG_LEVEL", "warning")
    return tmp_path


class TestDatabaseCommands:
    def test_current_reports_pending_then_upgrade_applies_them(self, environment: Path) -> None:
        pending = runner.invoke(app, ["db", "current"])
        assert pending.exit_code == 1
        assert "migrations pending" in pending.output
        upgraded = runner.invoke(app, ["db", "upgrade"])
        assert upgraded.exit_code == 0, upgraded.output
        current = runner.invoke(app, ["db", "current"])
        assert current.exit_code == 0, current.output


class TestDemoAndAudit:
    def test_demo_can_run_twice(self, environment: Path) -> None:
        first = runner.invoke(app, ["demo"])
        second = runner.invoke(app, ["demo"])
        assert first.exit_code == 0, first.output
        assert second.exit_code == 0, second.output

    def test_audit_verify_passes_on_an_intact_chain(self, environment: Path) -> None:
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        result = runner.invoke(app, ["audit", "verify"])
        assert result.exit_code == 0, result.output
        assert "intact" in result.output


class TestConfiguration:
    def test_a_bad_setting_is_a_clear_message_not_a_traceback(
        self, environment: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("TOLLWAY_DATABASE_URL", "mysql://nope")
        result = runner.invoke(app, ["db", "upgrade"])
        assert result.exit_code == 2
        assert "configuration error" in result.output


class TestAdminCommands:
    def test_admin_create_makes_a_platform_admin_who_can_log_in(self, environment: Path) -> None:
        result = runner.invoke(
            app,
            ["admin", "create", "--email", "ops@example.com", "--password", "a strong admin pass"],
        )
        assert result.exit_code == 0, result.output
        assert "created platform admin ops@example.com" in result.output
        again = runner.invoke(
            app,
            ["admin", "create", "--email", "ops@example.com", "--password", "a strong admin pass"],
        )
        assert again.exit_code == 0, again.output
        assert "is now a platform admin" in again.output

    def test_admin_create_refuses_a_weak_password(self, environment: Path) -> None:
        result = runner.invoke(
            app, ["admin", "create", "--email", "ops@example.com", "--password", "short"]
        )
        assert result.exit_code == 1
        assert "weak_password" in result.output

    @pytest.mark.parametrize("email", ["not-an-email", "ops@tollway.test", "ops@localhost"])
    def test_admin_create_refuses_an_email_the_login_would_refuse(
        self, environment: Path, email: str
    ) -> None:
        result = runner.invoke(
            app, ["admin", "create", "--email", email, "--password", "a strong admin pass"]
        )
        assert result.exit_code == 1
        assert "invalid_email" in result.output
        assert "not a valid email address" in result.output
        assert not (environment / "cli.db").exists()

    def test_admin_create_audits_the_admin_grant(self, environment: Path) -> None:
        created = runner.invoke(
            app, ["admin", "create", "--email", "ops@example.com", "--password", "a strong pass 1"]
        )
        assert created.exit_code == 0, created.output
        with sqlite3.connect(environment / "cli.db") as connection:
            (user_id,) = connection.execute("SELECT id FROM users").fetchone()
            granted = connection.execute(
                "SELECT target, actor, details FROM audit_log "
                "WHERE action = 'user.platform_admin_changed'"
            ).fetchall()
        assert granted == [(user_id, "cli", '{"is_platform_admin": true}')]
        assert runner.invoke(app, ["audit", "verify"]).exit_code == 0


class TestBillingRun:
    def test_billing_run_reports_what_it_handled(self, environment: Path) -> None:
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        result = runner.invoke(app, ["billing", "run"])
        assert result.exit_code == 0, result.output
        assert "billing run: 0 items handled" in result.output

    def test_until_moves_the_sandbox_clock_and_is_kept(self, environment: Path) -> None:
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        result = runner.invoke(app, ["billing", "run", "--until", "2099-01-01"])
        assert result.exit_code == 0, result.output
        assert "clock at 2099-01-01T00:00:00" in result.output
        again = runner.invoke(app, ["billing", "run"])
        assert "clock at 2099-01-01" in again.output
        backwards = runner.invoke(app, ["billing", "run", "--until", "2000-01-01"])
        assert backwards.exit_code == 2

    def test_until_is_refused_outside_the_sandbox(
        self, environment: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("TOLLWAY_PAYMENT_PROVIDER", "stripe")
        monkeypatch.setenv("TOLLWAY_STRIPE_API_KEY", "sk_test_cli")
        monkeypatch.setenv("TOLLWAY_STRIPE_WEBHOOK_SECRET", "whsec_cli")
        result = runner.invoke(app, ["billing", "run", "--until", "2099-01-01"])
        assert result.exit_code == 2
        assert "sandbox" in result.output


class TestIdentityCommands:
    def test_unlock_login_lifts_a_lock_out(self, environment: Path) -> None:
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        nothing = runner.invoke(app, ["admin", "unlock-login", "--email", "a@example.com"])
        assert nothing.exit_code == 0, nothing.output
        assert "cleared 0" in nothing.output
        missing = runner.invoke(app, ["admin", "unlock-login"])
        assert missing.exit_code == 2

    def test_unlock_login_also_lifts_password_reset_locks(self, environment: Path) -> None:
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        email = "locked@example.com"

        async def lock_out(context: SweepContext) -> None:
            async with context.database.transaction() as session:
                await login_throttle_service.record_failure(
                    session,
                    keys=[account_key(email), scoped_key(PASSWORD_RESET, account_key(email))],
                    policy=ThrottlePolicy(max_failures=1),
                    now=context.clock.now(),
                )

        run_async(load_settings(), lock_out)
        unlocked = runner.invoke(app, ["admin", "unlock-login", "--email", email])
        assert unlocked.exit_code == 0, unlocked.output
        assert "cleared 2" in unlocked.output

    def test_reset_2fa_needs_a_known_user(self, environment: Path) -> None:
        created = runner.invoke(
            app, ["admin", "create", "--email", "ops@example.com", "--password", "a strong pass!!"]
        )
        assert created.exit_code == 0, created.output
        reset = runner.invoke(app, ["admin", "reset-2fa", "--email", "ops@example.com"])
        assert reset.exit_code == 0, reset.output
        assert "two-factor authentication is off" in reset.output
        unknown = runner.invoke(app, ["admin", "reset-2fa", "--email", "nobody@example.com"])
        assert unknown.exit_code == 1
        assert "not_found" in unknown.output


class TestCreditsCommands:
    def test_credits_grant_books_a_grant_an_operator_can_audit(self, environment: Path) -> None:
        created = runner.invoke(
            app, ["admin", "create", "--email", "ops@example.com", "--password", "a strong pass 1"]
        )
        assert created.exit_code == 0, created.output
        with sqlite3.connect(environment / "cli.db") as connection:
            (organization_id,) = connection.execute("SELECT id FROM organizations").fetchone()
        granted = runner.invoke(
            app,
            [
                "credits",
                "grant",
                "--org",
                organization_id,
                "--amount",
                "25",
                "--reason",
                "goodwill",
            ],
        )
        assert granted.exit_code == 0, granted.output
        assert f"granted 25 credits to {organization_id}" in granted.output
        with sqlite3.connect(environment / "cli.db") as connection:
            wallet = connection.execute(
                "SELECT balance FROM credit_accounts WHERE kind = 'wallet'"
            ).fetchone()
            actors = connection.execute(
                "SELECT actor FROM audit_log WHERE action = 'credits.grant'"
            ).fetchall()
        assert wallet == (25,)
        assert actors == [("cli",)]
        assert runner.invoke(app, ["audit", "verify"]).exit_code == 0

    def test_credits_grant_refuses_bad_input_with_its_code(self, environment: Path) -> None:
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
        unknown = runner.invoke(
            app,
            [
                "credits",
                "grant",
                "--org",
                "org_01JD8X3N5Q8W6Y2ZB4C7D9E0F1",
                "--amount",
                "5",
                "--reason",
                "x",
            ],
        )
        assert unknown.exit_code == 1
        assert "organization_not_found" in unknown.output
        zero = runner.invoke(
            app, ["credits", "grant", "--org", "org_x", "--amount", "0", "--reason", "x"]
        )
        assert zero.exit_code == 1
        assert "invalid_amount" in zero.output


class TestCommandsInTheirOwnProcess:
    """Each command as an operator runs it: a fresh interpreter that has loaded only what
    the command imports (the in-process tests above share the suite's imports)."""

    def test_credits_grant_works_in_a_fresh_process(self, environment: Path) -> None:
        import os
        import subprocess
        import sys

        def tollway(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(  # noqa: S603  # this interpreter, fixed arguments
                [str(Path(sys.executable).parent / "tollway"), *args],
                capture_output=True,
                text=True,
                env=dict(os.environ),
                timeout=120,
                check=False,
            )

        created = tollway(
            "admin", "create", "--email", "ops@example.com", "--password", "a strong pass 1"
        )
        assert created.returncode == 0, created.stderr
        with sqlite3.connect(environment / "cli.db") as connection:
            (organization_id,) = connection.execute("SELECT id FROM organizations").fetchone()
        granted = tollway(
            "credits", "grant", "--org", organization_id, "--amount", "5", "--reason", "r"
        )
        assert granted.returncode == 0, granted.stderr
        assert f"granted 5 credits to {organization_id}" in granted.stdout
