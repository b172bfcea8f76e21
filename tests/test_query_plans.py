"""The plans PostgreSQL keeps for the hot statements: indexes, whatever the tables held when planned.

psycopg prepares a statement on its fifth run on a connection, and from the sixth PostgreSQL
may keep one generic plan for it, made from the tables' sizes and statistics of that moment,
until the table is analyzed again. A plan that reads a whole table is cheap while the table
is small, or while its statistics make a match look likely; kept, it reads more rows with
every order and every event. Here each statement's generic plan is asked for directly
(`PREPARE`, `plan_cache_mode = force_generic_plan`, `EXPLAIN EXECUTE`).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy import Executable

from shop import orders, paid_sessions, reservations
from shop.reads import autocommit_connection, compiled_for_postgresql

pytestmark = pytest.mark.postgres_only


def generic_plan(driver, statement: Executable, parameters: Mapping[str, Any], after: list[tuple[Executable, Mapping[str, Any]]]) -> str:
    """The generic plan of `statement`, in a transaction that first runs the `after` statements (rolled back)."""
    compiled = compiled_for_postgresql(statement)
    values = compiled.values(parameters)
    names: list[str] = []

    def numbered(match: re.Match) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    text = re.sub(r"%\((\w+)\)s", numbered, compiled.sql)
    literals = ", ".join("NULL" if values[name] is None else "'" + str(values[name]).replace("'", "''") + "'" for name in names)
    driver.execute("BEGIN")
    try:
        for earlier, earlier_parameters in after:
            done = compiled_for_postgresql(earlier)
            driver.execute(done.sql, done.values(earlier_parameters))
        driver.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        driver.execute(f"PREPARE planned AS {text}")
        return "\n".join(row[0] for row in driver.execute(f"EXPLAIN EXECUTE planned({literals})"))
    finally:
        driver.execute("ROLLBACK")
        driver.execute("DEALLOCATE ALL")


def test_the_webhooks_payment_uses_its_indexes_though_planned_on_empty_tables(app):
    """A new shop: a hundred orders, no events yet, statistics say so. The payment's plans,
    made now and kept, must still find the order and the event by their indexes once there
    are thousands: the statement's own, and those of the lookups `shop_payment_unclaimed`
    makes after the lock (sequential scans are off inside it)."""
    parameters = {
        "session_id": "cs_test_1", "client_reference_id": "ord_1", "amount_total": 2400, "currency": "usd",
        "payment_intent": "pi_1", "customer_email": "a@example.com", "presentment_amount": None,
        "presentment_currency": None, "now": "2026-12-05 12:00:00+00", "event_id": "evt_1",
        "event_type": "checkout.session.completed", "created": 1, **{f"ship_{field}": None for field in (
            "name", "phone", "line1", "line2", "city", "state", "postal_code", "country")},
    }
    with app.app_context(), autocommit_connection() as driver:
        driver.execute(
            "INSERT INTO orders (public_id, shopper_id, checkout_token, status, stripe_session_id, currency,"
            " amount_total, amount_refunded, amount_refund_pending, created_at, updated_at)"
            " SELECT 'ord_' || n, 'browser-' || n, 'token-' || n, 'paid', 'cs_' || n, 'usd', 2400, 0, 0, now(), now()"
            " FROM generate_series(1, 100) AS n"
        )
        driver.execute("ANALYZE")
        statement_plan = generic_plan(driver, paid_sessions.PAY_AND_RECORD, parameters, after=[])
        # The function's queries are planned inside it: auto_explain shows those plans.
        notices: list[str] = []
        driver.add_notice_handler(lambda notice: notices.append(notice.message_primary or ""))
        driver.execute("BEGIN")
        try:
            for setting in ("LOAD 'auto_explain'", "SET LOCAL auto_explain.log_min_duration = 0",
                            "SET LOCAL auto_explain.log_nested_statements = on", "SET LOCAL client_min_messages = log",
                            "SET LOCAL plan_cache_mode = force_generic_plan"):
                driver.execute(setting)
            driver.execute("SELECT shop_payment_unclaimed('pi_1', 'evt_1')")
        finally:
            driver.execute("ROLLBACK")
    assert "Seq Scan" not in statement_plan, statement_plan
    assert "uq_orders_stripe_session_id" in statement_plan, statement_plan
    lookups = "\n".join(notice for notice in notices if "stripe_events" in notice)
    assert "Seq Scan" not in lookups, lookups
    assert "pk_stripe_events" in lookups and "ix_stripe_events_waiting_for" in lookups, lookups


# Statistics taken before a crowd of open orders arrived: on a new shop, on one where a
# single browser placed most orders, and on one with many browsers and mostly paid orders.
HISTORIES = [
    pytest.param("", id="new shop"),
    pytest.param("'a-regular', 'paid'", id="one regular browser"),
    pytest.param("'browser-' || n % 2000, CASE WHEN n % 50 = 0 THEN 'awaiting_payment' ELSE 'paid' END", id="many browsers"),
]


def orders_after_statistics(driver, history: str) -> None:
    """Orders of `history` (browser and status of each), statistics taken, then 3,000 new
    browsers each with an order awaiting payment (`crowd-1` …)."""
    insert = ("INSERT INTO orders (public_id, shopper_id, status, checkout_token, currency, amount_total,"
              " amount_refunded, amount_refund_pending, created_at, updated_at)"
              " SELECT '{kind}-' || n, {browser_and_status}, '{kind}-' || n, 'usd', 2400, 0, 0, now(), now()"
              " FROM generate_series(1, {count}) AS n")
    if history:
        driver.execute(insert.format(kind="before", browser_and_status=history, count=5000))
    driver.execute("ANALYZE orders")
    driver.execute(insert.format(kind="crowd", browser_and_status="'crowd-' || n, 'awaiting_payment'", count=3000))


@pytest.mark.parametrize("history", HISTORIES)
def test_a_browsers_open_delayed_payment_is_looked_up_by_its_index(app, history):
    """The checkout asks whether the browser has a delayed payment still processing (nearly
    never). A plan that reads the orders in public id (or table) order to stop at the first
    match would read them all for every browser without one."""
    with app.app_context(), autocommit_connection() as driver:
        orders_after_statistics(driver, history)
        plan = generic_plan(driver, reservations.CLIENT_HOLDS, {"client_key": "k", "shopper_id": "crowd-7"}, after=[])
    assert "using ix_orders_shopper_processing on orders" in plan, plan
    assert "Seq Scan on orders" not in plan and "uq_orders_public_id" not in plan, plan


@pytest.mark.parametrize("history", HISTORIES)
def test_the_claim_of_a_browsers_older_sessions_reads_only_that_browsers_open_orders(app, history):
    """A flash sale: thousands of browsers each with an order awaiting payment arrive after
    the statistics were taken. Claiming one browser's older sessions must go straight to its
    own unclaimed orders: plans by status alone, or by id below the browser's newest, read
    more rows with every order."""
    with app.app_context(), autocommit_connection() as driver:
        orders_after_statistics(driver, history)
        parameters = {"browser": "crowd-7", "order_id": 7, "session_id": "cs_test_7", "now": "2026-12-06 12:00:00+00"}
        plan = generic_plan(driver, orders.CLAIM_EARLIER_SESSIONS, parameters, after=[])
    # Both lookups by browser (its newest open order, then the older ones) use the partial index.
    assert plan.count("using ix_orders_shopper_open on orders") == 2, plan
    assert "Seq Scan on orders" not in plan, plan


def test_a_compiled_statement_carries_its_literals_and_takes_the_callers_values(app):
    """The values a statement holds itself are collected when it is compiled; the caller's are
    added on each run; a parameter left out is refused, and a statement whose parameters
    SQLAlchemy would compute per run (an IN list) is not taken at all."""
    import psycopg
    from sqlalchemy import bindparam, literal, select

    from shop.models import Order

    both = select(literal("fixed"), bindparam("given", type_=Order.currency.type))
    in_list = select(Order.id).where(Order.public_id.in_(["ord_a", "ord_b"]))
    with app.app_context():
        compiled = compiled_for_postgresql(both)
        with autocommit_connection() as driver:
            assert driver.execute(compiled.sql, compiled.values({"given": "usd"})).fetchone() == ("fixed", "usd")
            with pytest.raises(psycopg.ProgrammingError):
                driver.execute(compiled.sql, compiled.values({}))
        with pytest.raises(ValueError):
            compiled_for_postgresql(in_list)
