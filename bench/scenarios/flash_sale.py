"""A flash sale on one instance: N shoppers, each a browser and an address of its own, click Buy
once at evenly spread moments over W seconds (open loop: an arrival doesn't wait for earlier
answers), while every call to Stripe takes 400 ms (`STRIPE_EMULATOR_LATENCY`).

The shop runs with its default configuration (gunicorn.conf.py, WEB_CONCURRENCY=2, production
rate limits, counted in Redis when one answers), beside the checkout floor under the same crowd.
Each crowd runs twice: with stock for every shopper, and with stock for 100 (exactly 100 units
reserved, everyone else a sold-out page). After each, the stock is checked: every unit that left
stock belongs to one open or paid order, none twice.
"""
from __future__ import annotations

import statistics
import time
from urllib.parse import urlencode

from checks import check_stock
from load import Answer, Arrival, Crowd, crowd, http_request
from servers import REDIS_URL, free_port, log, redis_answers
from shoppers import Browser, new_checkout_token, signed_shoppers

from . import Context

STRIPE_LATENCY_MS = 400
SHOPPER_TIMEOUT = 30.0  # seconds a shopper waits for the payment page before giving up
EMULATOR_THREADS = 256  # every waiting call holds one of the emulator's threads (Stripe has no such bound)
SCARCE_STOCK = 100


def paid_page(answer: Answer) -> bool:
    return answer.status == 303 and "/_stripe/pay/" in answer.location


def sold_out_page(answer: Answer) -> bool:
    return answer.status == 409 and "sold out" in answer.body


def busy_page(answer: Answer) -> bool:
    """Load shed: a clear "busy, nothing was charged, try again" answer."""
    return answer.status == 503 and "nothing was charged" in answer.body


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(share * len(values)) - 1))]


def summary(result: Crowd, shoppers: int) -> dict:
    paid = result.latencies(paid_page)
    answered = result.latencies(lambda a: a.status is not None)
    failures = [a for a in result.answers if not (paid_page(a) or sold_out_page(a) or busy_page(a))]
    return {
        "shoppers": shoppers,
        "payment_pages": len(paid),
        "sold_out_pages": sum(map(sold_out_page, result.answers)),
        "busy_pages": sum(map(busy_page, result.answers)),
        "other_answers": len(failures),
        "first_other_answers": [f"{a.status or a.failure}: {a.body[:160]!r}" for a in failures[:3]],
        "timeouts": sum(a.failure == "timeout" for a in result.answers),
        "codes": result.codes(),
        "p50_s": statistics.median(answered) if answered else float("nan"),
        "p99_s": percentile(answered, 0.99),
        "max_s": answered[-1] if answered else float("nan"),
        "checkouts_per_s": len(paid) / result.seconds if result.seconds else 0.0,
        "seconds": result.seconds,
        "cpu_percent_of_core": result.cpu,
    }


def run(ctx: Context) -> None:
    opts, stack, conn = ctx.opts, ctx.stack, ctx.conn
    shoppers_count, window = opts.crowd, opts.crowd_seconds
    product_id = ctx.products[0][0]
    shop_port = free_port()
    emulator = stack.start_emulator("emulator_slow", shop_port, latency_ms=STRIPE_LATENCY_MS, threads=EMULATOR_THREADS)
    shop_extra = {"RATELIMIT_KEY_PREFIX": f"bench-{stack.tag}"}
    if redis_answers(REDIS_URL):
        shop_extra["REDIS_URL"] = REDIS_URL
    log(f"flash sale: {shoppers_count} shoppers over {window:g} s, Stripe at {STRIPE_LATENCY_MS} ms; "
        f"rate limits counted {'in Redis' if 'REDIS_URL' in shop_extra else 'per worker (no Redis)'}")
    # One of the two servers at a time: each worker keeps the connections it opens
    # (DATABASE_POOL_SIZE), and the run's other servers already hold theirs.
    starts = {
        "flash_sale": lambda: stack.start("shop_flash", "wsgi:app", stack.shop_env(emulator.port, **shop_extra),
                                          "/static/favicon.svg", shop_port),
        "floor_flash_sale": lambda: stack.start("floor_flash", "bench.floors:app", stack.floor_env(emulator.port),
                                                "/orders/none/status"),
    }
    quantity_fields: list[str] | None = None  # read from the shop's own page, which starts first
    results = ctx.figures.setdefault("flash_sale", {})
    try:
        for _ in range(opts.repeat):
            for name, start in starts.items():
                server = start()
                if quantity_fields is None:
                    _, quantity_fields = Browser(server.base).form()
                for stock, label in ((shoppers_count, name), (SCARCE_STOCK, f"{name}_stock_{SCARCE_STOCK}")):
                    conn.execute("UPDATE products SET stock = %s WHERE id = %s", (stock, product_id))
                    shoppers = signed_shoppers(stack.secret_key, shoppers_count)
                    arrivals = []
                    for i, (_, cookie, csrf, address) in enumerate(shoppers):
                        body = urlencode({"csrf_token": csrf, "checkout_token": new_checkout_token(),
                                          quantity_fields[0]: "1", **{f: "0" for f in quantity_fields[1:]}})
                        arrivals.append(Arrival(i * window / shoppers_count, http_request("POST", "/checkout", {
                            "Cookie": f"session={cookie}", "X-Forwarded-For": address,
                            "Content-Type": "application/x-www-form-urlencoded"}, body)))
                    result = crowd(server.port, arrivals, SHOPPER_TIMEOUT, ctx.runner.meter)
                    time.sleep(1.0)  # answers sent as the shoppers gave up finish their work
                    figures = summary(result, shoppers_count)
                    figures["stock_check"] = check_stock(
                        conn, product_id, stock, [s[0] for s in shoppers], ctx.runner.errors,
                        expect_sold=SCARCE_STOCK if stock == SCARCE_STOCK else figures["payment_pages"])
                    results.setdefault(label, []).append(figures)
                    log(f"{label:<28} {figures['payment_pages']:4} payment pages, {figures['sold_out_pages']:4} sold out,"
                        f" {figures['other_answers']} other; p50 {figures['p50_s']:.2f} s p99 {figures['p99_s']:.2f} s"
                        f" max {figures['max_s']:.2f} s; {figures['checkouts_per_s']:.1f} checkouts/s")
                stack.stop(server.name)
    finally:
        conn.execute("UPDATE products SET stock = 100000000 WHERE id = %s", (product_id,))
        for name in ("shop_flash", "floor_flash", "emulator_slow"):
            stack.stop(name)
