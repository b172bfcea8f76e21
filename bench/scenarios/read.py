"""The read path beside its floors (`bench/floors.py`), alternating: `GET /` for a browser with
five orders made through the real checkout form (two of them paid), the status poll at 50 and at
10 connections, and home for a browser with 20 orders and with 1,000."""
from __future__ import annotations

import requests
from checks import same_answers
from servers import BenchError, log
from shoppers import Browser, completed_event, insert_orders, new_checkout_token, sign, write_shoppers

from . import Context

STATUS_P99_CONNECTIONS = 10
MANY_ORDERS = 1_000


def browser_with_five_orders(ctx: Context) -> tuple[Browser, str]:
    """A browser that bought five times through the checkout form, two orders paid; and one order's id."""
    shop = ctx.stack.servers["shop"].base
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
    orders = ctx.conn.execute(
        "SELECT public_id, stripe_session_id, amount_total FROM orders WHERE checkout_token = ANY(%s) ORDER BY id",
        (tokens,)).fetchall()
    if len(orders) != 5 or any(row[1] is None for row in orders):
        raise BenchError(f"checkout left unexpected orders: {orders}")
    for public_id, session_id, amount in orders[:2]:
        body = completed_event(public_id, session_id, amount)
        answer = requests.post(shop + "/webhooks/stripe", data=body, timeout=30, headers={
            "Content-Type": "application/json", "Stripe-Signature": sign(body, ctx.stack.webhook_secret)})
        if answer.status_code != 200:
            raise BenchError(f"webhook answered {answer.status_code}: {answer.text[:300]}")
    return browser, orders[0][0]


def run(ctx: Context) -> None:
    opts, runner = ctx.opts, ctx.runner
    browser, status_order = browser_with_five_orders(ctx)
    cookie = f"Cookie: session={browser.cookie}"
    status_path = f"/orders/{status_order}/status"
    log(f"browser has 5 orders (2 paid); the status loads poll {status_order}")
    same_answers(ctx.stack.servers, browser.cookie, status_path)

    for _ in range(opts.repeat):
        runner.load("floor_home", "floor", "/", headers=[cookie])
        runner.load("home", "shop", "/", headers=[cookie])
    for _ in range(opts.repeat):
        runner.load("floor_status", "floor", status_path, headers=[cookie])
        runner.load("status", "shop", status_path, headers=[cookie])
    for _ in range(opts.repeat):
        runner.load(f"status_c{STATUS_P99_CONNECTIONS}", "shop", status_path, headers=[cookie],
                    connections=STATUS_P99_CONNECTIONS)

    # Home with the 20 orders shown, and with many more behind them.
    shoppers_file = ctx.stack.work / "readers.tsv"
    readers = write_shoppers(shoppers_file, ctx.stack.secret_key, 2)
    few_cookie, many_cookie = (line.split("\t")[0] for line in shoppers_file.read_text().splitlines())
    for shopper_id, count in zip(readers, (20, MANY_ORDERS), strict=True):
        insert_orders(ctx.conn, shopper_id, count, ctx.two_lines)
    ctx.conn.execute("ANALYZE orders")
    for _ in range(opts.repeat):
        runner.load("home_20_orders", "shop", "/", headers=[f"Cookie: session={few_cookie}"])
        runner.load(f"home_{MANY_ORDERS}_orders", "shop", "/", headers=[f"Cookie: session={many_cookie}"])
