"""Running the app's real entry points (flask CLI, gunicorn) in subprocesses, as a platform would."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# Settings a developer's environment or .env could supply; subprocesses get only what a test gives.
APP_SETTINGS = (
    "APP_ENV", "SECRET_KEY", "DATABASE_URL", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE",
    "ALLOW_LIVE_PAYMENTS", "ADMIN_USERNAME", "ADMIN_PASSWORD", "FLASK_DEBUG", "FLASK_APP",
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
