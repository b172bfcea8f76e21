"""The webhook's common case in one database round trip.

Nearly every event is a paid `checkout.session.completed` for an order awaiting exactly that
payment. The general intake (`events.ingest`) spends eight round trips on it: BEGIN, record
the event, read the order, lock the payment, pay the order, look for events waiting for the
payment, record the outcome, COMMIT. Here it is one pipelined transaction (`shop.batches`;
the pipeline's closing Sync commits it, so no BEGIN or COMMIT travels):

    take the payment's lock, as `orders.apply_session_event` does;
    WITH paid AS (pay the order, if it matches the session, holds its stock, the event is not
                  recorded yet, and no event waits for this payment),
         address AS (keep the shipping address the session carries, for the paid order),
         recorded AS (record the event as applied to the paid order)
    the paid order's public id;

Every write hangs on `paid`: if no order was paid, the transaction commits nothing, and the
general intake handles the event (a repeat, a mismatch, a refund waiting for this payment,
an order already paid, expired or unknown, an order that has not recorded this session yet,
an error). So this path only ever does what the general one would have done, with the same
locks in the same order: two deliveries of one event take the payment's lock in turn, and
the second's statement (a new snapshot, READ COMMITTED) sees the first's record. PostgreSQL
only: elsewhere every event takes the general way.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from sqlalchemy import DateTime, Integer, String, bindparam, exists, func, literal, select
from sqlalchemy.dialects.postgresql import insert

from . import batches, fulfilment, orders
from .extensions import db
from .models import EventState, StripeEvent

log = logging.getLogger("shop.events")

# The same lock as orders.lock_payment: a refund deciding to wait for this payment and this
# payment being applied can't miss each other. Taken in a statement of its own, so that the
# next one's snapshot (READ COMMITTED) already sees a refund or a delivery of the same event
# that committed meanwhile.
#
# The same statement turns sequential scans off until the transaction ends. The payment's
# statement is prepared once per pooled connection and PostgreSQL keeps the plan it makes by
# the sixth run: made while the events table is a page or two (a new shop, a fresh database),
# that plan reads the whole table for each of its two event lookups, and keeps doing so as the
# table grows, each payment slower than the last, until autovacuum happens to re-analyze it.
# Every lookup of that statement has its index (the event's id, the payment awaited): with
# sequential scans off the plan uses them at any size.
LOCK_PAYMENT = select(
    func.pg_advisory_xact_lock(func.hashtextextended(bindparam("payment_intent"), 0)),
    func.set_config("enable_seqscan", "off", True),
)
_PAID = (
    orders.PAY_MATCHING_ORDER.where(
        ~exists().where(StripeEvent.id == bindparam("event_id")),
        ~exists().where(StripeEvent.state == EventState.WAITING, StripeEvent.waiting_for == bindparam("payment_intent")),
    )
).cte("paid")
_RECORDED = (
    insert(StripeEvent)
    .from_select(
        ["id", "type", "created", "received_at", "processed_at", "state", "failures", "order_id", "outcome"],
        select(
            bindparam("event_id", type_=String),
            bindparam("event_type", type_=String),
            bindparam("created", type_=Integer),
            bindparam("now", type_=DateTime(timezone=True)),
            bindparam("now", type_=DateTime(timezone=True)),
            literal(EventState.APPLIED.value, String),
            literal(0, Integer),
            _PAID.c.id,
            literal(orders.PAID_OUTCOME, String),
        ),
    )
    .returning(StripeEvent.order_id)
    .cte("recorded")
)
PAY_AND_RECORD = (
    select(_PAID.c.public_id)
    .join_from(_PAID, _RECORDED, _RECORDED.c.order_id == _PAID.c.id)
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
    try:
        (answers,) = batches.committed_one_after_another([(LOCK_PAYMENT, parameters), (PAY_AND_RECORD, parameters)])
    except psycopg.Error as exc:
        # Nothing was changed, or (a COMMIT whose answer was lost) the event was applied:
        # either way the general intake now does the right thing, and records a failure.
        log.warning("event %s: fast path failed (%s); the general intake takes it", event["id"], exc)
        return None
    paid = answers[1].rows
    if not paid:
        return None
    # One line for the event and the transition it made (the general intake writes two).
    log.info("event %s %s: order %s -> %s", event["id"], event["type"], paid[0][0], orders.OrderStatus.PAID)
    return paid[0][0]
