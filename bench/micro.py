#!/usr/bin/env python3
"""Per-request cost of the shop's hot endpoints, in-process, without gunicorn or wrk.

    .venv/bin/python bench/micro.py [--requests 400] [--json out.json] [--profile] [--cpu-profile checkout]

Creates (and drops) its own PostgreSQL database, builds the app in production config and,
through Flask's test client, measures for `GET /` (a browser with five orders, two items
each), `GET /orders/<id>/status`, the webhook and `POST /checkout` (by first-time shoppers,
against the offline Stripe emulator in a gunicorn process of its own): CPU milliseconds per request (this
process, and PostgreSQL's server processes: the machine's, so keep it otherwise idle), wall milliseconds, and what really went over the wire to PostgreSQL per request
(round trips and statements parsed, from libpq's protocol trace), and CPU and wall time for
the floors of the same four endpoints (`bench/floors.py`). `--profile` writes a pyinstrument profile of each endpoint to
`bench/results/`. Nothing in shop/ is changed. Single-threaded: it measures cost, not
concurrency (bench/run.py does that).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import shoppers as bench  # noqa: E402  (orders, shoppers and signed events, as bench/run.py makes them)
from servers import Stack, connect  # noqa: E402

ENDPOINTS = ("home", "status", "webhook", "checkout")


class RoundTrips:
    """Counts what really crosses the wire to PostgreSQL, from libpq's protocol trace.

    Every connection the engine opens writes its trace to one file. A round trip ends with
    the server's ReadyForQuery (one per simple query, one per extended-protocol Sync); a
    Parse message is a statement the server parses and plans again (a prepared statement
    is parsed once per connection). A BEGIN or ROLLBACK the driver skips is not counted.
    """

    def __init__(self, engine, path: Path) -> None:
        from psycopg import pq
        from sqlalchemy import event

        self.path = path
        self.offset = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)

        def trace(dbapi_connection, _record) -> None:
            dbapi_connection.pgconn.trace(fd)
            dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

        engine.dispose()  # connections opened before now would go uncounted
        event.listen(engine, "connect", trace)

    def take(self) -> tuple[int, int]:
        """Round trips and Parse messages since the last call."""
        with open(self.path, "rb") as trace:
            trace.seek(self.offset)
            text = trace.read()
            self.offset += len(text)
        return text.count(b"\tReadyForQuery\t"), text.count(b"\tParse\t")

    def messages(self) -> list[str]:
        """What the client sent since the last call, one line per query, Bind or Sync."""
        with open(self.path, "rb") as trace:
            trace.seek(self.offset)
            text = trace.read().decode(errors="replace")
            self.offset += len(text.encode())
        sent = [line.split("\t", 3) + [""] for line in text.splitlines() if line.startswith("F\t")]
        return [f"{kind:<6} {rest[:150]}" for _, _, kind, rest, *_ in sent if kind in ("Query", "Parse", "Bind", "Sync")]


def postgres_cpu_seconds() -> float:
    """CPU time (user and system) of every PostgreSQL server process on this machine so far."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)
            if fields[0].endswith("(postgres"):
                ticks += sum(int(value) for value in fields[1].split()[11:13])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(label: str, call, n: int, trips: RoundTrips | None) -> dict:
    for _ in range(20):  # warm caches (SQLAlchemy statement cache, Jinja, prepared statements)
        call()
    if trips:
        trips.take()
    # The setup's garbage (app, databases, test data) would otherwise be swept by a full
    # collection in whichever endpoint's run comes first: about 0.25 ms more per request there.
    gc.collect()
    cpu, wall, database = time.process_time(), time.perf_counter(), postgres_cpu_seconds()
    for _ in range(n):
        call()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    database = postgres_cpu_seconds() - database
    round_trips, parses = trips.take() if trips else (0, 0)
    row = {"label": label, "cpu_ms": 1000 * cpu / n, "wall_ms": 1000 * wall / n, "postgres_cpu_ms": 1000 * database / n,
           "round_trips": round_trips / n, "parses": parses / n}
    wire = f"{row['round_trips']:4.1f} round trips  {row['parses']:4.1f} parses" if trips else ""
    print(f"  {label:<36} {row['cpu_ms']:6.2f} ms CPU  {row['postgres_cpu_ms']:5.2f} ms PostgreSQL CPU"
          f"  {row['wall_ms']:6.2f} ms wall  {wire}", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--json", type=Path, help="also write the measurements to this file")
    parser.add_argument("--cpu-profile", choices=ENDPOINTS + tuple(f"floor_{slug}" for slug in ENDPOINTS),
                        help="print cProfile's CPU-time table (cumulative) of one endpoint")
    parser.add_argument("--wire", choices=ENDPOINTS,
                        help="print what one request of an endpoint sends to PostgreSQL")
    parser.add_argument("--profile", action="store_true",
                        help="also profile each endpoint with pyinstrument (bench/results/micro-*.txt)")
    opts = parser.parse_args()
    n = opts.requests

    secret = "whsec_micro_" + secrets.token_hex(8)
    workdir = Path(tempfile.mkdtemp(prefix="shop-micro-"))
    stack = Stack(workdir, workdir, tag=f"micro_{os.getpid()}_{secrets.token_hex(3)}", webhook_secret=secret)
    secret_key = stack.secret_key
    trace = Path(tempfile.mkstemp(prefix="shop-micro-", suffix=".trace")[1])
    conn = None
    try:
        stack.migrate()
        # Checkout talks to the emulator in a process of its own: only the shop's CPU is timed here.
        emulator = stack.start_emulator("emulator", 0)
        os.environ.update(stack.shop_env(emulator.port))
        import logging

        from shop import create_app
        from shop.extensions import db

        app = create_app()
        logging.getLogger("shop").setLevel(logging.WARNING)  # in-process: don't time stdout
        conn = connect(stack.shop_db)
        products = bench.catalogue(conn)
        lines = [(pid, product_name, unit, 1 + i) for i, (pid, product_name, unit) in enumerate(products[:2])]
        client = app.test_client()
        client.get("/")  # the browser's session cookie
        with client.session_transaction() as sess:
            shopper = sess["shopper_id"]
        orders = bench.insert_orders(conn, shopper, 5, lines)
        public_id = orders[0][0]
        with app.app_context():
            trips = RoundTrips(db.engine, trace)
        events = iter(bench.insert_orders(conn, "micro-webhooks", 40 + 3 * (n + 20), lines))
        conn.execute("UPDATE products SET stock = 100000000")
        conn.execute("ANALYZE")
        shoppers_file = workdir / "shoppers.tsv"
        bench.write_shoppers(shoppers_file, secret_key, 20 + 3 * (n + 20))
        shoppers = iter(line.split("\t") for line in shoppers_file.read_text().splitlines())
        buyer = app.test_client()
        cart = {f"quantity-{slug}": "1" for (slug,) in conn.execute("SELECT slug FROM products LIMIT 1")}

        import floors  # the same-work floors, on the same database and cookie

        floor = floors.app.test_client()
        floor.set_cookie("session", client.get_cookie("session").value)

        def home():
            page = client.get("/")
            assert page.status_code == 200 and page.get_data().count(b'class="order"') == 5

        def status():
            assert client.get(f"/orders/{public_id}/status").status_code == 200

        def webhook_to(stripe_client):
            """Each call pays the next of the prepared orders; Stripe sends no cookie."""
            def webhook():
                pid, sid, amount = next(events)
                body = bench.completed_event(pid, sid, amount)
                answer = stripe_client.post("/webhooks/stripe", data=body, headers={
                    "Content-Type": "application/json", "Stripe-Signature": bench.sign(body, secret)})
                assert answer.status_code == 200, answer.get_data(as_text=True)
            return webhook

        def checkout():
            cookie, csrf, address = next(shoppers)  # a first-time shopper each time, as in bench/run.py
            buyer.set_cookie("session", cookie)
            answer = buyer.post("/checkout", data={**cart, "csrf_token": csrf, "checkout_token": secrets.token_urlsafe(24)},
                                headers={"X-Forwarded-For": address, "Referer": "https://localhost/"})
            assert answer.status_code == 303, answer.get_data(as_text=True)

        def floor_home():
            page = floor.get("/")
            assert page.status_code == 200 and page.get_data().count(b'class="order"') == 5

        def floor_status():
            assert floor.get(f"/orders/{public_id}/status").status_code == 200

        floor_buyer = floors.app.test_client()

        def floor_checkout():
            cookie, csrf, address = next(shoppers)
            floor_buyer.set_cookie("session", cookie)
            answer = floor_buyer.post("/checkout", data={**cart, "csrf_token": csrf,
                                                         "checkout_token": secrets.token_urlsafe(24)})
            assert answer.status_code == 303, answer.get_data(as_text=True)

        print(f"{n} requests each, one thread, production config, PostgreSQL (database {stack.shop_db})\n")
        endpoints = (("home", "GET / (5 orders)", home), ("status", "GET /orders/<id>/status", status),
                     ("webhook", "POST /webhooks/stripe", webhook_to(app.test_client())),
                     ("checkout", "POST /checkout", checkout))
        floor_endpoints = (
            ("floor_home", "floor: GET / (5 orders)", floor_home),
            ("floor_status", "floor: GET /orders/<id>/status", floor_status),
            ("floor_webhook", "floor: POST /webhooks/stripe", webhook_to(floors.app.test_client())),
            ("floor_checkout", "floor: POST /checkout", floor_checkout))
        rows = [measure(label, call, n, trips) | {"slug": slug} for slug, label, call in endpoints]
        rows += [measure(label, call, n, None) | {"slug": slug} for slug, label, call in floor_endpoints]
        if opts.wire:
            trips.take()
            {slug: call for slug, _, call in endpoints}[opts.wire]()
            print(f"\nwhat one {opts.wire} request sent to PostgreSQL:")
            for line in trips.messages():
                print("  " + line)
        if opts.cpu_profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile(time.process_time)  # CPU only: waiting on the database is not counted
            call = {slug: call for slug, _, call in endpoints + floor_endpoints}[opts.cpu_profile]
            profiler.enable()
            for _ in range(n):
                call()
            profiler.disable()
            stats = pstats.Stats(profiler)
            stats.sort_stats("cumulative").print_stats(60)
            by_file: dict[str, float] = {}
            for (filename, _, _), (_, _, own, _, _) in stats.stats.items():
                package = filename.split("site-packages/")[-1].split("/")[0] if "site-packages" in filename else filename
                by_file[package] = by_file.get(package, 0.0) + own
            print("own CPU per request, by package or file:")
            for package, own in sorted(by_file.items(), key=lambda item: -item[1])[:25]:
                print(f"  {1e6 * own / n:8.1f} us  {package}")
        if opts.profile:
            from pyinstrument import Profiler

            results = ROOT / "bench" / "results"
            results.mkdir(parents=True, exist_ok=True)
            for slug, label, call in endpoints:
                profiler = Profiler(interval=0.0002)
                profiler.start()
                for _ in range(n):
                    call()
                profiler.stop()
                out = results / f"micro-{slug}.txt"
                out.write_text(profiler.output_text(unicode=True, color=False, show_all=False, short_mode=False))
                print(f"  profile of {label}: {out.relative_to(ROOT)}")
        if opts.json:
            opts.json.write_text(json.dumps({"requests": n, "endpoints": rows}, indent=2) + "\n")
    finally:
        with contextlib.suppress(Exception):
            conn.close()
        with contextlib.suppress(Exception):
            db.engine.dispose()
        trace.unlink(missing_ok=True)
        stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
