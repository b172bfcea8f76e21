"""Integrity checks the bench runs on the database after its loads: a wrong answer fast is no result."""
from __future__ import annotations

import re
import time

import psycopg
import requests
from load import Load
from servers import BenchError, Server
from shoppers import sign

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


def same_webhook_answers(servers: dict[str, Server], bodies: dict[str, str], secret: str) -> None:
    """The webhook floor answers an event (each server its own order's), its repeat and a wrong
    signature as the shop does: the same status and JSON, but for the error's wording."""
    answers = {}
    for name, body in bodies.items():
        url = servers[name].base + "/webhooks/stripe"
        answers[name] = [requests.post(url, data=body, timeout=30, headers={
            "Content-Type": "application/json", "Stripe-Signature": signature}) for signature in (
            sign(body, secret), sign(body, secret), sign(body, "whsec_not_the_shops"))]
    shop, floor = ([(a.status_code, a.json() if i < 2 else None) for i, a in enumerate(answers[name])]
                   for name in ("shop", "floor"))
    if shop != floor:
        raise BenchError(f"the floor's webhook answers differ from the shop's ({floor} vs {shop}): "
                         "bench/floors.py must do the same work as the shop")


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


# Orders in these states hold their units (see shop/orders.py HOLDS_STOCK).
HOLDING = ("pending", "awaiting_payment", "processing", "paid", "partially_refunded", "refunded")


def check_stock(conn: psycopg.Connection, product_id: int, stock_before: int, shoppers: list[str],
                errors: list[str], *, expect_sold: int | None = None) -> dict:
    """After a flash sale: every unit that left stock belongs to one open or paid order, none twice.

    `expect_sold`: exactly that many units must be reserved (the sale had stock for fewer shoppers).
    """
    stock_after = conn.execute("SELECT stock FROM products WHERE id = %s", (product_id,)).fetchone()[0]
    held, orders, without_session, per_shopper = conn.execute(
        "SELECT coalesce(sum(i.quantity) FILTER (WHERE o.status = ANY(%s)), 0), count(DISTINCT o.id),"
        "  count(DISTINCT o.id) FILTER (WHERE o.status = ANY(%s) AND o.stripe_session_id IS NULL),"
        "  coalesce(max(n.orders), 0)"
        " FROM orders o JOIN order_items i ON i.order_id = o.id AND i.product_id = %s"
        " JOIN (SELECT shopper_id, count(*) AS orders FROM orders WHERE shopper_id = ANY(%s) GROUP BY shopper_id) n"
        "  USING (shopper_id)",
        (list(HOLDING), list(HOLDING), product_id, shoppers)).fetchone()
    sold = stock_before - stock_after
    ok = stock_after >= 0 and sold == held and without_session == 0 and per_shopper <= 1
    if expect_sold is not None:
        ok = ok and sold == expect_sold
    check = {"ok": ok, "stock_before": stock_before, "stock_after": stock_after, "units_left_stock": sold,
             "units_held_by_open_or_paid_orders": held, "orders": orders, "holding_without_session": without_session,
             "most_orders_of_one_shopper": per_shopper, "expected_sold": expect_sold}
    if not ok:
        errors.append(f"flash sale stock check failed: {check}")
    return check
