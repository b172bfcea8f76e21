"""Webhook ingestion: unique signed `checkout.session.completed` events, each paying its own
order, on empty tables beside the webhook floor (`bench/floors.py`), alternating, each load
with orders of its own; again with 100k orders and 100k processed events; and a storm of one
event delivered over and over. The database is checked after each load."""
from __future__ import annotations

import time

from checks import check_storm, check_webhooks, same_webhook_answers
from load import Load
from servers import log
from shoppers import completed_event, insert_orders, insert_processed_events, sign, write_bodies

from . import Context

BIG_TABLES = 100_000
# Shoppers of the orders the scenario writes straight into the database.
WEBHOOK_SHOPPER = "bench-webhooks"
HISTORY_SHOPPER = "bench-history"
DUPLICATE_SHOPPER = "bench-duplicates"
SAME_ANSWER_SHOPPER = "bench-same-answer"


def run(ctx: Context) -> None:
    opts, conn, runner, secret = ctx.opts, ctx.conn, ctx.runner, ctx.stack.webhook_secret
    work = ctx.stack.work
    n_events = max(3000, int(opts.duration * 2500))
    rounds = iter(range(1000))

    def webhook_load(name: str, server: str = "shop") -> Load:
        """One load of unique events, each paying one of this load's own fresh orders."""
        shopper = f"{WEBHOOK_SHOPPER}-{next(rounds)}"
        webhook_checks = ctx.checks.setdefault("webhook" if server == "shop" else "floor_webhook", [])

        def prepare() -> tuple[list[str], list[str]]:
            measured = insert_orders(conn, shopper, n_events, ctx.two_lines)
            warm = insert_orders(conn, shopper + "-warm-up", 600, ctx.two_lines)
            conn.execute("ANALYZE orders")
            bodies, warm_file = work / f"{shopper}.tsv", work / f"{shopper}-warm-up.tsv"
            write_bodies(warm_file, warm, secret)  # signed just before sending (300 s tolerance)
            write_bodies(bodies, measured, secret)
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

        return runner.load(name, server, "/webhooks/stripe", "bodies", prepare=prepare, after=after)

    def forget_webhook_orders() -> None:
        conn.execute("DELETE FROM stripe_events WHERE id LIKE 'evt_bench_%' AND id NOT LIKE 'evt_bench_history_%'")
        conn.execute("VACUUM ANALYZE orders")
        conn.execute("VACUUM ANALYZE stripe_events")

    orders = insert_orders(conn, SAME_ANSWER_SHOPPER, 2, ctx.two_lines)
    same_webhook_answers(ctx.stack.servers, {"shop": completed_event(*orders[0]), "floor": completed_event(*orders[1])},
                         secret)
    conn.execute("DELETE FROM orders WHERE shopper_id = %s", (SAME_ANSWER_SHOPPER,))
    for _ in range(opts.repeat):
        for name, server in (("floor_webhook_empty", "floor"), ("webhook_empty", "shop")):
            forget_webhook_orders()
            webhook_load(name, server)

    # A storm of one event delivered over and over: one transition, every answer 2xx.
    storm_checks = ctx.checks.setdefault("duplicate_storm", [])
    for _ in range(opts.repeat):
        (dupe,) = insert_orders(conn, DUPLICATE_SHOPPER, 1, ctx.two_lines)

        def prepare_storm(dupe: tuple[str, str, int] = dupe) -> tuple[list[str], list[str]]:
            body = completed_event(*dupe)
            path = work / f"storm-{dupe[0]}.tsv"
            path.write_text(f"{sign(body, secret)}\t{body}\n" * 64)  # a line for every wrk thread
            return [str(path)], [str(path)]

        runner.load("duplicate_storm", "shop", "/webhooks/stripe", "bodies", seconds=max(1.0, opts.duration / 2),
                    prepare=prepare_storm,
                    after=lambda load, dupe=dupe: storm_checks.append(check_storm(conn, dupe[0], runner.errors)))

    # The same ingestion with 100k orders and 100k processed events in the tables.
    t0 = time.monotonic()
    forget_webhook_orders()
    insert_orders(conn, HISTORY_SHOPPER, BIG_TABLES, ctx.two_lines, status="paid")
    insert_processed_events(conn, BIG_TABLES)
    conn.execute("VACUUM ANALYZE")
    sizes = conn.execute("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM stripe_events)").fetchone()
    log(f"tables filled to {sizes[0]:,} orders and {sizes[1]:,} events in {time.monotonic() - t0:.1f} s")
    for _ in range(opts.repeat):
        webhook_load("webhook_100k")
    forget_webhook_orders()
