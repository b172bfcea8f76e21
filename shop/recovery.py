"""Recovery for missed webhooks and interrupted checkouts (`flask stripe sync`), and the
operator's "retry now" for an event that failed or waits.

No single event can stop a sync: one that fails is recorded as failed on its row (by the
intake, with the error), reported, and the sync goes on with the next.

Stripe lists events of the last 30 days only, so a sync never asks further back. An open
order older than that may have events Stripe no longer has: its Checkout Session is read
back from the API instead, and applied as the event it stands for would be.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import func, select

from . import events, orders, stripe_gateway
from .extensions import db
from .models import EventState, Order, StripeEvent, utcnow

log = logging.getLogger("shop.recovery")
# Always look back at least as far as Stripe keeps retrying a webhook.
DEFAULT_LOOKBACK = timedelta(days=3)
# Events created in the same second as the anchor, or slightly out of clock order.
OVERLAP_SECONDS = 60
# How far back Stripe lists events.
EVENT_HISTORY = timedelta(days=30)


@dataclass(frozen=True)
class FailedEvent:
    event_id: str
    event_type: str
    error: str


@dataclass
class SyncReport:
    fetched: int = 0
    applied: int = 0
    duplicates: int = 0
    invalid: int = 0
    stale_expired: int = 0
    waiting: int = 0  # events still waiting for their payment after this sync, all told
    failed: list[FailedEvent] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    # One line per open order older than Stripe's event history, reconciled from its session.
    beyond_history: list[str] = field(default_factory=list)

    def summary(self) -> str:
        summary = (
            f"Fetched {self.fetched} event(s): {self.applied} applied, {self.duplicates} already seen, "
            f"{self.invalid} invalid, {len(self.failed)} failed; {self.waiting} waiting for their payment; "
            f"{self.stale_expired} stale pending order(s) expired."
        )
        if self.beyond_history:
            summary += (
                f" {len(self.beyond_history)} open order(s) older than Stripe's {EVENT_HISTORY.days}-day event "
                "history reconciled from their Checkout Sessions."
            )
        return summary


def history_start() -> int:
    """Unix time of the oldest event Stripe still lists."""
    return int((utcnow() - EVENT_HISTORY).timestamp())


def sync_window_start() -> int:
    """Unix time to fetch events from: the earliest of three anchors, but never before
    Stripe's event history begins.

    A dropped delivery can be older than one that arrived, and can concern an order that is
    no longer open (the refund of a paid order), so always look back DEFAULT_LOOKBACK; and
    further when the newest processed event (everything after it is unseen) or the oldest
    open order (every event of it is newer than it) is older still.
    """
    newest_event = db.session.scalar(select(func.max(StripeEvent.created)).where(StripeEvent.processed_at.is_not(None)))
    oldest_open = db.session.scalar(select(func.min(Order.created_at)).where(Order.status.in_(orders.OPEN_STATES)))
    anchors = [int((utcnow() - DEFAULT_LOOKBACK).timestamp())]
    if newest_event:
        anchors.append(newest_event)
    if oldest_open is not None:
        anchors.append(int(oldest_open.timestamp()))
    return max(min(anchors) - OVERLAP_SECONDS, history_start())


def sync_with_stripe() -> SyncReport:
    """Pull events from Stripe and feed them, oldest first, through the webhook's own intake;
    then reconcile open orders older than Stripe's event history from their sessions."""
    report = SyncReport()
    start = sync_window_start()
    fetched = list(stripe_gateway.events_since(start))
    report.fetched = len(fetched)
    for event in reversed(fetched):
        _ingest(event, report)
    report.beyond_history = _reconcile_beyond_history(datetime.fromtimestamp(start, UTC))
    report.stale_expired = orders.expire_stale_pending(timedelta(minutes=current_app.config["STALE_PENDING_MINUTES"]))
    report.waiting = db.session.scalar(
        select(func.count()).select_from(StripeEvent).where(StripeEvent.state == EventState.WAITING)
    ) or 0
    db.session.commit()
    return report


