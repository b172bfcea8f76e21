#!/usr/bin/env python3
"""Per-request cost of the shop's hot endpoints, in-process, without gunicorn or wrk.

    .venv/bin/python bench/micro.py [--requests 400]

Creates (and drops) its own PostgreSQL database, builds the app in production config and,
through Flask's test client, measures for `GET /`, `GET /orders/<id>/status` and the
webhook: CPU milliseconds per request (this process), wall milliseconds, and the database
round trips per request (statements sent, plus the pool's pre-ping, BEGIN and
COMMIT/ROLLBACK), with `--profile` a pyinstrument profile of each. Nothing in shop/ is
changed. Single-threaded: it measures cost, not concurrency (bench/run.py does that).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import run as bench  # noqa: E402  (bench/run.py: database helpers and event signing)


class RoundTrips:
    """Counts what the app sends to PostgreSQL: statements, pings, BEGIN, COMMIT/ROLLBACK."""

    def __init__(self, engine) -> None:
        from sqlalchemy import event

        self.count = 0
        event.listen(engine, "before_cursor_execute", self._stmt)
        event.listen(engine, "begin", self._one)
        event.listen(engine, "commit", self._one)
        event.listen(engine, "rollback", self._one)
        ping = engine.dialect.do_ping  # the pool's pre-ping, on each checkout when enabled

        def counted_ping(dbapi_connection):
            self.count += 1
            return ping(dbapi_connection)

        engine.dialect.do_ping = counted_ping

    def _stmt(self, *args) -> None:
        self.count += 1

    def _one(self, *args) -> None:
        self.count += 1


def measure(label: str, call, n: int, trips: RoundTrips) -> dict:
    for _ in range(20):  # warm caches (SQLAlchemy statement cache, Jinja)
        call()
    trips.count = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        call()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    row = {"label": label, "cpu_ms": 1000 * cpu / n, "wall_ms": 1000 * wall / n, "round_trips": trips.count / n}
    print(f"  {label:<58} {row['cpu_ms']:6.2f} ms CPU  {row['wall_ms']:6.2f} ms wall  "
          f"{row['round_trips']:4.1f} round trips", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--profile", action="store_true",
                        help="also profile each endpoint with pyinstrument (bench/results/micro-*.txt)")
    opts = parser.parse_args()
    n = opts.requests

    name = f"shop_micro_{os.getpid()}_{secrets.token_hex(3)}"
    bench.admin(f'CREATE DATABASE "{name}"')
    secret = "whsec_micro_" + secrets.token_hex(8)
    os.environ.update({
        "APP_ENV": "production", "SECRET_KEY": "micro-" + secrets.token_hex(8), "DATABASE_URL": bench.db_url(name),
        "STRIPE_SECRET_KEY": "sk_test_micro", "STRIPE_WEBHOOK_SECRET": secret, "STRIPE_API_BASE": "http://127.0.0.1:9/_stripe",
    })
    try:
        bench.run([str(bench.BIN / "flask"), "--app", "wsgi", "db", "upgrade"], dict(os.environ), "db upgrade")
        bench.run([str(bench.BIN / "flask"), "--app", "wsgi", "seed"], dict(os.environ), "seed")
        import logging

        from shop import create_app
        from shop.extensions import db

        app = create_app()
        logging.getLogger("shop").setLevel(logging.WARNING)  # in-process: don't time stdout
        conn = bench.connect(name)
        client = app.test_client()
        client.get("/")  # the browser's session cookie
        with client.session_transaction() as sess:
            shopper = sess["shopper_id"]
        orders = bench.insert_orders(conn, shopper, 5, 4200)
        public_id = orders[0][0]
        with app.app_context():
            trips = RoundTrips(db.engine)
        events = iter(bench.insert_orders(conn, "micro-webhooks", 20 + 8 * (n + 20), 4200))

        def home():
            assert client.get("/").status_code == 200

        def status():
            assert client.get(f"/orders/{public_id}/status").status_code == 200

        def webhook():
            pid, sid = next(events)
            body = bench.completed_event(pid, sid, 4200)
            answer = client.post("/webhooks/stripe", data=body, headers={
                "Content-Type": "application/json", "Stripe-Signature": bench.sign(body, secret)})
            assert answer.status_code == 200, answer.get_data(as_text=True)

        print(f"{n} requests each, one thread, production config, PostgreSQL (database {name})\n")
        endpoints = (("GET / (5 orders)", home), ("GET /orders/<id>/status", status), ("POST /webhooks/stripe", webhook))
        for label, call in endpoints:
            measure(label, call, n, trips)
        if opts.profile:
            from pyinstrument import Profiler

            for (label, call), slug in zip(endpoints, ("home", "status", "webhook"), strict=True):
                profiler = Profiler(interval=0.0002)
                profiler.start()
                for _ in range(n):
                    call()
                profiler.stop()
                out = ROOT / "bench" / "results" / f"micro-{slug}.txt"
                out.write_text(profiler.output_text(unicode=True, color=False, show_all=False, short_mode=False))
                print(f"  profile of {label}: {out.relative_to(ROOT)}")

        import ceiling

        bare = ceiling.app.test_client()
        measure("the ceiling app: GET /status (for scale)", lambda: bare.get("/status"), n, trips)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
        with contextlib.suppress(Exception):
            db.engine.dispose()
        bench.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
