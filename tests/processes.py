"""Running the app's real entry points (flask CLI, gunicorn) in subprocesses, as a platform would."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# Settings a developer's environment or .env could supply; subprocesses get only what a test gives.
APP_SETTINGS = (
    "APP_ENV", "SECRET_KEY", "DATABASE_URL", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE",
    "ALLOW_LIVE_PAYMENTS", "ALLOW_STRIPE_API_BASE", "ADMIN_USERNAME", "ADMIN_PASSWORD", "FLASK_DEBUG", "FLASK_APP",
    "REDIS_URL", "CHECKOUT_LIMIT_PER_IP", "CHECKOUT_LIMIT_PER_BROWSER", "CHECKOUT_STOCK_SHARE",
    "RATELIMIT_KEY_PREFIX", "TRUSTED_PROXY_HOPS", "IPV6_CLIENT_PREFIX", "DYNO",
    "OPERATOR_SIGN_IN_LIMIT_PER_IP", "OPERATOR_SIGN_IN_LIMIT_PER_USERNAME",
)


def app_env(**settings: str) -> dict[str, str]:
    """The current environment with every app setting blanked (so `.env` cannot fill it), then `settings`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("STRIPE_EMULATOR_")}
    env.update({name: "" for name in APP_SETTINGS})
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(settings)
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def procfile() -> dict[str, str]:
    """The Procfile's process types and their commands."""
    lines = (REPO_ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(process: subprocess.Popen, url: str, log: Path, timeout: float = 30) -> None:
    """Poll `url` until it answers 200; fail the test (with the server's log) if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{Path(process.args[0]).name} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # refused, reset, timed out, or an HTTP error status while starting
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} did not answer 200 within {timeout}s:\n{log.read_text()[-3000:]}")
