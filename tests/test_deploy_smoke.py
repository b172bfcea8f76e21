"""Deploy smoke test: the Procfile's release phase, then gunicorn, as the platform runs them.

Runs once, on a fresh PostgreSQL database reached through a platform-style `postgres://` URL.
Skips when PostgreSQL is unreachable, except under CI=true, where it fails.
"""
from __future__ import annotations

import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import fresh_postgres_database
from tests.processes import REPO_ROOT, VENV_BIN, app_env, free_port, procfile, run, wait_until_serving

pytestmark = pytest.mark.postgres_only


@pytest.fixture(scope="module")
def platform_database_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, as a `postgres://` URL; dropped afterwards."""
    with fresh_postgres_database("shop_smoke") as url:
        yield url.set(drivername="postgres").render_as_string(hide_password=False)


def production_env(database_url: str, **extra: str) -> dict[str, str]:
    return app_env(
        APP_ENV="production",
        DATABASE_URL=database_url,
        SECRET_KEY="smoke-test-secret-key-not-for-real-use",
        STRIPE_SECRET_KEY="sk_test_dummy",
        STRIPE_WEBHOOK_SECRET="whsec_dummy",
        **extra,
    )


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def gunicorn_command() -> list[str]:
    command = procfile()["web"].split()
    assert command[0] == "gunicorn"
    return [str(VENV_BIN / "gunicorn"), *command[1:], "--no-control-socket"]


def test_release_phase_then_gunicorn_serve_the_shop(platform_database_url: str, tmp_path: Path) -> None:
    env = production_env(platform_database_url, PORT=str(free_port()), WEB_CONCURRENCY="2", GUNICORN_THREADS="2")

    release = run(["bash", "-c", procfile()["release"]], env, timeout=120)
    assert release.returncode == 0, release.stdout + release.stderr
    assert "Running upgrade" in release.stderr and "Catalogue seeded" in release.stdout
    again = run(["bash", "-c", procfile()["release"]], env, timeout=120)
    assert "Catalogue seeded (0 change(s))." in again.stdout, again.stdout + again.stderr

    log = tmp_path / "gunicorn.log"
    with log.open("w") as output:
        server = subprocess.Popen(gunicorn_command(), cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{env['PORT']}"
    try:
        wait_until_serving(server, f"{base}/healthz", log)

        status, headers, body = get(f"{base}/healthz")
        assert (status, body) == (200, b'{"status":"ok"}\n')
        assert "Set-Cookie" not in headers

        status, headers, body = get(f"{base}/")
        assert status == 200
        assert b"Enamel Mug" in body
        for response_headers in (headers, get(f"{base}/healthz")[1]):
            assert "frame-ancestors 'none'" in response_headers["Content-Security-Policy"]
            assert "script-src 'self';" in response_headers["Content-Security-Policy"]
            assert response_headers["X-Content-Type-Options"] == "nosniff"
            assert response_headers["Strict-Transport-Security"].startswith("max-age=")
        assert "; Secure" in headers["Set-Cookie"] and "; HttpOnly" in headers["Set-Cookie"]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            exit_code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert exit_code == 0, log.read_text()
    output = log.read_text()
    assert "Traceback" not in output
    assert '"GET /healthz HTTP/1.1" 200' in output  # access log on stdout


def test_gunicorn_refuses_to_start_without_secrets() -> None:
    env = app_env(APP_ENV="production", PORT=str(free_port()))
    result = run(gunicorn_command(), env, timeout=60)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Error: Refusing to start in production: missing SECRET_KEY" in output
    assert "Traceback" not in output
    assert output.count("Refusing to start") == 1  # stopped once, not a crash-looping worker per attempt
