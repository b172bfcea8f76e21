"""The webhook's common case in one database round trip, one statement.

Nearly every event is a paid `checkout.session.completed` for an order awaiting exactly that
payment. The general intake (`events.ingest`) spends eight round trips on it: BEGIN, record
the event, read the order, lock the payment, pay the order, look for events waiting for the
payment, record the outcome, COMMIT. Here it is one statement, its own transaction:

    WITH paid AS (pay the order, if it matches the session and holds its stock, and then
                  shop_payment_unclaimed(payment, event): the payment's lock taken, neither
                  this event nor a refund waiting for this payment is recorded),
         address AS (keep the shipping address the session carries, for the paid order),
         recorded AS (record the event as applied to the paid order)
    the paid order's public id;

`shop_payment_unclaimed` (migration 0008) takes the lock `orders.lock_payment` takes, and
only then looks: its queries take a snapshot of their own (a VOLATILE function's do), so they
see a refund, or a delivery of the same event, that committed while the lock was waited for;
the statement's own snapshot is older than the lock. It runs for the matching order only
(the cheap conditions are checked first), so an event that pays nothing takes no lock here.

Every write hangs on `paid`: if no order was paid, nothing is kept, and the general intake
handles the event (a repeat, a mismatch, a refund waiting for this payment, an order already
paid, expired or unknown, an order that has not recorded this session yet, an error). So this
path only ever does what the general one would have done, with the same lock. PostgreSQL
only: elsewhere every event takes the general way.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from sqlalchemy import Boolean, DateTime, Integer, String, bindparam, func, literal, select
from sqlalchemy.dialects.postgresql import insert

from . import batches, fulfilment, orders
from .extensions import db
from .models import EventState, StripeEvent

log = logging.getLogger("shop.events")

# Called after the order's cheap conditions (PostgreSQL orders a row's conditions by cost),
# and per row, never once up front: a volatile function is never a one-time filter.
_UNCLAIMED = func.shop_payment_unclaimed(bindparam("payment_intent"), bindparam("event_id"), type_=Boolean)
_PAID = orders.PAY_MATCHING_ORDER.where(_UNCLAIMED).cte("paid")
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
        paid = batches.committed(PAY_AND_RECORD, parameters).rows
    except psycopg.Error as exc:
        # Nothing was changed, or (a COMMIT whose answer was lost) the event was applied:
        # either way the general intake now does the right thing, and records a failure.
        log.warning("event %s: fast path failed (%s); the general intake takes it", event["id"], exc)
        return None
    if not paid:
        return None
    # One line for the event and the transition it made (the general intake writes two).
    log.info("event %s %s: order %s -> %s", event["id"], event["type"], paid[0][0], orders.OrderStatus.PAID)
    return paid[0][0]
