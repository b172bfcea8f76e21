"""Fixtures for the reliability suite: a real gunicorn server, and the `stripe sync` command."""
from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from click.testing import Result
from flask import Flask

from tests.processes import REPO_ROOT, VENV_BIN, app_env, free_port, wait_until_serving


@dataclass(frozen=True)
class LiveServer:
    url: str
    database_url: str


@pytest.fixture(scope="module")
def live_server(postgres_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """gunicorn (4 workers x 8 threads) serving the testing app on the suite's PostgreSQL database.

    Tests share it within a module; `database_url` empties the tables before each test.
    """
    workdir = tmp_path_factory.mktemp("gunicorn")  # not the repo: keep its gunicorn.conf.py out
    log = workdir / "gunicorn.log"
    port = free_port()
    env = app_env(DATABASE_URL=postgres_database, PYTHONPATH=str(REPO_ROOT))
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "--no-control-socket", "-w", "4", "--threads", "8", "-k", "gthread",
             "--bind", f"127.0.0.1:{port}", "tests.reliability.serve:app"],
            cwd=workdir, env=env, stdout=output, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, url + "/", log)
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
