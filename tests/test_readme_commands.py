"""The README's first two commands, as a newcomer runs them, and CI running the same."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.processes import REPO_ROOT

CI_SCRIPT = REPO_ROOT / ".ci" / "run"
BASH = shutil.which("bash") or "/bin/bash"


def readme_commands() -> tuple[str, str]:
    """The run command and the test command: the README's first two shell blocks."""
    run_command, test_command = re.findall(r"```sh\n(.+?)\n```", (REPO_ROOT / "README.md").read_text())[:2]
    return run_command, test_command


def version_guard() -> str:
    """The Python code both commands run first, with `python3 -c`."""
    run_command, test_command = readme_commands()
    guard = run_command.split(" && ")[0]
    assert test_command.startswith(guard + " && ")
    program, flag, code = shlex.split(guard)
    assert (program, flag) == ("python3", "-c")
    return code


def test_both_commands_use_whatever_python3_the_machine_has():
    for command in readme_commands():
        steps = command.split(" && ")
        assert steps[1] == "python3 -m venv .venv"
        assert not re.search(r"python3\.\d", command), command


def test_python_3_11_and_newer_go_on(tmp_path: Path):
    (tmp_path / "python3").symlink_to(sys.executable)  # this interpreter is 3.11 or newer
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    guard = readme_commands()[0].split(" && ")[0]
    result = subprocess.run([BASH, "-c", guard + " && echo went-on"], env=env, capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, "went-on\n", "")


def test_an_older_python_stops_with_a_clear_message():
    older = "import sys; sys.version_info = (3, 10, 13, 'final', 0); sys.version = '3.10.13 (main)'\n"
    result = subprocess.run([sys.executable, "-c", older + version_guard()], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == "Python 3.11 or newer is needed; python3 is 3.10.13\n"


def test_ci_runs_the_readme_test_command():
    assert readme_commands()[1] in CI_SCRIPT.read_text().splitlines()


def test_ci_finds_the_newest_python_on_path_or_under_pyenv(tmp_path: Path):
    """Broken candidates (a pyenv shim for a version not selected) are passed over."""
    def fake(path: Path, minor: int | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"#!/bin/sh\necho {minor}\n" if minor is not None else "#!/bin/sh\nexit 127\n")
        path.chmod(0o755)

    fake(tmp_path / "bin" / "python3.12", 12)
    fake(tmp_path / "bin" / "python3.14", None)  # a shim that can't run here
    fake(tmp_path / "bin" / "python3.12-config", 99)  # not an interpreter
    fake(tmp_path / "pyenv" / "versions" / "3.13.0" / "bin" / "python3.13", 13)
    function = re.search(r"^newest_python\(\) \{\n.*?^\}\n", CI_SCRIPT.read_text(), re.S | re.M)[0]
    tools = tmp_path / "tools"  # what the function needs besides bash, and no real python3.N
    tools.mkdir()
    (tools / "sort").symlink_to(shutil.which("sort"))
    env = {"PATH": f"{tmp_path / 'bin'}:{tools}", "PYENV_ROOT": str(tmp_path / "pyenv"), "HOME": str(tmp_path)}
    result = subprocess.run([BASH, "-c", function + "newest_python"], env=env, capture_output=True, text=True)
    assert result.stdout == f"{tmp_path}/pyenv/versions/3.13.0/bin/python3.13\n", result.stderr

    (tmp_path / "pyenv" / "versions" / "3.13.0" / "bin" / "python3.13").unlink()
    result = subprocess.run([BASH, "-c", function + "newest_python"], env=env, capture_output=True, text=True)
    assert result.stdout == "python3.12\n", result.stderr


def test_every_local_flask_command_is_the_virtualenvs():
    """Before "Deploying" every command runs on a developer's machine, from the README's `.venv`."""
    local = (REPO_ROOT / "README.md").read_text().split("\n## Deploying", 1)[0]
    bare = re.findall(r"(?<![/\w])flask (?:--app|run|stripe|db|seed)[^`\n]*", local)
    assert not bare, f"commands without .venv/bin/: {bare}"
