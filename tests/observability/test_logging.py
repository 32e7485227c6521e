import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import logging
    import structlog
    from tollway.observability.logging import configure_logging

    configure_logging(level="info", json=True)
    log = structlog.get_logger("tollway.http")
    with structlog.contextvars.bound_contextvars(request_id="req-1"):
        log.info("request", status=200, duration_ms=1.5)
        log.debug("too chatty to show")
        try:
            raise ValueError("the stack must be in the log")
        except ValueError:
            log.exception("request.crashed", path="/boom")
    logging.getLogger("uvicorn.error").warning("foreign %s", "record")
    """
)


def log_lines() -> list[dict[str, object]]:
    """Run a process that logs as the server does; answer its stderr lines, parsed."""
    finished = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60
    )
    return [json.loads(line) for line in finished.stderr.splitlines() if line.strip()]


class TestJsonLogs:
    def test_every_line_is_json_with_level_logger_time_and_request_id(self) -> None:
        first = log_lines()[0]
        assert first["event"] == "request"
        assert first["level"] == "info"
        assert first["logger"] == "tollway.http"
        assert first["request_id"] == "req-1"
        assert first["status"] == 200
        assert str(first["timestamp"]).endswith("Z")

    def test_records_below_the_level_are_dropped(self) -> None:
        assert "too chatty to show" not in [line["event"] for line in log_lines()]

    def test_an_exception_is_logged_with_its_stack(self) -> None:
        crashed = next(line for line in log_lines() if line["event"] == "request.crashed")
        assert crashed["level"] == "error"
        assert "Traceback" in str(crashed["exception"])
        assert "the stack must be in the log" in str(crashed["exception"])

    def test_other_libraries_records_come_out_as_the_same_json(self) -> None:
        foreign = log_lines()[-1]
        assert (foreign["event"], foreign["level"], foreign["logger"]) == (
            "foreign record",
            "warning",
            "uvicorn.error",
        )
