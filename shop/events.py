"""Stripe event intake, shared by the webhook, `stripe sync` and the operator's "retry now".

Every verified event ends with a durable state on its row (`EventState`):

- `applied` or `not_ours`: final. A later delivery of the same id is a duplicate.
- `needs_review`: final too, but it flagged its order for an operator (a payment that doesn't
  match, or that landed on an order the shop had given up): listed under "Events needing
  attention" until the operator marks it resolved.
- `waiting`: it concerns a payment no order is paid through yet (a refund that overtook the
  payment's own events). Its payload is kept, and it is applied in the same transaction
  that pays an order through that payment, whatever the order of arrival.
- `failed`: handling it raised. The transaction is rolled back, then the failure (error,
  payload) is recorded in a transaction of its own, so the operator view shows it and the
  next delivery, sync or retry handles it again.

The row is written before the event is applied, in the same transaction, so a duplicate
delivery (or a sync that overlaps the webhook) finds it and does nothing. On PostgreSQL a
concurrent delivery of the same id waits on the row lock until the first one commits.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, select, update

from . import disputes, event_shape, fulfilment, orders, paid_sessions, refunds
from .extensions import db, upsert
from .models import EventState, StripeEvent, utcnow
from .orders import InvalidEvent

__all__ = [
    "FINAL_STATES", "HANDLED_EVENT_TYPES", "HANDLERS", "IngestResult", "InvalidEvent", "apply_session_as_read",
    "apply_session_read_back", "ingest", "validate",
]

log = logging.getLogger("shop.events")

FINAL_STATES = frozenset({EventState.APPLIED, EventState.NEEDS_REVIEW, EventState.NOT_OURS})


@dataclass(frozen=True)
class IngestResult:
    duplicate: bool
    outcome: str
    state: EventState


def _require(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = mapping.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) or value in ("", None):
        raise InvalidEvent(f"{where}.{key} is missing or not a {kind.__name__}")
    return value


def validate(event: Mapping[str, Any]) -> None:
    """Reject bodies that are not events of a shape the handlers can read, before anything is written.

    Amounts are not required here: they are checked against an order, and only the shop's
    own sessions have one (another integration's setup or subscription session has none).
    Column bounds, nesting depth and the type of each field a handler reads: shop.event_shape.
    """
    event_id = _require(event, "id", str, "event")
    if not event_id.startswith("evt_") or event.get("object") != "event":
        raise InvalidEvent("not a Stripe event object")
    _require(event, "type", str, "event")
    _require(event, "created", int, "event")
    data = _require(event, "data", dict, "event")
    obj = _require(data, "object", dict, "event.data")
    carried = CARRIES.get(event["type"])
    if carried is not None and obj.get("object") != carried:
        raise InvalidEvent(f"{event['type']} must carry a {carried}")
    if event["type"] in orders.SESSION_EVENTS:
        _require(obj, "id", str, "checkout.session")
    event_shape.check(event)


Handler = Callable[[Mapping[str, Any]], orders.Outcome]


def _session_event(event: Mapping[str, Any]) -> orders.Outcome:
    return _apply_session(event["type"], event["data"]["object"])


def _apply_session(event_type: str, session: Mapping[str, Any]) -> orders.Outcome:
    """Apply a session's event to its order, and keep the shipping address of a session that pays it."""
    outcome = orders.apply_session_event(event_type, session)
    paying = event_type in (orders.SESSION_COMPLETED, orders.SESSION_ASYNC_SUCCEEDED)
    if paying and outcome.order_id is not None and outcome.state == EventState.APPLIED:
        fulfilment.record_address(outcome.order_id, session)
    return outcome


# The intake in one table: which event type becomes which state change. A handler gets the
# whole verified event. Any other type is recorded as not ours.
HANDLERS: dict[str, Handler] = {
    orders.SESSION_COMPLETED: _session_event,
    orders.SESSION_ASYNC_SUCCEEDED: _session_event,
    orders.SESSION_ASYNC_FAILED: _session_event,
    orders.SESSION_EXPIRED: _session_event,
    refunds.CHARGE_REFUNDED: refunds.apply_charge_refunded,
    **dict.fromkeys(sorted(refunds.REFUND_EVENTS), refunds.apply_refund_event),
    **dict.fromkeys(sorted(disputes.DISPUTE_EVENTS), disputes.apply_dispute_event),
}
# The object each handled event type carries in `data.object`.
CARRIES: dict[str, str] = {
    **dict.fromkeys(orders.SESSION_EVENTS, "checkout.session"),
    refunds.CHARGE_REFUNDED: "charge",
    **dict.fromkeys(refunds.REFUND_EVENTS, "refund"),
    **dict.fromkeys(disputes.DISPUTE_EVENTS, "dispute"),
}

# Every event type a webhook endpoint must send this shop: what the deploy step subscribes to
# and what `flask stripe check` expects of an endpoint.
HANDLED_EVENT_TYPES: tuple[str, ...] = tuple(sorted(HANDLERS))


def _dispatch(event: Mapping[str, Any]) -> orders.Outcome:
    handler = HANDLERS.get(event["type"])
    if handler is None:
        return orders.Outcome(f"not ours: {event['type']} is not handled", state=EventState.NOT_OURS)
    return handler(event)


def _claim(event: Mapping[str, Any]) -> Any:
    """Record the event's id, or lock the row an earlier delivery made. None if new, else its (state, outcome)."""
    created_row = db.session.execute(
        upsert(StripeEvent)
        .values(
            id=event["id"], type=event["type"], created=event["created"], received_at=utcnow(), state=EventState.RECEIVED
        )
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(StripeEvent.id)
    ).scalar()
    if created_row is not None:
        return None
    # Seen before: wait for whoever holds the row.
    return db.session.execute(
        select(StripeEvent.state, StripeEvent.outcome).where(StripeEvent.id == event["id"]).with_for_update()
    ).one()


def _record(event: Mapping[str, Any], outcome: orders.Outcome) -> None:
    waiting = outcome.state == EventState.WAITING
    db.session.execute(
        update(StripeEvent)
        .where(StripeEvent.id == event["id"])
        .values(
            state=outcome.state,
            order_id=outcome.order_id,
            outcome=outcome.description[:500],
            processed_at=None if waiting else utcnow(),
            waiting_for=outcome.waiting_for,
            payload=json.dumps(event) if waiting else None,
            error=None,
        )
    )


def _apply_waiting(payment_intent: str) -> None:
    """Apply the events that waited for this payment, now that an order is paid through it.

    The caller holds the payment's lock (see `orders`), so no new waiter can slip in.
    """
    waiting = db.session.scalars(
        select(StripeEvent.payload)
        .where(StripeEvent.state == EventState.WAITING, StripeEvent.waiting_for == payment_intent)
        .order_by(StripeEvent.created, StripeEvent.id)
        .with_for_update()
    ).all()
    for payload in waiting:
        event = json.loads(payload)
        outcome = _dispatch(event)
        _record(event, outcome)
        log.info("waiting event %s %s: %s", event["id"], event["type"], outcome.description)


def _record_failure(event: Mapping[str, Any], exc: Exception) -> None:
    """In a transaction of its own: the event failed, with why, and what is needed to retry it.

    An event another delivery has meanwhile finished keeps its final state, and one already
    waiting for its payment stays waiting: the failed attempt changed nothing, and the payment
    must still find it (`_apply_waiting`).
    """
    error = f"{type(exc).__name__}: {exc}"[:500]
    payload = json.dumps(event)
    try:
        db.session.execute(
            upsert(StripeEvent)
            .values(
                id=event["id"], type=event["type"], created=event["created"], received_at=utcnow(),
                state=EventState.FAILED, error=error, payload=payload, failures=1,
            )
            .on_conflict_do_update(
                index_elements=["id"],
                set_={
                    "state": case(
                        (StripeEvent.state == EventState.WAITING, EventState.WAITING), else_=EventState.FAILED
                    ),
                    "error": error,
                    "payload": payload,
                    "failures": StripeEvent.failures + 1,
                },
                where=StripeEvent.state.not_in(FINAL_STATES),
            )
        )
        db.session.commit()
    except Exception:
        db.session.rollback()
        log.exception("could not record the failure of event %s", event["id"])


def apply_session_read_back(event_type: str, session: Mapping[str, Any]) -> orders.Outcome:
    """Apply a Checkout Session read from Stripe's API as if its event had arrived. Commits.

    For orders whose events Stripe no longer lists (see `recovery`): there is no event to
    record, but a payment it reports settles waiting refunds exactly as the event would.
    """
    try:
        outcome = _apply_session(event_type, session)
        if outcome.paid_through:
            _apply_waiting(outcome.paid_through)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return outcome


# A Checkout Session's (status, payment_status) as Stripe reports it, and the event that says so.
EVENT_FOR_SESSION_STATE = {
    ("expired", "unpaid"): orders.SESSION_EXPIRED,
    ("complete", "paid"): orders.SESSION_COMPLETED,
    ("complete", "unpaid"): orders.SESSION_COMPLETED,  # a delayed payment: processing, or failed since
}


def apply_session_as_read(session: Mapping[str, Any]) -> orders.Outcome | None:
    """Apply a session read from Stripe as the event its state stands for; None if none does (open). Commits."""
    event_type = EVENT_FOR_SESSION_STATE.get((session.get("status"), session.get("payment_status")))
    if event_type is None:
        return None
    return apply_session_read_back(event_type, session)


def ingest(event: Mapping[str, Any]) -> IngestResult:
    """Record a verified event once and apply it, or keep it until it can be.

    Commits. On error: rolls back, records the failure on the event's row, and re-raises.
    """
    validate(event)
    try:
        if paid_sessions.try_paying(event) is not None:  # the common case, in one round trip
            return IngestResult(duplicate=False, outcome=orders.PAID_OUTCOME, state=EventState.APPLIED)
        seen = _claim(event)
        if seen is not None and seen.state in FINAL_STATES:
            db.session.commit()
            return IngestResult(duplicate=True, outcome=seen.outcome or "", state=EventState(seen.state))
        outcome = _dispatch(event)
        _record(event, outcome)
        if outcome.paid_through:
            _apply_waiting(outcome.paid_through)
        db.session.commit()
    except InvalidEvent:
        db.session.rollback()  # the body's fault, answered 4xx: nothing to retry or record
        raise
    except Exception as exc:
        db.session.rollback()
        log.exception("event %s (%s) failed; recorded as failed for a retry", event["id"], event["type"])
        _record_failure(event, exc)
        raise
    log.info("event %s %s: %s", event["id"], event["type"], outcome.description)
    return IngestResult(duplicate=False, outcome=outcome.description, state=outcome.state)
