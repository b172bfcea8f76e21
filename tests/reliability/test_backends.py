"""The suite runs on both databases and Redis: an unreachable server skips locally, fails under CI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.processes import REPO_ROOT

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/postgres"
PROBE = "import pytest\n\n@pytest.mark.postgres_only\ndef test_probe(app):\n    pass\n"


UNREACHABLE_REDIS = "redis://127.0.0.1:1/15"
REDIS_PROBE = "def test_probe(redis_url):\n    pass\n"


def run_probe(tmp_path: Path, ci: str | None, probe: str = PROBE) -> subprocess.CompletedProcess:
    """Run a one-test file with the suite's fixtures against an unreachable PostgreSQL and Redis."""
    (tmp_path / "test_probe.py").write_text(probe)
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env.update(TEST_DATABASE_URL=UNREACHABLE, TEST_REDIS_URL=UNREACHABLE_REDIS, **({"CI": ci} if ci is not None else {}))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-rA", "-q",
         str(tmp_path / "test_probe.py")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_unreachable_postgres_skips_with_instructions_outside_ci(tmp_path):
    result = run_probe(tmp_path, ci=None)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
    assert "PostgreSQL is not reachable" in result.stdout and "TEST_DATABASE_URL" in result.stdout


def test_unreachable_postgres_fails_under_ci(tmp_path):
    result = run_probe(tmp_path, ci="true")
    assert result.returncode != 0, result.stdout
    assert "1 error" in result.stdout
    assert "PostgreSQL is not reachable" in result.stdout


def test_unreachable_redis_skips_with_instructions_outside_ci(tmp_path):
    result = run_probe(tmp_path, ci=None, probe=REDIS_PROBE)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
    assert "Redis is not reachable" in result.stdout and "TEST_REDIS_URL" in result.stdout


def test_unreachable_redis_fails_under_ci(tmp_path):
    result = run_probe(tmp_path, ci="true", probe=REDIS_PROBE)
    assert result.returncode != 0, result.stdout
    assert "1 error" in result.stdout
    assert "Redis is not reachable" in result.stdout
