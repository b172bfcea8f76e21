#!/usr/bin/env python3
"""Load benchmark of the shop against same-work floors, with each goal and pass/miss.

    .venv/bin/python bench/run.py [--duration 8] [--repeat 2] [--connections 50]

One command, from a fresh clone (about 5 minutes with the defaults), cleaning up after
itself even on error or Ctrl-C:

1. creates a throwaway PostgreSQL database for the shop (and one for the Stripe emulator)
   and migrates and seeds it in production config;
2. starts, with the shop's own `gunicorn.conf.py` and WEB_CONCURRENCY=2, on 127.0.0.1
   only: the shop (APP_ENV=production); the floors (`bench/floors.py`, the least a Flask
   app must do to answer the same two read endpoints, on the same database with the same
   SECRET_KEY); and a development instance whose offline Stripe emulator stands in for
   Stripe, in its own process;
3. loads each scenario with wrk for `--duration` seconds after a short warm-up, `--repeat`
   times, the shop and its floor alternating, and compares them within the run (ratios);
   a load where one worker did less than a tenth of the server's CPU (the kernel gave it
   almost no connections) is run again, at most twice;
4. checks the database after the webhook, storm and checkout loads (every event applied
   once, one transition, one session per order), and counts database round trips per
   request in-process (`bench/micro.py`);
5. prints a markdown table, one row per goal with its median, spread and PASS/MISS, and
   writes everything to `bench/results/latest.json`.

Exit status: 0 every goal met; 1 a goal missed; 2 errors (a non-2xx answer other than the
checkout's 303, socket errors, a failed integrity check, a server that would not start).

Needs wrk (`apt-get install -y wrk`) and PostgreSQL on 127.0.0.1:5432 (user postgres,
trust auth, or set BENCH_PG_URL); for `--profile`, `pip install -r bench/requirements.txt`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import requests
import stripe

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LUA = BENCH / "wrk" / "scenario.lua"
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
PROFILE_MODE = "cpu"  # --profile: "cpu" samples threads holding the GIL; "wall" every thread, waiting too
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
QUANTITY_FIELD = re.compile(r'name="(quantity-[a-z0-9-]+)"')
SESSION_COOKIE = re.compile(r"(?:^|[;,]\s*)session=([^;]+)")

# Goals (issue "ahead of every peer on every path"; see the README's Performance section).
GOAL_WEBHOOK_RATE = 1000.0  # unique events/s, 2 workers, PostgreSQL
GOAL_WEBHOOK_ROUND_TRIPS = 3.0
GOAL_CHECKOUT_RATE = 230.0  # orders/s against the emulator in its own process
GOAL_HOME_RATIO = 0.80  # of the home floor
GOAL_STATUS_RATIO = 0.90  # of the status floor
GOAL_VIEW_ROUND_TRIPS = 1.0  # home and status
GOAL_STATUS_P99_MS = 20.0  # at STATUS_P99_CONNECTIONS
STATUS_P99_CONNECTIONS = 10
GOAL_WEBHOOK_GROWTH = 1.25  # p50 with 100k orders and events / p50 on empty tables
GOAL_HOME_GROWTH = 1.15  # p50 with many orders / p50 with the 20 shown
BIG_TABLES = 100_000
MANY_ORDERS = 1_000
IMBALANCE = 0.10  # a worker with less than this share of the server's CPU: the load is rerun
MAX_RERUNS = 2

# Shoppers of the orders the bench creates directly in the database.
WEBHOOK_SHOPPER = "bench-webhooks"
HISTORY_SHOPPER = "bench-history"
DUPLICATE_SHOPPER = "bench-duplicates"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class BenchError(Exception):
    """Something that makes the run's numbers untrustworthy: exit 2."""


# --------------------------------------------------------------------------- processes


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
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
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


def start_gunicorn(name: str, app: str, env: dict[str, str], port: int, logdir: Path) -> Server:
    log_path = logdir / f"{name}.log"
    command = [
        str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "--no-control-socket",
        "--bind", f"{HOST}:{port}", app,
    ]
    handle = open(log_path, "wb")
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    handle.close()
    return Server(name, port, proc, log_path)


