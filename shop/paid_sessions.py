"""The webhook's common case in two database round trips.

Nearly every event is a paid `checkout.session.completed` for an order awaiting exactly that
payment. The general intake (`events.ingest`) spends eight round trips on it: BEGIN, record
the event, read the order, lock the payment, pay the order, look for events waiting for the
payment, record the outcome, COMMIT. Here it is one pipelined batch, then COMMIT:

    BEGIN;
    record the event as received (ON CONFLICT DO NOTHING: a repeat records nothing);
    take the payment's lock, as `orders.apply_session_event` does;
    WITH paid AS (pay the order, if it matches the session, holds its stock, the event's
                  row is this transaction's own, and no event waits for this payment),
         address AS (keep the shipping address the session carries, for the paid order)
    record the event as applied to the paid order.

It commits only if an order was paid; otherwise it rolls back, having changed nothing, and
the general intake handles the event (a repeat, a mismatch, a refund waiting for this
payment, an order already paid, expired or unknown, an order that has not recorded this
session yet, an error). So this path only ever does what the general one would have done,
with the same locks in the same order. PostgreSQL only: elsewhere every event takes the
general way.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

import psycopg
from sqlalchemy import bindparam, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert

from . import fulfilment, orders
from .extensions import db
from .models import EventState, StripeEvent
from .reads import compiled_for_postgresql

log = logging.getLogger("shop.events")

RECORD_RECEIVED = (
    insert(StripeEvent)
    .values(
        id=bindparam("event_id"),
        type=bindparam("event_type"),
        created=bindparam("created"),
        received_at=bindparam("now"),
        state=EventState.RECEIVED,
        failures=0,
    )
    .on_conflict_do_nothing(index_elements=["id"])
)
# The same lock as orders.lock_payment: a refund deciding to wait for this payment and this
# payment being applied can't miss each other. Taken in a statement of its own, so that the
# next one's snapshot (READ COMMITTED) already sees a refund that committed meanwhile.
LOCK_PAYMENT = select(func.pg_advisory_xact_lock(func.hashtextextended(bindparam("payment_intent"), 0)))
_PAID = (
    orders.PAY_MATCHING_ORDER.where(
        exists().where(StripeEvent.id == bindparam("event_id"), StripeEvent.state == EventState.RECEIVED),
        ~exists().where(StripeEvent.state == EventState.WAITING, StripeEvent.waiting_for == bindparam("payment_intent")),
    )
).cte("paid")
PAY_AND_RECORD = (
    update(StripeEvent)
    .where(StripeEvent.id == bindparam("event_id"))
    .values(state=EventState.APPLIED, order_id=_PAID.c.id, outcome=orders.PAID_OUTCOME, processed_at=bindparam("now"))
    .returning(_PAID.c.public_id)
    .add_cte(fulfilment.record_address_of(_PAID))
)


def try_paying(event: Mapping[str, Any]) -> str | None:
    """Apply a validated event if it is the common case: the paid order's public id, or None (nothing changed)."""
    if db.engine.dialect.name != "postgresql":
        return None
    parameters = orders.pay_matching_order_parameters(event["type"], event["data"]["object"])
    if parameters is None:
        return None
    parameters |= fulfilment.address_parameters(event["data"]["object"])
    parameters |= {"event_id": event["id"], "event_type": event["type"], "created": event["created"]}
    with db.engine.connect() as connection:
        driver = connection.connection.driver_connection
        driver.autocommit = True  # the transaction is spelled out, so BEGIN travels with the batch
        try:
            public_id = _pay(driver, parameters)
        except psycopg.Error as exc:
            # Nothing was changed, or (a COMMIT whose answer was lost) the event was applied:
            # either way the general intake now does the right thing, and records a failure.
            log.warning("event %s: fast path failed (%s); the general intake takes it", event["id"], exc)
            with suppress(psycopg.Error):
                driver.execute("ROLLBACK")
            public_id = None
        finally:
            with suppress(psycopg.Error):
                driver.autocommit = False
    if public_id is not None:
        log.info("order %s -> %s", public_id, orders.OrderStatus.PAID)
    return public_id


def _pay(driver: psycopg.Connection, parameters: dict[str, Any]) -> str | None:
    statements = [compiled_for_postgresql(s) for s in (RECORD_RECEIVED, LOCK_PAYMENT, PAY_AND_RECORD)]
    with driver.pipeline():
        driver.execute("BEGIN")
        for compiled in statements[:-1]:
            driver.execute(str(compiled), compiled.construct_params(parameters))
        paid = driver.execute(str(statements[-1]), statements[-1].construct_params(parameters))
    row = paid.fetchone()
    driver.execute("COMMIT" if row else "ROLLBACK")
    return row[0] if row else None
