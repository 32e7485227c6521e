"""The CLI starts fast: loading it (for --help, or before a command) loads no application."""

import subprocess
import sys

HEAVY_MODULES = ("fastapi", "sqlalchemy", "alembic", "pydantic_settings", "uvicorn", "stripe")


class TestCliImports:
    def test_loading_the_cli_loads_none_of_the_application(self) -> None:
        probe = (
            "import sys, tollway.cli; "
            f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
        )
        loaded = subprocess.run(  # noqa: S603  # this interpreter, a fixed probe
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        )
        assert loaded.stdout.strip() == "[]"

    def test_a_command_that_only_writes_credits_loads_no_web_framework(self) -> None:
        # `tollway credits grant` and `admin create` run services, not the HTTP edge.
        probe = (
            "import sys, tollway.ledger.service.grants, tollway.accounts.service.users, "
            "tollway.db; print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn') "
            "if m in sys.modules))"
        )
        loaded = subprocess.run(  # noqa: S603  # this interpreter, a fixed probe
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        )
        assert loaded.stdout.strip() == "[]"
