"""Drive HTTP load from a separate process and report RPS and latency percentiles.

wrk is used when it is installed (``apt-get install -y wrk``); otherwise a Python
load generator (``python -m bench.pyload``) runs in a subprocess. Both keep
connections alive and report the same fields.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Request:
    method: str = "GET"
    path: str = "/api/v1/health"
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None


@dataclass
class LoadResult:
    driver: str
    connections: int
    duration_s: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def run_load(
    base_url: str, request: Request, *, connections: int, duration_s: int, threads: int = 2
) -> LoadResult:
    if shutil.which("wrk"):
        return _run_wrk(base_url, request, connections, duration_s, threads)
    return _run_python(base_url, request, connections, duration_s)


def _lua(request: Request) -> str:
    lines = [f'wrk.method = "{request.method}"']
    if request.body is not None:
        lines.append(f"wrk.body = {json.dumps(request.body)}")
    for name, value in request.headers.items():
        lines.append(f'wrk.headers["{name}"] = {json.dumps(value)}')
    return "\n".join(lines) + "\n"


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _run_wrk(
    base_url: str, request: Request, connections: int, duration_s: int, threads: int
) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_lua(request))
    try:
        output = subprocess.run(
            [
                "wrk",
                f"-t{min(threads, connections)}",
                f"-c{connections}",
                f"-d{duration_s}s",
                "--latency",
                "-s",
                script.name,
                base_url + request.path,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        Path(script.name).unlink()
    percentiles = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", output, re.MULTILINE))
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(value) for value in socket_errors.groups())
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    return LoadResult(
        driver="wrk",
        connections=connections,
        duration_s=duration_s,
        requests=requests,
        errors=errors,
        rps=round(rps, 1),
        p50_ms=round(_to_ms(percentiles["50"]), 3),
        p90_ms=round(_to_ms(percentiles["90"]), 3),
        p99_ms=round(_to_ms(percentiles["99"]), 3),
    )


def _run_python(base_url: str, request: Request, connections: int, duration_s: int) -> LoadResult:
    spec = json.dumps(
        {
            "url": base_url + request.path,
            "method": request.method,
            "headers": request.headers,
            "body": request.body,
            "connections": connections,
            "duration_s": duration_s,
        }
    )
    output = subprocess.run(
        [sys.executable, "-m", "bench.pyload"],
        input=spec,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return LoadResult(**json.loads(output))
