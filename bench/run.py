#!/usr/bin/env python3
"""Load benchmark of the shop against a bare Flask "ceiling", with pass/fail goals.

    .venv/bin/python bench/run.py [--duration 10] [--connections 50] [--json bench/results/latest.json]

One run (about 2-3 minutes with the defaults) does everything and cleans up after itself:

1. creates a fresh PostgreSQL database (and one for the Stripe emulator), runs the
   migrations (`flask --app wsgi db upgrade`, `flask --app wsgi seed`) in production config;
2. starts three gunicorn servers with the shop's own settings (`gunicorn.conf.py`,
   WEB_CONCURRENCY=2, bound to 127.0.0.1 only): the shop (APP_ENV=production), the ceiling
   (`bench/ceiling.py`), and a development instance of the shop whose offline Stripe
   emulator stands in for Stripe (the shop's STRIPE_API_BASE points at it);
3. makes a browser with a few orders through the real checkout form, pays two of them with
   signed webhooks, and pre-creates the orders and signed events for the webhook scenarios;
4. loads each scenario with wrk (bounded: --duration seconds each, after a short warm-up)
   and checks the database afterwards (every delivered event applied exactly once);
5. prints a markdown table with the goals, writes the JSON file, stops the servers and
   drops the databases (also on failure or Ctrl-C).

Exit status: 0 all goals met; 1 a performance goal missed; 2 errors (a non-2xx answer
other than the expected 303, socket errors, a failed integrity check, a server that
would not start). `--profile` also samples the shop's workers with py-spy during its
scenarios (numbers are then lower: py-spy shares the CPUs) and writes
`bench/results/profile-*.txt`.

Needs: wrk (`apt-get install -y wrk`), PostgreSQL on 127.0.0.1:5432 (user postgres, trust
auth, or set BENCH_PG_URL), and for --profile `pip install -r bench/requirements.txt`.
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
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
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

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
QUANTITY_FIELD = re.compile(r'name="(quantity-[a-z0-9-]+)"')
SESSION_COOKIE = re.compile(r"(?:^|[;,]\s*)session=([^;]+)")

# Goals (see the README's Performance section).
GOAL_HOME_RATIO = 0.60
GOAL_STATUS_RATIO = 0.75
GOAL_WEBHOOK_RATE = 400.0
GOAL_STATUS_P99_MS = 50.0

# Shoppers of the orders the bench creates directly in the database.
WEBHOOK_SHOPPER = "bench-webhooks"
WARMUP_SHOPPER = "bench-webhooks-warmup"
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


def insert_orders(conn: psycopg.Connection, shopper_id: str, count: int, amount: int) -> list[tuple[str, str]]:
    """Orders awaiting payment with a Checkout Session, as checkout leaves them. Returns (public_id, session_id)."""
    now = datetime.now(UTC)
    rows = []
    for _ in range(count):
        public_id = "ord_" + secrets.token_urlsafe(16)
        session_id = "cs_test_bench_" + secrets.token_hex(16)
        rows.append((
            public_id, shopper_id, secrets.token_urlsafe(24), "awaiting_payment", "usd", amount, 0,
            session_id, f"http://{HOST}/_stripe/pay/{session_id}", now, now,
        ))
    with conn.cursor() as cur:
        with cur.copy(
            "COPY orders (public_id, shopper_id, checkout_token, status, currency, amount_total, amount_refunded,"
            " stripe_session_id, checkout_url, created_at, updated_at) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
    return [(row[0], row[7]) for row in rows]


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


def write_bodies(path: Path, orders: list[tuple[str, str]], amount: int, secret: str) -> None:
    with open(path, "w") as out:
        for public_id, session_id in orders:
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
        for name in ("shop", "ceiling"):  # per worker: is the load spread over both?
            for i, pid in enumerate(self.servers[name].workers()):
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
        ours = sum(v for k, v in cpu.items() if k in ("shop", "ceiling", "emulator", "postgres", "wrk"))
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


def fmt_rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per scenario (default 10)")
    parser.add_argument("--connections", type=int, default=50, help="concurrent connections (default 50)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each measured load")
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "latest.json", help="where to write the results")
    parser.add_argument("--profile", action="store_true", help="sample the shop's workers with py-spy (slower numbers)")
    parser.add_argument("--profile-mode", choices=("cpu", "wall"), default="cpu",
                        help="cpu: only threads running Python (holding the GIL); wall: all threads, waits included")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (printed path)")
    opts = parser.parse_args()
    global PROFILE_MODE
    PROFILE_MODE = opts.profile_mode
    if not 1 <= opts.duration <= 200:
        parser.error("--duration must be 1..200 s (signed webhook events expire after 300 s)")

    if not (shutil.which("wrk") or Path("/usr/bin/wrk").exists()):
        print("ERROR: wrk is not installed. Install it with:  apt-get install -y wrk", file=sys.stderr)
        return 2
    if opts.profile and not (BIN / "py-spy").exists():
        print("ERROR: --profile needs py-spy:  .venv/bin/pip install -r bench/requirements.txt", file=sys.stderr)
        return 2

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
    errors: list[str] = []
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
        ports = {"shop": free_port(), "ceiling": free_port(), "emulator": free_port()}
        emulator_url = f"http://{HOST}:{ports['emulator']}/_stripe"
        base_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "GUNICORN_THREADS")}
        base_env |= {"WEB_CONCURRENCY": "2", "PYTHONUNBUFFERED": "1", "FLASK_DEBUG": "0", "SHOP_CURRENCY": "usd",
                     "ALLOW_LIVE_PAYMENTS": "0"}
        shop_env = base_env | {
            "APP_ENV": "production",
            "SECRET_KEY": "bench-" + secrets.token_hex(16),
            "DATABASE_URL": db_url(shop_db),
            "STRIPE_SECRET_KEY": "sk_test_bench",
            "STRIPE_WEBHOOK_SECRET": webhook_secret,
            "STRIPE_API_BASE": emulator_url,
            "ALLOW_STRIPE_API_BASE": "1",  # production refuses a non-Stripe API base without it
            # wrk starts thousands of checkouts from one address and browser: measure, don't limit.
            "CHECKOUT_LIMIT_PER_IP": "1000000 per second",
            "CHECKOUT_LIMIT_PER_BROWSER": "1000000 per second",
        }
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
        servers["ceiling"] = start_gunicorn("ceiling", "bench.ceiling:app", base_env, ports["ceiling"], logdir)
        wait_ready(servers["shop"], "/static/favicon.svg")
        wait_ready(servers["ceiling"], "/status")
        emulator_ok = True
        try:
            wait_ready(servers["emulator"], "/_stripe/v1/events")
        except BenchError as exc:
            emulator_ok = False
            errors.append(f"the Stripe emulator did not start: {exc}")
            log(f"ERROR {errors[-1]}")
        log(f"servers up: shop :{ports['shop']}, ceiling :{ports['ceiling']}, emulator :{ports['emulator']} (logs in {logdir})")
        meter = Meter({"shop": servers["shop"], "ceiling": servers["ceiling"], "emulator": servers["emulator"]})
        shop, ceiling = servers["shop"].base, servers["ceiling"].base
        conn = connect(shop_db)
        # Plenty of stock, so checkout never answers "sold out" (the catalogue opens at 100 units).
        has_stock = conn.execute("SELECT 1 FROM information_schema.columns WHERE table_name = 'products'"
                                 " AND column_name = 'stock'").fetchone()
        if has_stock:
            conn.execute("UPDATE products SET stock = 100000000")

        # ---- the browser with a few orders, made through the real checkout form
        browser = Browser(shop)
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
            "SELECT id, public_id, stripe_session_id, amount_total, shopper_id FROM orders"
            " WHERE checkout_token = ANY(%s) ORDER BY id", (tokens,)
        ).fetchall()
        if len(browser_orders) != 5 or any(row[2] is None for row in browser_orders):
            raise BenchError(f"checkout left unexpected orders: {browser_orders}")
        for _, public_id, session_id, amount, _ in browser_orders[:2]:  # two of them paid
            body = completed_event(public_id, session_id, amount)
            answer = requests.post(shop + "/webhooks/stripe", data=body, timeout=30, headers={
                "Content-Type": "application/json", "Stripe-Signature": sign(body, webhook_secret)})
            if answer.status_code != 200:
                raise BenchError(f"webhook answered {answer.status_code}: {answer.text[:300]}")
        status_order = browser_orders[0][1]
        cookie = f"Cookie: session={browser.cookie}"
        log(f"browser has {len(browser_orders)} orders (2 paid); status scenario polls {status_order}")

        # ---- orders and signed events for the webhook scenarios
        warmup_secs = max(0.0, opts.warmup)
        n_events = max(2000, int(opts.duration * 1500))
        amount = 4200
        t0 = time.monotonic()
        measured = insert_orders(conn, WEBHOOK_SHOPPER, n_events, amount)
        warm = insert_orders(conn, WARMUP_SHOPPER, 400, amount)
        dupe = insert_orders(conn, DUPLICATE_SHOPPER, 1, amount)
        conn.execute("ANALYZE")
        log(f"{len(measured) + len(warm) + 1} orders for the webhook scenarios inserted in {time.monotonic() - t0:.1f} s")

        loads: dict[str, Load] = {}

        def scenario(name: str, url: str, mode: str, expected: int, args: list[str] = (),
                     headers: list[str] = (), warm_args: list[str] | None = None, profile: bool = False,
                     seconds: float | None = None) -> Load:
            if warmup_secs:
                wrk(url, warmup_secs, opts.connections, mode, expected, warm_args if warm_args is not None else args, headers)
            profile_to = BENCH / "results" / f"profile-{name}.txt" if (opts.profile and profile) else None
            load = wrk(url, seconds or opts.duration, opts.connections, mode, expected, args, headers, meter,
                       profile_to.with_suffix(".raw") if profile_to else None, servers["shop"].proc.pid)
            if profile_to:
                profile_to.write_text(summarise_profile(profile_to.with_suffix(".raw")))
            loads[name] = load
            log(f"{name:<16} {load.rate:8,.0f} req/s  p50 {load.p50_ms:6.1f} ms  p99 {load.p99_ms:6.1f} ms"
                f"  errors {load.errors}  cpu% {load.cpu}")
            if load.errors:
                errors.append(f"{name}: {load.errors} errors ({json.dumps({k: v for k, v in load.raw.items() if k != 'wrk_output'})})")
            return load

        scenario("ceiling_home", ceiling + "/", "get", 200)
        scenario("home", shop + "/", "get", 200, headers=[cookie], profile=True)
        scenario("ceiling_status", ceiling + "/status", "get", 200)
        scenario("status", f"{shop}/orders/{status_order}/status", "get", 200, headers=[cookie], profile=True)

        # Webhook ingestion: sign just before sending (Stripe's 300 s tolerance).
        warm_file, bodies_file, dupe_file = work / "warm.tsv", work / "bodies.tsv", work / "dupe.tsv"
        t0 = time.monotonic()
        write_bodies(warm_file, warm, amount, webhook_secret)
        write_bodies(bodies_file, measured, amount, webhook_secret)
        log(f"{len(measured) + len(warm)} events signed in {time.monotonic() - t0:.1f} s")
        paid_before = conn.execute("SELECT count(*) FROM orders WHERE shopper_id = %s AND status = 'paid'",
                                   (WEBHOOK_SHOPPER,)).fetchone()[0]
        webhook = scenario("webhook", shop + "/webhooks/stripe", "bodies", 200, [str(bodies_file)],
                           warm_args=[str(warm_file)], profile=True)
        time.sleep(1.0)  # let requests still in flight when wrk stopped finish
        applied = conn.execute("SELECT count(*) FROM orders WHERE shopper_id = %s AND status = 'paid'",
                               (WEBHOOK_SHOPPER,)).fetchone()[0] - paid_before
        unique_rate = applied / webhook.seconds
        results["checks"]["webhook"] = check_webhooks(conn, webhook, applied, opts.connections, errors)
        if webhook.raw["wrapped"]:
            errors.append(f"webhook: all {n_events} prepared events were sent before the time was up; "
                          "the rate counts unique events only, but raise n_events")

        # A storm of one event.
        dupe_body = completed_event(dupe[0][0], dupe[0][1], amount)
        dupe_file.write_text(f"{sign(dupe_body, webhook_secret)}\t{dupe_body}\n" * 64)  # a line for every wrk thread
        storm_seconds = max(1.0, opts.duration / 2)
        storm = scenario("duplicate_storm", shop + "/webhooks/stripe", "bodies", 200, [str(dupe_file)],
                         seconds=storm_seconds, warm_args=[str(warm_file)])
        time.sleep(1.0)
        results["checks"]["duplicate_storm"] = check_storm(conn, dupe[0][0], errors)

        # Checkout creation against the emulator, by a second browser.
        checkout = None
        if emulator_ok:
            buyer = Browser(shop)
            csrf, quantity_fields = buyer.form()
            form = urlencode({"csrf_token": csrf, quantity_fields[0]: "1", **{f: "0" for f in quantity_fields[1:]}})
            # `buyer.form()` set the session; checkout tokens: prefix (20) + thread (2) + counter (10) = 32.
            warm_prefix, prefix = "w" + secrets.token_hex(10)[:19], "b" + secrets.token_hex(10)[:19]
            checkout = scenario("checkout", shop + "/checkout", "checkout", 303, [prefix, form],
                                headers=[f"Cookie: session={buyer.cookie}"], warm_args=[warm_prefix, form], profile=True)
            # Requests still in flight when wrk stopped finish on their own (bounded wait).
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and conn.execute(
                    "SELECT count(*) FROM orders WHERE checkout_token LIKE %s AND status = 'pending'",
                    (prefix + "%",)).fetchone()[0]:
                time.sleep(0.5)
            results["checks"]["checkout"] = check_checkout(conn, prefix, checkout, opts.connections, errors)
        else:
            results["notes"].append("checkout scenario skipped: the Stripe emulator did not start")

        # Peak memory of the shop's workers.
        memory = {pid: proc_status(pid) for pid in servers["shop"].workers()}
        results["memory_kib"] = {str(pid): values for pid, values in memory.items()}
        peak_mb = max((v.get("VmHWM", 0) for v in memory.values()), default=0) / 1024

        # ---- goals and the table
        home, status = loads["home"], loads["status"]
        home_ratio = home.rate / loads["ceiling_home"].rate
        status_ratio = status.rate / loads["ceiling_status"].rate
        total_errors = sum(load.errors for load in loads.values())
        goals = {
            "home_ratio": (home_ratio >= GOAL_HOME_RATIO, f"≥ {GOAL_HOME_RATIO:.0%} of ceiling"),
            "status_ratio": (status_ratio >= GOAL_STATUS_RATIO, f"≥ {GOAL_STATUS_RATIO:.0%} of ceiling"),
            "status_p99": (status.p99_ms < GOAL_STATUS_P99_MS, f"p99 < {GOAL_STATUS_P99_MS:.0f} ms"),
            "webhook_rate": (unique_rate >= GOAL_WEBHOOK_RATE, f"≥ {GOAL_WEBHOOK_RATE:.0f} events/s"),
            "zero_errors": (not errors and total_errors == 0, "0 errors"),
        }
        mark = lambda ok: "PASS" if ok else "**FAIL**"  # noqa: E731
        rows = [
            ("`GET /` (browser, 5 orders)", home.rate, home.p50_ms, home.p99_ms, loads["ceiling_home"].rate,
             f"{home_ratio:.0%}", goals["home_ratio"][1], mark(goals["home_ratio"][0])),
            ("`GET /orders/<id>/status`", status.rate, status.p50_ms, status.p99_ms, loads["ceiling_status"].rate,
             f"{status_ratio:.0%}", f"{goals['status_ratio'][1]}; {goals['status_p99'][1]}",
             mark(goals["status_ratio"][0] and goals["status_p99"][0])),
            ("webhook: unique events/s", unique_rate, webhook.p50_ms, webhook.p99_ms, None, "—",
             goals["webhook_rate"][1], mark(goals["webhook_rate"][0])),
            ("webhook: duplicate storm", storm.rate, storm.p50_ms, storm.p99_ms, None, "—",
             "all 2xx, one transition", mark(results["checks"]["duplicate_storm"]["ok"] and not storm.errors)),
        ]
        if checkout:
            rows.append(("checkout via emulator: orders/s", checkout.rate, checkout.p50_ms, checkout.p99_ms, None,
                         "—", "all 303 (info)", mark(not checkout.errors and results["checks"]["checkout"]["ok"])))
        else:
            rows.append(("checkout via emulator: orders/s", None, None, None, None, "—", "emulator down", "**FAIL**"))
        rows.append(("ceiling `GET /`", loads["ceiling_home"].rate, loads["ceiling_home"].p50_ms,
                     loads["ceiling_home"].p99_ms, None, "—", "—", ""))
        rows.append(("ceiling `GET /status`", loads["ceiling_status"].rate, loads["ceiling_status"].p50_ms,
                     loads["ceiling_status"].p99_ms, None, "—", "—", ""))

        table = ["| scenario | req/s | p50 | p99 | ceiling req/s | ratio | goal | result |",
                 "|---|---:|---:|---:|---:|---:|---|---|"]
        for name, rate, p50, p99, ceil, ratio, goal, ok in rows:
            table.append(f"| {name} | {fmt_rate(rate)} | {fmt_ms(p50)} | {fmt_ms(p99)} | {fmt_rate(ceil)} | {ratio} | {goal} | {ok} |")
        worker_mem = ", ".join(f"{v.get('VmHWM', 0) / 1024:.0f} MiB" for v in memory.values())
        table.append(f"| peak RSS per shop worker (VmHWM) | {worker_mem} | | | | | (info) | |")
        table.append(f"| errors (all scenarios) | {total_errors} failed requests, {len(errors)} problems | | | | | "
                     f"{goals['zero_errors'][1]} | {mark(goals['zero_errors'][0])} |")

        print()
        print(f"Shop vs ceiling: {opts.connections} connections, {opts.duration:g} s per scenario, gunicorn gthread "
              f"2 workers x {os.environ.get('GUNICORN_THREADS', '4')} threads, PostgreSQL {info['postgresql']}; {info['nproc']} CPUs, {info['memory_gib']} GiB"
              + (" (PROFILED with py-spy: numbers are lower)" if opts.profile else ""))
        print()
        print("\n".join(table))
        print()
        print("CPU during each load (% of one core): "
              + "; ".join(f"{name}: " + ", ".join(f"{k} {v:.0f}" for k, v in load.cpu.items() if v >= 1)
                          for name, load in loads.items()))

        busy = {
            name: load.cpu.get("other_processes", 0)
            for name, load in loads.items()
            if load.cpu.get("other_processes", 0) > 25
        }
        if busy:
            note = ("other processes used the CPUs during " + ", ".join(f"{k} ({v:.0f}% of a core)" for k, v in busy.items())
                    + ": this machine was shared, so these numbers are noisy; rerun on a quiet machine to compare")
            results["notes"].append(note)
            print(f"\nWARNING: {note}")

        results |= {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([".venv/bin/python", "bench/run.py", *sys.argv[1:]]),
            "settings": {"duration_s": opts.duration, "connections": opts.connections, "warmup_s": warmup_secs,
                         "gunicorn": "gunicorn.conf.py (gthread, WEB_CONCURRENCY=2, GUNICORN_THREADS=" + os.environ.get("GUNICORN_THREADS", "4") + ")",
                         "webhook_events_prepared": n_events, "profiled": opts.profile},
            "goals": {name: {"pass": ok, "goal": text} for name, (ok, text) in goals.items()},
            "summary": {
                "home_rps": home.rate, "ceiling_home_rps": loads["ceiling_home"].rate, "home_ratio": home_ratio,
                "status_rps": status.rate, "ceiling_status_rps": loads["ceiling_status"].rate,
                "status_ratio": status_ratio, "status_p99_ms": status.p99_ms,
                "webhook_unique_events_per_s": unique_rate, "duplicate_storm_rps": storm.rate,
                "checkout_orders_per_s": checkout.rate if checkout else None,
                "peak_rss_mib_per_worker": round(peak_mb, 1), "errors": total_errors,
            },
            "errors": errors,
            "table_markdown": "\n".join(table),
        }
        for name, load in loads.items():
            results["scenarios"][name] = {"rps": load.rate, "requests": load.requests, "seconds": load.seconds,
                                          "p50_ms": load.p50_ms, "p99_ms": load.p99_ms, "errors": load.errors,
                                          "cpu_percent_of_core": load.cpu, "wrk": load.raw}
        all_goals = all(ok for ok, _ in goals.values())
        if errors:
            print("\nERRORS — these numbers can't be trusted:", file=sys.stderr)
            for text in errors:
                print(f"  - {text}", file=sys.stderr)
            exit_code = 2
        else:
            exit_code = 0 if all_goals else 1
            if not all_goals:
                print("\nSome goals were missed (see the table); exit status 1.")
    except BenchError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        results["errors"] = [*errors, str(exc)]
        exit_code = 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        exit_code = 130
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
        results["exit_status"] = exit_code
        results["wall_seconds"] = round(time.monotonic() - started, 1)
        if results.get("scenarios") or results.get("errors"):
            opts.json.parent.mkdir(parents=True, exist_ok=True)
            opts.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
            log(f"results written to {opts.json} ({results['wall_seconds']} s in all)")
    return exit_code


def check_webhooks(conn: psycopg.Connection, load: Load, applied: int, connections: int, errors: list[str]) -> dict:
    """Every order whose event arrived is paid once: one processed event row, outcome 'order paid'."""
    shoppers = (WEBHOOK_SHOPPER, WARMUP_SHOPPER)
    doubled = conn.execute(
        "SELECT count(*) FROM (SELECT e.order_id FROM stripe_events e JOIN orders o ON o.id = e.order_id"
        " WHERE o.shopper_id = ANY(%s) GROUP BY e.order_id HAVING count(*) > 1) d", (list(shoppers),)).fetchone()[0]
    bad_rows = conn.execute(
        "SELECT count(*) FROM stripe_events e JOIN orders o ON o.id = e.order_id WHERE o.shopper_id = ANY(%s)"
        " AND (e.processed_at IS NULL OR e.outcome <> 'order paid')", (list(shoppers),)).fetchone()[0]
    unpaired = conn.execute(
        "SELECT count(*) FROM orders o WHERE o.shopper_id = ANY(%s) AND o.status = 'paid'"
        " AND NOT EXISTS (SELECT 1 FROM stripe_events e WHERE e.order_id = o.id)", (list(shoppers),)).fetchone()[0]
    odd_status = conn.execute(
        "SELECT count(*) FROM orders WHERE shopper_id = ANY(%s) AND status NOT IN ('paid', 'awaiting_payment')"
        " OR (shopper_id = ANY(%s) AND status = 'paid' AND paid_at IS NULL)", (list(shoppers), list(shoppers))).fetchone()[0]
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
    ok = set(rows) <= {"awaiting_payment"} and without_session == 0 and answered <= created <= answered + connections
    check = {"ok": ok, "orders_by_status": rows, "answers_303": answered, "without_session": without_session}
    if not ok:
        errors.append(f"checkout check failed: {check}")
    return check


if __name__ == "__main__":
    sys.exit(main())
