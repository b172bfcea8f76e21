"""The bench's processes and databases: throwaway PostgreSQL databases, gunicorn servers on
127.0.0.1 started with the shop's own `gunicorn.conf.py`, and what they cost (CPU, memory)."""
from __future__ import annotations

import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# What the servers inherit from the bench's own environment.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "GUNICORN_THREADS")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class BenchError(Exception):
    """Something that makes the run's numbers untrustworthy: exit 2."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def workers(self) -> list[int]:
        return children_of(self.proc.pid)

    def log_tail(self, lines: int = 30) -> str:
        with suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        # Whatever is left of the group (workers of a master that died first, too).
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                kids.append(int(entry.name))
    return sorted(kids)


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / tick


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


def proc_status(pid: int) -> dict[str, int]:
    values = {}
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0])  # kB
    return values


def redis_answers(url: str) -> bool:
    host, _, port = url.split("//", 1)[1].split("/", 1)[0].rpartition("@")[2].partition(":")
    try:
        with socket.create_connection((host, int(port or 6379)), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def run(command: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise BenchError(f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


# --------------------------------------------------------------------------- database


def admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def db_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def connect(name: str) -> psycopg.Connection:
    return psycopg.connect(db_url(name), autocommit=True)


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text()
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo)[1])
    cpu_model = ""
    with suppress(OSError, TypeError):
        cpu_model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())[1]
    wrk_version = subprocess.run([shutil.which("wrk") or "wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        pg = conn.execute("show server_version").fetchone()[0]
    return {
        "nproc": os.cpu_count(), "memory_gib": round(mem_kb / 1024 / 1024, 1), "cpu": cpu_model,
        "kernel": platform.release(), "python": platform.python_version(), "postgresql": pg, "wrk": wrk_version.strip(),
    }


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """The run's databases and servers, each started once and all stopped by `close`.

    `shop_db` holds the shop's (and the floors') tables; each emulator gets a database of its
    own. Servers get the shop's gunicorn.conf.py, WEB_CONCURRENCY=2 and their own port.
    """

    logdir: Path
    work: Path
    tag: str = field(default_factory=lambda: f"{os.getpid()}_{secrets.token_hex(3)}")
    secret_key: str = field(default_factory=lambda: "bench-" + secrets.token_hex(24))
    webhook_secret: str = field(default_factory=lambda: "whsec_bench_" + secrets.token_hex(16))
    servers: dict[str, Server] = field(default_factory=dict)
    databases: list[str] = field(default_factory=list)

    @property
    def shop_db(self) -> str:
        return f"shop_bench_{self.tag}"

    def create_database(self, name: str) -> str:
        admin(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return name

    def base_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in INHERITED}
        env |= {"WEB_CONCURRENCY": "2", "PYTHONUNBUFFERED": "1", "FLASK_DEBUG": "0", "SHOP_CURRENCY": "usd",
                "ALLOW_LIVE_PAYMENTS": "0"}
        return env | extra

    def shop_env(self, emulator_port: int, **extra: str) -> dict[str, str]:
        """The shop in production config, its Stripe API the emulator on `emulator_port`."""
        return self.base_env(
            APP_ENV="production",
            SECRET_KEY=self.secret_key,
            DATABASE_URL=db_url(self.shop_db),
            STRIPE_SECRET_KEY="sk_test_bench",
            STRIPE_WEBHOOK_SECRET=self.webhook_secret,
            STRIPE_API_BASE=f"http://{HOST}:{emulator_port}/_stripe",
            ALLOW_STRIPE_API_BASE="1",  # production refuses a non-Stripe API base without it
            TRUSTED_PROXY_HOPS="1",  # the bench's X-Forwarded-For stands in for the platform's router
            **extra,
        )

    def floor_env(self, emulator_port: int) -> dict[str, str]:
        return self.base_env(APP_ENV="production", SECRET_KEY=self.secret_key, DATABASE_URL=db_url(self.shop_db),
                             STRIPE_API_BASE=f"http://{HOST}:{emulator_port}/_stripe",
                             STRIPE_WEBHOOK_SECRET=self.webhook_secret)

    def migrate(self) -> None:
        self.create_database(self.shop_db)
        env = self.shop_env(0)
        t0 = time.monotonic()
        run([str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"], env, "flask db upgrade")
        run([str(BIN / "flask"), "--app", "wsgi", "seed"], env, "flask seed")
        log(f"database {self.shop_db} migrated and seeded in {time.monotonic() - t0:.1f} s")

    def start(self, name: str, app: str, env: dict[str, str], ready_path: str, port: int | None = None) -> Server:
        port = port or free_port()
        log_path = self.logdir / f"{name}.log"
        command = [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "--no-control-socket",
                   "--bind", f"{HOST}:{port}", app]
        with open(log_path, "wb") as handle:
            proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        server = self.servers[name] = Server(name, port, proc, log_path)
        wait_ready(server, ready_path)
        return server

    def start_emulator(self, name: str, shop_port: int, latency_ms: float = 0, threads: int = 4) -> Server:
        """The offline Stripe emulator in a process of its own, delivering webhooks to the shop on `shop_port`.

        With latency each request holds one of its threads while it waits, as Stripe's would
        not: give it a thread for every request that may be waiting at once.
        """
        port = free_port()
        database = self.create_database(f"{self.shop_db}_{name}")
        env = self.base_env(
            APP_ENV="development",
            GUNICORN_THREADS=str(threads),
            SECRET_KEY="bench-emulator-" + secrets.token_hex(16),
            DATABASE_URL=db_url(database),
            STRIPE_SECRET_KEY="",  # empty: offline mode, the emulator is loaded (and .env can't fill it in)
            STRIPE_API_BASE="",
            STRIPE_WEBHOOK_SECRET=self.webhook_secret,
            STRIPE_EMULATOR_URL=f"http://{HOST}:{port}/_stripe",
            STRIPE_EMULATOR_WEBHOOK_URL=f"http://{HOST}:{shop_port}/webhooks/stripe",
            STRIPE_EMULATOR_DUPLICATE="0", STRIPE_EMULATOR_SHUFFLE="0", STRIPE_EMULATOR_DROP="0",
            STRIPE_EMULATOR_LATENCY=f"{latency_ms:g}",
        )
        return self.start(name, "wsgi:app", env, "/_stripe/v1/events", port)

    def stop(self, name: str) -> None:
        server = self.servers.pop(name, None)
        if server:
            server.stop()

    def close(self) -> None:
        for name in list(self.servers):
            self.stop(name)
        for name in self.databases:
            try:
                admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error as exc:
                print(f"could not drop database {name}: {exc}", file=sys.stderr)
        shutil.rmtree(self.work, ignore_errors=True)


def wait_ready(server: Server, path: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        with suppress(requests.RequestException):
            answer = requests.get(server.base + path, timeout=2)
            if answer.status_code < 500 and len(server.workers()) >= 1:
                return
        time.sleep(0.2)
    raise BenchError(f"{server.name} did not answer {path} within {timeout:.0f} s:\n{server.log_tail()}")
