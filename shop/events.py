"""Stripe event intake, shared by the webhook and the `stripe sync` recovery command.

An event is recorded by id before it is applied, in the same transaction, so a duplicate
delivery (or a sync that overlaps the webhook) finds it and does nothing. On PostgreSQL a
concurrent delivery of the same id waits on the row lock until the first one commits.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from . import orders
from .extensions import db
from .models import StripeEvent, utcnow

log = logging.getLogger("shop.events")


class InvalidEvent(ValueError):
    """A verified body that is still not an event this shop can act on."""


@dataclass(frozen=True)
class IngestResult:
    duplicate: bool
    outcome: str


def _require(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = mapping.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) or value in ("", None):
        raise InvalidEvent(f"{where}.{key} is missing or not a {kind.__name__}")
    return value


def validate(event: Mapping[str, Any]) -> None:
    """Reject events missing the fields their handler needs, before anything is written."""
    event_id = _require(event, "id", str, "event")
    if not event_id.startswith("evt_") or event.get("object") != "event":
        raise InvalidEvent("not a Stripe event object")
    _require(event, "type", str, "event")
    _require(event, "created", int, "event")
    data = _require(event, "data", dict, "event")
    obj = _require(data, "object", dict, "event.data")
    if event["type"] in orders.SESSION_EVENTS:
        if obj.get("object") != "checkout.session":
            raise InvalidEvent(f"{event['type']} must carry a checkout.session")
        _require(obj, "id", str, "checkout.session")
        if event["type"] in (orders.SESSION_COMPLETED, orders.SESSION_ASYNC_SUCCEEDED):
            _require(obj, "payment_status", str, "checkout.session")
            _require(obj, "amount_total", int, "checkout.session")
            _require(obj, "currency", str, "checkout.session")
    elif event["type"] == orders.CHARGE_REFUNDED:
        if obj.get("object") != "charge":
            raise InvalidEvent("charge.refunded must carry a charge")
        _require(obj, "amount_refunded", int, "charge")


def _dispatch(event: Mapping[str, Any]) -> orders.Outcome:
    obj = event["data"]["object"]
    if event["type"] in orders.SESSION_EVENTS:
        return orders.apply_session_event(event["type"], obj)
    if event["type"] == orders.CHARGE_REFUNDED:
        return orders.apply_charge_refunded(obj)
    return orders.Outcome(f"ignored: {event['type']} is not handled")


def ingest(event: Mapping[str, Any]) -> IngestResult:
    """Record a verified event once and apply it. Commits; rolls back and re-raises on error."""
    validate(event)
    insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    try:
        created_row = db.session.execute(
            insert(StripeEvent)
            .values(id=event["id"], type=event["type"], created=event["created"], received_at=utcnow())
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(StripeEvent.id)
        ).scalar()
        if created_row is None:
            # Seen before: wait for whoever holds the row, then a finished event is a duplicate.
            seen = db.session.execute(
                select(StripeEvent.processed_at, StripeEvent.outcome)
                .where(StripeEvent.id == event["id"])
                .with_for_update()
            ).one()
            if seen.processed_at is not None:
                db.session.commit()
                return IngestResult(duplicate=True, outcome=seen.outcome or "")
        outcome = _dispatch(event)
        db.session.execute(
            update(StripeEvent)
            .where(StripeEvent.id == event["id"])
            .values(order_id=outcome.order_id, processed_at=utcnow(), outcome=outcome.description[:500])
        )
        db.session.commit()
    except Exception:
        db.session.rollback()
        log.exception("event %s (%s) failed; left unprocessed for a retry", event["id"], event["type"])
        raise
    log.info("event %s %s: %s", event["id"], event["type"], outcome.description)
    return IngestResult(duplicate=False, outcome=outcome.description)
