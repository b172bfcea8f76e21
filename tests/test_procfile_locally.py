"""The README's way to run the Procfile locally: release to the end, then web, leaves a shop running."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

from tests.processes import REPO_ROOT, app_env, free_port, wait_until_serving

HEADING = "### The Procfile, as the platform runs it"


def readme_procfile_command() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    assert HEADING in readme, "the README doesn't say how to run the Procfile locally"
    return re.search(r"```sh\n(.+?)\n```", readme.split(HEADING, 1)[1], re.S)[1]


def test_the_readmes_procfile_command_migrates_seeds_then_serves_the_shop(tmp_path: Path):
    command = readme_procfile_command()
    assert "honcho start release && honcho start web" in command
    # The suite's environment already has the requirements installed: skip only that step.
    steps = [step for step in command.split(" && ") if not step.startswith("pip install")]
    port = free_port()
    env = app_env(APP_ENV="development", DATABASE_URL=f"sqlite:///{tmp_path / 'shop.sqlite'}", PORT=str(port))
    log = tmp_path / "honcho.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["bash", "-c", " && ".join(steps)], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_serving(process, f"http://127.0.0.1:{port}/healthz", log, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as response:
            home = response.read().decode()
        assert "Field Notebook" in home  # migrated and seeded before it served
        output = log.read_text()
        assert output.index("release.1 stopped (rc=0)") < output.index("web.1 started")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
