"""Fixtures for the reliability suite: a real gunicorn server, and the `stripe sync` command."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask

from tests.processes import REPO_ROOT, app_env

GUNICORN = Path(sys.executable).parent / "gunicorn"
STARTUP_TIMEOUT = 30.0


@dataclass(frozen=True)
class LiveServer:
    url: str
    database_url: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    pytest.fail(f"gunicorn did not answer within {STARTUP_TIMEOUT}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def live_server(postgres_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """gunicorn (4 workers x 8 threads) serving the testing app on the suite's PostgreSQL database.

    Tests share it within a module; `database_url` empties the tables before each test.
    """
    workdir = tmp_path_factory.mktemp("gunicorn")  # not the repo: keep its gunicorn.conf.py out
    log = workdir / "gunicorn.log"
    port = _free_port()
    env = app_env(DATABASE_URL=postgres_database, PYTHONPATH=str(REPO_ROOT))
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(GUNICORN), "--no-control-socket", "-w", "4", "--threads", "8", "-k", "gthread",
             "--bind", f"127.0.0.1:{port}", "tests.reliability.serve:app"],
            cwd=workdir, env=env, stdout=output, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(url, process, log)
        yield LiveServer(url=url, database_url=postgres_database)
    finally:
        process.send_signal(signal.SIGINT)  # quick shutdown: nothing is in flight any more
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_sync(app: Flask) -> Result:
    """`flask --app wsgi stripe sync` against this app; fails the test if the command failed."""
    result = app.test_cli_runner().invoke(args=["stripe", "sync"])
    assert result.exit_code == 0, result.output
    return result