def _ingest(event: dict, report: SyncReport) -> None:
    try:
        result = events.ingest(event)
    except events.InvalidEvent as exc:
        report.invalid += 1
        log.warning("sync skipped event %s: %s", event.get("id"), exc)
        return
    except Exception as exc:  # recorded on the event's row by the intake; the next event must still be applied
        report.failed.append(FailedEvent(str(event.get("id")), str(event.get("type")), f"{type(exc).__name__}: {exc}"))
        return
    if result.duplicate:
        report.duplicates += 1
    else:
        report.applied += 1
        report.outcomes.append(f"{event['id']} {event['type']}: {result.outcome}")


# A Checkout Session's (status, payment_status) as Stripe reports it, and the event that says so.
EVENT_FOR_SESSION_STATE = {
    ("expired", "unpaid"): orders.SESSION_EXPIRED,
    ("complete", "paid"): orders.SESSION_COMPLETED,
    ("complete", "unpaid"): orders.SESSION_COMPLETED,  # a delayed payment: processing, or failed since
}


def _reconcile_beyond_history(before: datetime) -> list[str]:
    """Open orders placed before `before` may have events Stripe no longer lists: read each
    one's Checkout Session back from Stripe and apply what it says.

    An authenticated API answer is as much Stripe's word as a listed event (sync already
    trusts those unsigned). A delayed payment still unpaid can't be told apart from one that
    failed without its events, so that order is flagged for the operator instead.
    """
    stale_open = db.session.scalars(
        select(Order)
        .where(Order.status.in_(orders.OPEN_STATES), Order.created_at < before, Order.stripe_session_id.is_not(None))
        .order_by(Order.created_at)
    ).all()
    db.session.commit()
    lines = []
    for order in stale_open:
        public_id, session_id = order.public_id, order.stripe_session_id
        log.warning("order %s is older than Stripe's event history: reading its Checkout Session", public_id)
        try:
            session = stripe_gateway.retrieve_checkout_session(session_id)
            state = (session.get("status"), session.get("payment_status"))
            event_type = EVENT_FOR_SESSION_STATE.get(state)
            if event_type is None:
                lines.append(f"{public_id}: session {session_id} is {state[0]}, {state[1]}; left as it is")
                continue
            outcome = events.apply_session_read_back(event_type, session)
            if state == ("complete", "unpaid"):
                _flag_unresolved(order, session)
                outcome = orders.Outcome(f"{outcome.description}; flagged: delayed payment unresolved", order.id)
            lines.append(f"{public_id}: older than Stripe's event history, from its session: {outcome.description}")
        except Exception as exc:  # one order must not stop the others
            db.session.rollback()
            log.error("could not reconcile order %s from its session: %s", public_id, exc)
            lines.append(f"{public_id}: could not read its Checkout Session: {type(exc).__name__}: {exc}")
    return lines


def _flag_unresolved(order: Order, session: dict) -> None:
    reason = (
        f"Stripe no longer lists this order's events and its delayed payment {session.get('payment_intent')} "
        "is unresolved: check it in the Stripe Dashboard"
    )
    if order.review_reason != reason:
        orders.flag_for_review(order, reason)
        db.session.commit()


class NothingToRetry(LookupError):
    """No such event, or it is already final."""


def retry_event(event_id: str) -> events.IngestResult:
    """Handle a failed or waiting event again, from the payload kept on its row.

    Raises NothingToRetry, or whatever the handling raises (recorded on the row again).
    """
    row = db.session.execute(
        select(StripeEvent.state, StripeEvent.payload).where(StripeEvent.id == event_id)
    ).one_or_none()
    db.session.rollback()
    if row is None or row.state in events.FINAL_STATES or not row.payload:
        raise NothingToRetry(event_id)
    return events.ingest(json.loads(row.payload))