def redis_answers(url: str) -> bool:
    host, _, port = url.split("//", 1)[1].split("/", 1)[0].rpartition("@")[2].partition(":")
    try:
        with socket.create_connection((host, int(port or 6379)), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


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


def catalogue(conn: psycopg.Connection) -> list[tuple[int, str, int]]:
    """(id, name, unit_amount) of the products on sale, in page order."""
    return conn.execute("SELECT id, name, unit_amount FROM products WHERE active ORDER BY position").fetchall()


def insert_orders(
    conn: psycopg.Connection, shopper_id: str, count: int, lines: list[tuple[int, str, int, int]],
    status: str = "awaiting_payment",
) -> list[tuple[str, str, int]]:
    """Orders with their items, as checkout leaves them (a Checkout Session each).

    `lines` are (product id, name, unit amount, quantity). Returns (public_id, session_id, amount).
    """
    now = datetime.now(UTC)
    amount = sum(unit * quantity for _, _, unit, quantity in lines)
    paid_at = now if status == "paid" else None
    rows = []
    for i in range(count):
        public_id = "ord_" + secrets.token_urlsafe(16)
        session_id = "cs_test_bench_" + secrets.token_hex(16)
        created = now - timedelta(seconds=count - i)  # one a second, the newest last, as orders arrive
        rows.append((
            public_id, shopper_id, secrets.token_urlsafe(24), status, "usd", amount, 0,
            session_id, f"http://{HOST}/_stripe/pay/{session_id}", created, created, paid_at,
        ))
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE bench_new (public_id text) ON COMMIT DROP")
        with cur.copy(
            "COPY orders (public_id, shopper_id, checkout_token, status, currency, amount_total, amount_refunded,"
            " stripe_session_id, checkout_url, created_at, updated_at, paid_at) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        with cur.copy("COPY bench_new (public_id) FROM STDIN") as copy:
            for row in rows:
                copy.write_row((row[0],))
        for product_id, name, unit, quantity in lines:
            cur.execute(
                "INSERT INTO order_items (order_id, product_id, product_name, quantity, unit_amount)"
                " SELECT o.id, %s, %s, %s, %s FROM orders o JOIN bench_new n USING (public_id) ORDER BY o.id",
                (product_id, name, quantity, unit))
    return [(row[0], row[7], amount) for row in rows]


def insert_processed_events(conn: psycopg.Connection, count: int) -> None:
    """Events already applied to paid orders: the history a shop that has been selling keeps."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO stripe_events (id, type, created, order_id, received_at, processed_at, outcome, state)"
            " SELECT 'evt_bench_history_' || o.id, 'checkout.session.completed', extract(epoch FROM now())::int,"
            "  o.id, now(), now(), 'order paid', 'applied'"
            " FROM orders o WHERE o.status = 'paid' AND NOT EXISTS (SELECT 1 FROM stripe_events e WHERE e.order_id = o.id)"
            " ORDER BY o.id LIMIT %s", (count,))


# --------------------------------------------------------------------------- events


def completed_event(public_id: str, session_id: str, amount: int) -> str:
    session = {
        "id": session_id,
        "object": "checkout.session",
        "client_reference_id": public_id,
        "metadata": {"order_id": public_id},
        "amount_total": amount,
        "currency": "usd",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "payment_intent": "pi_bench_" + secrets.token_hex(8),
        "customer_details": {"email": "shopper@example.com"},
    }
    return json.dumps({
        "id": "evt_bench_" + secrets.token_hex(12),
        "object": "event",
        "api_version": stripe.api_version,
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "checkout.session.completed",
        "data": {"object": session},
    })


def sign(body: str, secret: str) -> str:
    return stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=int(time.time()))


def write_bodies(path: Path, orders: list[tuple[str, str, int]], secret: str) -> None:
    with open(path, "w") as out:
        for public_id, session_id, amount in orders:
            body = completed_event(public_id, session_id, amount)
            out.write(f"{sign(body, secret)}\t{body}\n")


# --------------------------------------------------------------------------- wrk


@dataclass
class Load:
    requests: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors + timeouts + unexpected statuses
    raw: dict[str, Any]
    cpu: dict[str, float] = field(default_factory=dict)


class Meter:
    """CPU used by the servers, PostgreSQL and wrk during one load."""

    def __init__(self, servers: dict[str, Server]) -> None:
        self.servers = servers

    def sample(self) -> dict[str, float]:
        values = {name: cpu_seconds([s.proc.pid, *s.workers()]) for name, s in self.servers.items()}
        for name, server in self.servers.items():  # per worker: is the load spread over both?
            for i, pid in enumerate(server.workers()):
                values[f"{name}_w{i + 1}"] = cpu_seconds([pid])
        values["postgres"] = cpu_seconds(postgres_pids())
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        values["wrk"] = usage.ru_utime + usage.ru_stime
        # Everything the machine did, to tell when other processes competed for the CPUs.
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        values["machine_busy"] = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        return values


def wrk(
    url: str, seconds: float, connections: int, mode: str, expected: int, args: list[str] = (),
    headers: list[str] = (), meter: Meter | None = None, profile_to: Path | None = None,
    profile_pid: int | None = None,
) -> Load:
    exe = shutil.which("wrk") or "/usr/bin/wrk"
    threads = max(1, min(2, connections))
    command = [exe, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
               "--timeout", "10s", "--latency", "-s", str(LUA)]
    for header in headers:
        command += ["-H", header]
    command += [url, "--", mode, str(expected), str(threads), *args]
    spy = None
    if profile_to and profile_pid:
        spy = subprocess.Popen(
            [str(BIN / "py-spy"), "record", "--pid", str(profile_pid), "--subprocesses", "--nonblocking",
             *(["--gil"] if PROFILE_MODE == "cpu" else ["--idle"]),
             "--rate", "97", "--duration", str(max(1, round(seconds))), "--format", "raw", "--output", str(profile_to)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
    before = meter.sample() if meter else {}
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    after = meter.sample() if meter else {}
    if spy:
        try:
            _, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            err = b""
        if spy.returncode:
            log(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-400:]}")
    line = next((out for out in result.stdout.splitlines() if out.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    raw = json.loads(line[len("BENCH_JSON "):])
    raw["wrk_output"] = result.stdout.replace(line, "").strip()
    secs = raw["duration_us"] / 1e6
    errors = (raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
              + max(raw["unexpected"], raw["status_errors"]))
    cpu = {}
    if meter:
        cpu = {name: round(100 * (after[name] - before[name]) / secs, 1) for name in after}  # % of one core
        ours = sum(v for k, v in cpu.items() if k in (*meter.servers, "postgres", "wrk"))
        cpu["other_processes"] = round(max(0.0, cpu.pop("machine_busy") - ours), 1)
    return Load(raw["requests"], secs, raw["requests"] / secs, raw["p50_us"] / 1000, raw["p99_us"] / 1000, errors, raw, cpu)


# --------------------------------------------------------------------------- the browser


class Browser:
    """A shopper's browser: the signed session cookie, kept by hand.

    Production cookies are `Secure`, which an http:// cookie jar would not send back to
    127.0.0.1; the cookie is what counts, so it is carried as a header (wrk gets it too).
    """

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookie = ""

    def _keep(self, answer: requests.Response) -> None:
        match = SESSION_COOKIE.search(answer.headers.get("Set-Cookie", ""))
        if match:
            self.cookie = match[1]

    def headers(self) -> dict[str, str]:
        return {"Cookie": f"session={self.cookie}"} if self.cookie else {}

    def get(self, path: str) -> requests.Response:
        answer = requests.get(self.base + path, headers=self.headers(), allow_redirects=False, timeout=30)
        self._keep(answer)
        return answer

    def post(self, path: str, data: dict[str, str]) -> requests.Response:
        answer = requests.post(self.base + path, data=data, headers=self.headers(), allow_redirects=False, timeout=30)
        self._keep(answer)
        return answer

    def form(self) -> tuple[str, list[str]]:
        page = self.get("/")
        if page.status_code != 200:
            raise BenchError(f"GET / answered {page.status_code}: {page.text[:300]}")
        return CSRF_FIELD.search(page.text)[1], QUANTITY_FIELD.findall(page.text)


def new_checkout_token() -> str:
    return secrets.token_urlsafe(24)  # 32 characters, like the form's


def write_shoppers(path: Path, secret_key: str, count: int) -> list[str]:
    """Many first-time shoppers, one line each: session cookie, CSRF token, client address.

    Each has the signed session cookie and CSRF token the home page would have given it
    (made here with the shop's SECRET_KEY, as Flask and Flask-WTF sign them), and an
    address of its own for the router's X-Forwarded-For, so the checkout load is many
    shoppers buying once each rather than one browser buying thousands of times.
    """
    from flask import Flask, session
    from flask_wtf.csrf import generate_csrf

    signer = Flask("bench-shoppers")
    signer.config.update(SECRET_KEY=secret_key)
    serializer = signer.session_interface.get_signing_serializer(signer)
    shopper_ids = []
    with open(path, "w") as out:
        for i in range(count):
            with signer.test_request_context():
                shopper_ids.append(secrets.token_urlsafe(24))
                session["shopper_id"] = shopper_ids[-1]
                csrf = generate_csrf()
                cookie = serializer.dumps(dict(session))
            out.write(f"{cookie}\t{csrf}\t10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n")
    return shopper_ids


# --------------------------------------------------------------------------- profiles


def summarise_profile(raw_path: Path, top: int = 25) -> str:
    """py-spy raw (collapsed) stacks -> the functions with the most samples, self and total."""
    self_samples: Counter[str] = Counter()
    total_samples: Counter[str] = Counter()
    all_samples = 0
    with suppress(OSError):
        for line in raw_path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            all_samples += n
            self_samples[frames[-1]] += n
            for frame in set(frames):
                total_samples[frame] += n
    if not all_samples:
        return f"(no samples in {raw_path.name})\n"
    out = [f"{raw_path.name}: {all_samples} samples ({PROFILE_MODE} mode)", "", "self %  function"]
    out += [f"{100 * n / all_samples:6.1f}  {name}" for name, n in self_samples.most_common(top)]
    out += ["", "total %  function (inclusive)"]
    out += [f"{100 * n / all_samples:6.1f}  {name}" for name, n in total_samples.most_common(top * 2)]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- the run


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


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(min(values))}–{fmt(max(values))}" if len(values) > 1 else "—"


def rate_text(value: float) -> str:
    return f"{value:,.0f}"


def ms_text(value: float) -> str:
    return f"{value:.1f} ms"


def ratio_text(value: float) -> str:
    return f"{value:.2f}"


def worker_share(load: Load, server: str) -> float:
    """The least busy worker's share of the server's worker CPU during the load."""
    workers = [v for k, v in load.cpu.items() if k.startswith(f"{server}_w")]
    total = sum(workers)
    return min(workers) / total if len(workers) > 1 and total > 0 else 1.0


class Runner:
    """Runs loads, reruns one whose server left a worker nearly idle, and keeps every load."""

    def __init__(self, opts: argparse.Namespace, meter: Meter, servers: dict[str, Server]) -> None:
        self.opts = opts
        self.meter = meter
        self.servers = servers
        self.series: dict[str, list[Load]] = {}
        self.reruns: list[str] = []
        self.errors: list[str] = []

    def load(
        self, name: str, server: str, path: str, mode: str = "get", expected: int = 200, *,
        headers: list[str] = (), connections: int | None = None, seconds: float | None = None,
        prepare: Callable[[], tuple[list[str], list[str]]] | None = None,
        after: Callable[[Load], None] | None = None,
    ) -> Load:
        """One measured load of `server` (after a warm-up); `prepare` gives (args, warm-up args)."""
        url = self.servers[server].base + path
        connections = connections or self.opts.connections
        seconds = seconds or self.opts.duration
        for attempt in range(MAX_RERUNS + 1):
            args, warm_args = prepare() if prepare else ([], [])
            if self.opts.warmup:
                wrk(url, self.opts.warmup, connections, mode, expected, warm_args, headers)
            profile_to = BENCH / "results" / f"profile-{name}.raw" if self.opts.profile and server == "shop" else None
            load = wrk(url, seconds, connections, mode, expected, args, headers, self.meter,
                       profile_to, self.servers[server].proc.pid)
            if profile_to:
                profile_to.with_suffix(".txt").write_text(summarise_profile(profile_to))
            if after:
                after(load)
            share = worker_share(load, server)
            log(f"{name:<22} {load.rate:8,.0f} req/s  p50 {load.p50_ms:6.1f} ms  p99 {load.p99_ms:6.1f} ms"
                f"  errors {load.errors}  least busy worker {share:.0%}")
            if not load.requests:
                self.errors.append(f"{name}: no request finished within {seconds:g} s; raise --duration")
            if load.errors:
                self.errors.append(f"{name}: {load.errors} errors "
                                   f"({json.dumps({k: v for k, v in load.raw.items() if k != 'wrk_output'})})")
            if share >= IMBALANCE or connections < 4 or attempt == MAX_RERUNS:
                break
            self.reruns.append(f"{name}: one worker did {share:.0%} of the CPU, load run again")
            log(f"  {self.reruns[-1]}")
        self.series.setdefault(name, []).append(load)
        return load

    def rates(self, name: str) -> list[float]:
        return [load.rate for load in self.series.get(name, [])]


ONE_TIME_VALUES = re.compile(r'(name="(?:csrf_token|checkout_token)" value=")[^"]+"')


def same_answers(servers: dict[str, Server], cookie: str, status_path: str) -> None:
    """The floors must answer exactly what the shop answers, or the ratios compare different work."""
    for path in ("/", status_path):
        shop, floor = (requests.get(servers[name].base + path, headers={"Cookie": f"session={cookie}"}, timeout=30)
                       for name in ("shop", "floor"))
        shop_body, floor_body = (ONE_TIME_VALUES.sub(r'\1"', answer.text) for answer in (shop, floor))
        if (shop.status_code, shop_body) != (floor.status_code, floor_body):
            raise BenchError(f"the floor's answer to {path} differs from the shop's ({floor.status_code} vs "
                             f"{shop.status_code}): bench/floors.py must do the same work as the shop")


def micro_round_trips(requests_each: int) -> dict[str, Any]:
    """Round trips and CPU per request, in-process, from bench/micro.py."""
    out = Path(tempfile.mkstemp(prefix="shop-micro-", suffix=".json")[1])
    try:
        result = subprocess.run([sys.executable, str(BENCH / "micro.py"), "--requests", str(requests_each),
                                 "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise BenchError(f"bench/micro.py failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load per scenario (default 8)")
    parser.add_argument("--repeat", type=int, default=2, help="repetitions of each scenario (default 2)")
    parser.add_argument("--connections", type=int, default=50, help="concurrent connections (default 50)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each measured load")
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "latest.json", help="where to write the results")
    parser.add_argument("--profile", action="store_true", help="sample the shop's workers with py-spy (slower numbers)")
    parser.add_argument("--profile-mode", choices=("cpu", "wall"), default="cpu",
                        help="cpu: only threads running Python (holding the GIL); wall: all threads, waits included")
    parser.add_argument("--only", default="webhook,read,checkout",
                        help="comma-separated scenario groups to run: webhook, read, checkout (default: all)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (printed path)")
    opts = parser.parse_args()
    groups = set(opts.only.split(","))
    if not groups or groups - {"webhook", "read", "checkout"}:
        parser.error("--only takes webhook, read and/or checkout")
    global PROFILE_MODE
    PROFILE_MODE = opts.profile_mode
    if not 1 <= opts.duration <= 120:
        parser.error("--duration must be 1..120 s (signed webhook events expire after 300 s)")
    if not 1 <= opts.repeat <= 9:
        parser.error("--repeat must be 1..9")

    if not (shutil.which("wrk") or Path("/usr/bin/wrk").exists()):
        print("ERROR: wrk is not installed. Install it with:  apt-get install -y wrk", file=sys.stderr)
        return 2
    if opts.profile and not (BIN / "py-spy").exists():
        print("ERROR: --profile needs py-spy:  .venv/bin/pip install -r bench/requirements.txt", file=sys.stderr)
        return 2
    if opts.profile:
        (BENCH / "results").mkdir(parents=True, exist_ok=True)

    # SIGTERM (e.g. from a CI timeout) unwinds through the same `finally` as Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)

    started = time.monotonic()
    tag = f"{os.getpid()}_{secrets.token_hex(3)}"
    shop_db, emu_db = f"shop_bench_{tag}", f"shop_bench_{tag}_emu"
    logdir = Path(tempfile.mkdtemp(prefix="shop-bench-"))
    work = Path(tempfile.mkdtemp(prefix="shop-bench-data-"))
    servers: dict[str, Server] = {}
    created_dbs: list[str] = []
    results: dict[str, Any] = {"scenarios": {}, "checks": {}, "notes": []}
    runner: Runner | None = None
    exit_code = 2
    try:
        info = machine()
        results["machine"] = info
        log(f"machine: {info['nproc']} CPUs, {info['memory_gib']} GiB, PostgreSQL {info['postgresql']}, {info['wrk']}")

        for name in (shop_db, emu_db):
            admin(f'CREATE DATABASE "{name}"')
            created_dbs.append(name)
        log(f"databases {shop_db}, {emu_db} created")

        webhook_secret = "whsec_bench_" + secrets.token_hex(16)
        secret_key = "bench-" + secrets.token_hex(24)
        ports = {"shop": free_port(), "floor": free_port(), "emulator": free_port()}
        emulator_url = f"http://{HOST}:{ports['emulator']}/_stripe"
        base_env = {k: v for k, v in os.environ.items()
                    if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "GUNICORN_THREADS")}
        base_env |= {"WEB_CONCURRENCY": "2", "PYTHONUNBUFFERED": "1", "FLASK_DEBUG": "0", "SHOP_CURRENCY": "usd",
                     "ALLOW_LIVE_PAYMENTS": "0"}
        shop_env = base_env | {
            "APP_ENV": "production",
            "SECRET_KEY": secret_key,
            "DATABASE_URL": db_url(shop_db),
            "STRIPE_SECRET_KEY": "sk_test_bench",
            "STRIPE_WEBHOOK_SECRET": webhook_secret,
            "STRIPE_API_BASE": emulator_url,
            "ALLOW_STRIPE_API_BASE": "1",  # production refuses a non-Stripe API base without it
            # wrk starts thousands of checkouts from one address and browser: measure, don't limit.
            "CHECKOUT_LIMIT_PER_IP": "1000000 per second",
            "CHECKOUT_LIMIT_PER_BROWSER": "1000000 per second",
            # wrk's X-Forwarded-For stands in for the platform's router (README "Deploying", item 9).
            "TRUSTED_PROXY_HOPS": "1",
        }
        floor_env = base_env | {"APP_ENV": "production", "SECRET_KEY": secret_key, "DATABASE_URL": db_url(shop_db)}
        emulator_env = base_env | {
            "APP_ENV": "development",
            "SECRET_KEY": "bench-emulator-" + secrets.token_hex(16),
            "DATABASE_URL": db_url(emu_db),
            "STRIPE_SECRET_KEY": "",  # empty: offline mode, the emulator is loaded (and .env can't fill it in)
            "STRIPE_API_BASE": "",
            "STRIPE_WEBHOOK_SECRET": webhook_secret,
            "STRIPE_EMULATOR_URL": emulator_url,
            "STRIPE_EMULATOR_WEBHOOK_URL": f"http://{HOST}:{ports['shop']}/webhooks/stripe",
            "STRIPE_EMULATOR_DUPLICATE": "0", "STRIPE_EMULATOR_SHUFFLE": "0", "STRIPE_EMULATOR_DROP": "0",
        }

        t0 = time.monotonic()
        run([str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"], shop_env, "flask db upgrade")
        run([str(BIN / "flask"), "--app", "wsgi", "seed"], shop_env, "flask seed")
        log(f"migrated and seeded in {time.monotonic() - t0:.1f} s")

        servers["emulator"] = start_gunicorn("emulator", "wsgi:app", emulator_env, ports["emulator"], logdir)
        servers["shop"] = start_gunicorn("shop", "wsgi:app", shop_env, ports["shop"], logdir)
        servers["floor"] = start_gunicorn("floor", "bench.floors:app", floor_env, ports["floor"], logdir)
        wait_ready(servers["shop"], "/static/favicon.svg")
        wait_ready(servers["floor"], "/orders/none/status")
        wait_ready(servers["emulator"], "/_stripe/v1/events")
        log(f"servers up: shop :{ports['shop']}, floor :{ports['floor']}, emulator :{ports['emulator']} (logs in {logdir})")
        runner = Runner(opts, Meter(dict(servers)), servers)
        conn = connect(shop_db)
        # Plenty of stock, so checkout never answers "sold out" (the catalogue opens at 100 units).
        conn.execute("UPDATE products SET stock = 100000000")
        products = catalogue(conn)
        two_lines = [(pid, name, unit, 1 + i) for i, (pid, name, unit) in enumerate(products[:2])]

        # ---- a browser with five orders, made through the real checkout form, two of them paid
        browser = Browser(servers["shop"].base)
        csrf, quantity_fields = browser.form()
        tokens = []
        for i in range(5):
            token = new_checkout_token()
            form = {"csrf_token": csrf, "checkout_token": token}
            form |= {name: str((i + j) % 3) for j, name in enumerate(quantity_fields)}
            if all(form[name] == "0" for name in quantity_fields):
                form[quantity_fields[0]] = "1"
            answer = browser.post("/checkout", form)
            if answer.status_code != 303:
                raise BenchError(f"POST /checkout answered {answer.status_code}, not 303: {answer.text[:400]}")
            tokens.append(token)
        browser_orders = conn.execute(
            "SELECT public_id, stripe_session_id, amount_total FROM orders WHERE checkout_token = ANY(%s) ORDER BY id",
            (tokens,)).fetchall()
        if len(browser_orders) != 5 or any(row[1] is None for row in browser_orders):
            raise BenchError(f"checkout left unexpected orders: {browser_orders}")
        for public_id, session_id, amount in browser_orders[:2]:
            body = completed_event(public_id, session_id, amount)
            answer = requests.post(servers["shop"].base + "/webhooks/stripe", data=body, timeout=30, headers={
                "Content-Type": "application/json", "Stripe-Signature": sign(body, webhook_secret)})
            if answer.status_code != 200:
                raise BenchError(f"webhook answered {answer.status_code}: {answer.text[:300]}")
        status_order = browser_orders[0][0]
        cookie = f"Cookie: session={browser.cookie}"
        log(f"browser has 5 orders (2 paid); the status loads poll {status_order}")
        same_answers(servers, browser.cookie, f"/orders/{status_order}/status")

        # ---- webhook ingestion: unique signed events, each paying its own order
        n_events = max(3000, int(opts.duration * 2500))
        webhook_checks: list[dict] = []
        webhook_rounds = iter(range(1000))

        def webhook_load(name: str) -> Load:
            shopper = f"{WEBHOOK_SHOPPER}-{next(webhook_rounds)}"

            def prepare() -> tuple[list[str], list[str]]:
                measured = insert_orders(conn, shopper, n_events, two_lines)
                warm = insert_orders(conn, shopper + "-warm-up", 600, two_lines)
                conn.execute("ANALYZE orders")
                bodies, warm_file = work / f"{shopper}.tsv", work / f"{shopper}-warm-up.tsv"
                write_bodies(warm_file, warm, webhook_secret)  # signed just before sending (300 s tolerance)
                write_bodies(bodies, measured, webhook_secret)
                return [str(bodies)], [str(warm_file)]

            def after(load: Load) -> None:
                time.sleep(1.0)  # requests still in flight when wrk stopped finish
                applied = conn.execute("SELECT count(*) FROM orders WHERE shopper_id = %s AND status = 'paid'",
                                       (shopper,)).fetchone()[0]
                load.raw["unique_events_per_s"] = applied / load.seconds
                webhook_checks.append(check_webhooks(conn, shopper, load, applied, opts.connections, runner.errors))
                if load.raw["wrapped"]:
                    runner.errors.append(f"{name}: all {n_events} prepared events were sent before the time was up")
                conn.execute("DELETE FROM orders WHERE shopper_id = ANY(%s)", ([shopper, shopper + "-warm-up"],))

            return runner.load(name, "shop", "/webhooks/stripe", "bodies", prepare=prepare, after=after)

        def forget_webhook_orders() -> None:
            conn.execute("DELETE FROM stripe_events WHERE id LIKE 'evt_bench_%' AND id NOT LIKE 'evt_bench_history_%'")
            conn.execute("VACUUM ANALYZE orders")
            conn.execute("VACUUM ANALYZE stripe_events")

        for _ in range(opts.repeat if "webhook" in groups else 0):
            forget_webhook_orders()
            webhook_load("webhook_empty")

        # ---- a storm of one event delivered over and over
        storm_checks: list[dict] = []
        for _ in range(opts.repeat if "webhook" in groups else 0):
            (dupe,) = insert_orders(conn, DUPLICATE_SHOPPER, 1, two_lines)

            def prepare_storm(dupe: tuple[str, str, int] = dupe) -> tuple[list[str], list[str]]:
                body = completed_event(*dupe)
                path = work / f"storm-{dupe[0]}.tsv"
                path.write_text(f"{sign(body, webhook_secret)}\t{body}\n" * 64)  # a line for every wrk thread
                return [str(path)], [str(path)]

            runner.load("duplicate_storm", "shop", "/webhooks/stripe", "bodies", seconds=max(1.0, opts.duration / 2),
                        prepare=prepare_storm,
                        after=lambda load, dupe=dupe: storm_checks.append(check_storm(conn, dupe[0], runner.errors)))

        # ---- the same ingestion with 100k orders and 100k processed events in the tables
        if "webhook" in groups:
            t0 = time.monotonic()
            forget_webhook_orders()
            insert_orders(conn, HISTORY_SHOPPER, BIG_TABLES, two_lines, status="paid")
            insert_processed_events(conn, BIG_TABLES)
            conn.execute("VACUUM ANALYZE")
            sizes = conn.execute("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM stripe_events)").fetchone()
            log(f"tables filled to {sizes[0]:,} orders and {sizes[1]:,} events in {time.monotonic() - t0:.1f} s")
            for _ in range(opts.repeat):
                webhook_load("webhook_100k")
            forget_webhook_orders()

        # ---- the read path, each load beside its floor, alternating
        if "read" in groups:
            status_path = f"/orders/{status_order}/status"
            for _ in range(opts.repeat):
                runner.load("floor_home", "floor", "/", headers=[cookie])
                runner.load("home", "shop", "/", headers=[cookie])
            for _ in range(opts.repeat):
                runner.load("floor_status", "floor", status_path, headers=[cookie])
                runner.load("status", "shop", status_path, headers=[cookie])
            for _ in range(opts.repeat):
                runner.load(f"status_c{STATUS_P99_CONNECTIONS}", "shop", status_path, headers=[cookie],
                            connections=STATUS_P99_CONNECTIONS)

            # ---- home with the 20 orders shown, and with many more behind them
            shoppers_file = work / "readers.tsv"
            readers = write_shoppers(shoppers_file, secret_key, 2)
            few_cookie, many_cookie = (line.split("\t")[0] for line in shoppers_file.read_text().splitlines())
            for shopper_id, count in zip(readers, (20, MANY_ORDERS), strict=True):
                insert_orders(conn, shopper_id, count, two_lines)
            conn.execute("ANALYZE orders")
            for _ in range(opts.repeat):
                runner.load("home_20_orders", "shop", "/", headers=[f"Cookie: session={few_cookie}"])
                runner.load(f"home_{MANY_ORDERS}_orders", "shop", "/", headers=[f"Cookie: session={many_cookie}"])

        # ---- checkout against the emulator: many shoppers, one order each
        checkout_checks: list[dict] = []
        form = urlencode({quantity_fields[0]: "1", **{f: "0" for f in quantity_fields[1:]}})
        for round_no in range(opts.repeat if "checkout" in groups else 0):
            prefix, warm_prefix = (f"{kind}{round_no}{secrets.token_hex(10)}"[:20] for kind in ("b", "w"))
            buyers, warm_buyers = work / f"buyers-{round_no}.tsv", work / f"warm-buyers-{round_no}.tsv"
            write_shoppers(buyers, secret_key, max(2000, int(opts.duration * 600)))
            write_shoppers(warm_buyers, secret_key, 600)

            def after_checkout(load: Load, prefix: str = prefix) -> None:
                deadline = time.monotonic() + 20  # requests still in flight when wrk stopped finish on their own
                while time.monotonic() < deadline and conn.execute(
                        "SELECT count(*) FROM orders WHERE checkout_token LIKE %s AND status = 'pending'",
                        (prefix + "%",)).fetchone()[0]:
                    time.sleep(0.5)
                checkout_checks.append(check_checkout(conn, prefix, load, opts.connections, runner.errors))

            runner.load("checkout", "shop", "/checkout", "checkout", 303,
                        prepare=lambda p=prefix, w=warm_prefix, b=buyers, wb=warm_buyers: (
                            [p, form, str(b)], [w, form, str(wb)]),
                        after=after_checkout)

        # ---- database round trips per request, in-process
        log("counting database round trips per request (bench/micro.py)")
        micro = micro_round_trips(100)
        results["micro"] = micro
        results["checks"] |= {"webhook": webhook_checks, "duplicate_storm": storm_checks, "checkout": checkout_checks}

        memory = {pid: proc_status(pid) for pid in servers["shop"].workers()}
        results["memory_kib"] = {str(pid): values for pid, values in memory.items()}
        exit_code = report(opts, runner, micro, memory, info, results)
    except BenchError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        results.setdefault("errors", []).append(str(exc))
        exit_code = 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        exit_code = 130
    except Exception as exc:  # a bug in the bench or a schema it doesn't know: not a missed goal
        traceback.print_exc()
        results.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}")
        exit_code = 2
    finally:
        for server in servers.values():
            server.stop()
        for name in created_dbs:
            try:
                admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error as exc:
                print(f"could not drop database {name}: {exc}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
        if opts.keep_logs or exit_code == 2:
            print(f"server logs kept in {logdir}", file=sys.stderr)
        else:
            shutil.rmtree(logdir, ignore_errors=True)
        if runner:
            results["scenarios"] = {
                name: [{"rps": load.rate, "requests": load.requests, "seconds": load.seconds, "p50_ms": load.p50_ms,
                        "p99_ms": load.p99_ms, "errors": load.errors, "cpu_percent_of_core": load.cpu, "wrk": load.raw}
                       for load in loads]
                for name, loads in runner.series.items()}
            results["reruns"] = runner.reruns
            results["errors"] = [*results.get("errors", []), *runner.errors]
        results["exit_status"] = exit_code
        results["wall_seconds"] = round(time.monotonic() - started, 1)
        if results.get("scenarios") or results.get("errors"):
            opts.json.parent.mkdir(parents=True, exist_ok=True)
            opts.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
            log(f"results written to {opts.json} ({results['wall_seconds']} s in all)")
    return exit_code


def report(opts: argparse.Namespace, runner: Runner, micro: dict[str, Any], memory: dict, info: dict,
           results: dict[str, Any]) -> int:
    """Print the goals table; return the exit status."""
    series = runner.series

    def values(name: str, attr: str) -> list[float]:
        return [load.raw["unique_events_per_s"] if attr == "unique" else getattr(load, attr)
                for load in series.get(name, [])]

    def pair_ratios(shop: str, floor: str) -> list[float]:
        return [a / b for a, b in zip(values(shop, "rate"), values(floor, "rate"), strict=True) if b]

    def growth(big: str, small: str) -> list[float]:
        return [a / b for a, b in zip(values(big, "p50_ms"), values(small, "p50_ms"), strict=True) if b]

    trips = {row["slug"]: row for row in micro["endpoints"]}
    checks = results["checks"]
    rows: list[tuple[str, str, str, str, str, bool | None]] = []

    def row(path: str, measured: list[float], fmt: Callable[[float], str], detail: str, goal: str,
            ok: Callable[[float], bool] | None) -> None:
        if not measured:
            return  # not run (--only)
        value = median(measured)
        rows.append((path, fmt(value), spread(measured, fmt), detail, goal, ok(value) if ok else None))

    for name, label in (("webhook_empty", "empty tables"), ("webhook_100k", f"{BIG_TABLES // 1000}k orders and events")):
        row(f"webhook: unique events/s ({label})", values(name, "unique"), rate_text,
            f"p50 {ms_text(median(values(name, 'p50_ms')))}, p99 {ms_text(median(values(name, 'p99_ms')))}",
            f"≥ {GOAL_WEBHOOK_RATE:,.0f}", lambda v: v >= GOAL_WEBHOOK_RATE)
    rows.append(("webhook: database round trips per event", f"{trips['webhook']['round_trips']:.1f}", "—",
                 f"{trips['webhook']['parses']:.1f} parses, {trips['webhook']['cpu_ms']:.2f} ms CPU",
                 f"≤ {GOAL_WEBHOOK_ROUND_TRIPS:.0f}", trips["webhook"]["round_trips"] <= GOAL_WEBHOOK_ROUND_TRIPS))
    storm_ok = all(check["ok"] for check in checks["duplicate_storm"]) and not any(
        load.errors for load in series.get("duplicate_storm", []))
    row("webhook: duplicate storm, req/s", values("duplicate_storm", "rate"), rate_text,
        f"{len(checks['duplicate_storm'])} storms", "all 2xx, one transition", lambda v: storm_ok)
    row("webhook p50: 100k tables ÷ empty", growth("webhook_100k", "webhook_empty"), ratio_text,
        "same load, same connections", f"≤ {GOAL_WEBHOOK_GROWTH:.2f}", lambda v: v <= GOAL_WEBHOOK_GROWTH)
    row("checkout-session creation, orders/s", values("checkout", "rate"), rate_text,
        f"p50 {ms_text(median(values('checkout', 'p50_ms')))}; emulator in its own process",
        f"≥ {GOAL_CHECKOUT_RATE:,.0f}", lambda v: v >= GOAL_CHECKOUT_RATE)
    row("`GET /` ÷ its floor (browser with 5 orders)", pair_ratios("home", "floor_home"), ratio_text,
        f"{rate_text(median(values('home', 'rate')))} vs {rate_text(median(values('floor_home', 'rate')))} req/s",
        f"≥ {GOAL_HOME_RATIO:.2f}", lambda v: v >= GOAL_HOME_RATIO)
    row("`GET /orders/<id>/status` ÷ its floor", pair_ratios("status", "floor_status"), ratio_text,
        f"{rate_text(median(values('status', 'rate')))} vs {rate_text(median(values('floor_status', 'rate')))} req/s",
        f"≥ {GOAL_STATUS_RATIO:.2f}", lambda v: v >= GOAL_STATUS_RATIO)
    for slug, label in (("home", "`GET /`"), ("status", "`GET /orders/<id>/status`")):
        rows.append((f"{label}: database round trips per view", f"{trips[slug]['round_trips']:.1f}", "—",
                     f"{trips[slug]['parses']:.1f} parses, {trips[slug]['cpu_ms']:.2f} ms CPU "
                     f"(floor {trips['floor_' + slug]['cpu_ms']:.2f} ms)",
                     f"≤ {GOAL_VIEW_ROUND_TRIPS:.0f} (the products' re-read every 2 s included)",
                     round(trips[slug]["round_trips"], 1) <= GOAL_VIEW_ROUND_TRIPS))
    row(f"status p99, {STATUS_P99_CONNECTIONS} connections", values(f"status_c{STATUS_P99_CONNECTIONS}", "p99_ms"),
        ms_text, f"{rate_text(median(values(f'status_c{STATUS_P99_CONNECTIONS}', 'rate')))} req/s",
        f"< {GOAL_STATUS_P99_MS:.0f} ms", lambda v: v < GOAL_STATUS_P99_MS)
    row(f"status p99, {opts.connections} connections", values("status", "p99_ms"), ms_text,
        f"floor {ms_text(median(values('floor_status', 'p99_ms')))}", "(reported)", None)
    row(f"home p50: {MANY_ORDERS:,} orders ÷ 20", growth(f"home_{MANY_ORDERS}_orders", "home_20_orders"), ratio_text,
        f"{ms_text(median(values(f'home_{MANY_ORDERS}_orders', 'p50_ms')))} vs "
        f"{ms_text(median(values('home_20_orders', 'p50_ms')))}",
        f"≤ {GOAL_HOME_GROWTH:.2f}", lambda v: v <= GOAL_HOME_GROWTH)
    total_errors = sum(load.errors for loads in series.values() for load in loads)
    rows.append(("errors, all loads and integrity checks", f"{total_errors} + {len(runner.errors)}", "—",
                 "failed requests + problems", "0", total_errors == 0 and not runner.errors))

    table = ["| path | median | spread | detail | goal | result |", "|---|---:|---:|---|---|---|"]
    for path, value, span, detail, goal, ok in rows:
        table.append(f"| {path} | {value} | {span} | {detail} | {goal} | "
                     f"{'' if ok is None else ('PASS' if ok else '**MISS**')} |")
    peak = ", ".join(f"{v.get('VmHWM', 0) / 1024:.0f} MiB" for v in memory.values())
    threads = os.environ.get("GUNICORN_THREADS", "4")
    busy = [f"{name} ({load.cpu.get('other_processes', 0):.0f}% of a core)"
            for name, loads in series.items() for load in loads if load.cpu.get("other_processes", 0) > 25]
    print()
    print(f"{opts.repeat} runs of {opts.duration:g} s per scenario, {opts.connections} connections (wrk), gunicorn "
          f"gthread 2 workers x {threads} threads; PostgreSQL {info['postgresql']}; {info['nproc']} CPUs "
          f"({info['cpu']}), {info['memory_gib']} GiB; Python {info['python']}"
          + (" (PROFILED with py-spy: numbers are lower)" if opts.profile else ""))
    print()
    print("\n".join(table))
    print()
    print(f"Peak RSS per shop worker: {peak}. Loads rerun for imbalance: {len(runner.reruns)}"
          + (f" ({'; '.join(runner.reruns)})" if runner.reruns else "") + ".")
    if busy:
        note = ("other processes used the CPUs during " + ", ".join(busy)
                + ": the machine was shared, so absolute numbers are noisy (ratios within a run less so)")
        results["notes"].append(note)
        print(f"\nWARNING: {note}")
    results["table_markdown"] = "\n".join(table)
    results["goals"] = [{"path": p, "median": v, "spread": s, "detail": d, "goal": g, "pass": ok}
                        for p, v, s, d, g, ok in rows]
    results |= {"when": datetime.now(UTC).isoformat(timespec="seconds"),
                "command": " ".join([".venv/bin/python", "bench/run.py", *sys.argv[1:]])}
    if runner.errors:
        print("\nERRORS — these numbers can't be trusted:", file=sys.stderr)
        for text in runner.errors:
            print(f"  - {text}", file=sys.stderr)
        return 2
    if not all(ok for *_, ok in rows if ok is not None):
        print("\nSome goals were missed (see the table); exit status 1.")
        return 1
    return 0


def check_webhooks(conn: psycopg.Connection, shopper: str, load: Load, applied: int, connections: int,
                   errors: list[str]) -> dict:
    """Every order whose event arrived is paid once: one processed event row, outcome 'order paid'."""
    doubled = conn.execute(
        "SELECT count(*) FROM (SELECT e.order_id FROM stripe_events e JOIN orders o ON o.id = e.order_id"
        " WHERE o.shopper_id = %s GROUP BY e.order_id HAVING count(*) > 1) d", (shopper,)).fetchone()[0]
    bad_rows = conn.execute(
        "SELECT count(*) FROM stripe_events e JOIN orders o ON o.id = e.order_id WHERE o.shopper_id = %s"
        " AND (e.processed_at IS NULL OR e.outcome <> 'order paid' OR e.state <> 'applied')", (shopper,)).fetchone()[0]
    unpaired = conn.execute(
        "SELECT count(*) FROM orders o WHERE o.shopper_id = %s AND o.status = 'paid'"
        " AND NOT EXISTS (SELECT 1 FROM stripe_events e WHERE e.order_id = o.id)", (shopper,)).fetchone()[0]
    odd_status = conn.execute(
        "SELECT count(*) FROM orders WHERE shopper_id = %s AND (status NOT IN ('paid', 'awaiting_payment')"
        " OR (status = 'paid' AND paid_at IS NULL))", (shopper,)).fetchone()[0]
    answered = load.requests - load.raw["unexpected"]
    # Answers still in flight when wrk stopped were applied but not counted by wrk.
    consistent = load.raw["wrapped"] > 0 or answered <= applied <= answered + connections
    ok = doubled == 0 and bad_rows == 0 and unpaired == 0 and odd_status == 0 and consistent
    check = {"ok": ok, "orders_paid_in_window": applied, "answers_2xx": answered, "orders_with_2_events": doubled,
             "events_not_applied_once": bad_rows, "paid_without_event": unpaired, "odd_status": odd_status}
    if not ok:
        errors.append(f"webhook integrity check failed: {check}")
    return check


def check_storm(conn: psycopg.Connection, public_id: str, errors: list[str]) -> dict:
    time.sleep(1.0)
    status, paid_at, events, outcomes = conn.execute(
        "SELECT o.status, o.paid_at, count(e.id), array_agg(e.outcome) FROM orders o"
        " LEFT JOIN stripe_events e ON e.order_id = o.id WHERE o.public_id = %s GROUP BY o.id", (public_id,)).fetchone()
    ok = status == "paid" and paid_at is not None and events == 1 and outcomes == ["order paid"]
    check = {"ok": ok, "status": status, "event_rows": events, "outcomes": outcomes}
    if not ok:
        errors.append(f"duplicate storm check failed: {check}")
    return check


def check_checkout(conn: psycopg.Connection, prefix: str, load: Load, connections: int, errors: list[str]) -> dict:
    rows = dict(conn.execute(
        "SELECT status, count(*) FROM orders WHERE checkout_token LIKE %s GROUP BY status", (prefix + "%",)).fetchall())
    without_session = conn.execute(
        "SELECT count(*) FROM orders WHERE checkout_token LIKE %s AND stripe_session_id IS NULL",
        (prefix + "%",)).fetchone()[0]
    created = sum(rows.values())
    answered = load.requests - load.raw["unexpected"]
    # One open checkout per browser: each new order asks Stripe to expire the one before it.
    ok = (set(rows) <= {"awaiting_payment", "expired"} and without_session == 0 and not load.raw["wrapped"]
          and answered <= created <= answered + connections)
    check = {"ok": ok, "orders_by_status": rows, "answers_303": answered, "without_session": without_session}
    if not ok:
        errors.append(f"checkout check failed: {check}")
    return check


if __name__ == "__main__":
    sys.exit(main())
