"""Recovery for missed webhooks and interrupted checkouts (`flask stripe sync`), and the
operator's "retry now" for an event that failed or waits.

No single event can stop a sync: one that fails is recorded as failed on its row (by the
intake, with the error), reported, and the sync goes on with the next.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import timedelta

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

    def summary(self) -> str:
        return (
            f"Fetched {self.fetched} event(s): {self.applied} applied, {self.duplicates} already seen, "
            f"{self.invalid} invalid, {len(self.failed)} failed; {self.waiting} waiting for their payment; "
            f"{self.stale_expired} stale pending order(s) expired."
        )


def sync_window_start() -> int:
    """Unix time to fetch events from: the earliest of three anchors.

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
    return min(anchors) - OVERLAP_SECONDS


def sync_with_stripe() -> SyncReport:
    """Pull events from Stripe and feed them, oldest first, through the webhook's own intake."""
    report = SyncReport()
    start = sync_window_start()
    fetched = list(stripe_gateway.events_since(start))
    report.fetched = len(fetched)
    for event in reversed(fetched):
        _ingest(event, report)
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
