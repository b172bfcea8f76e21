"""Missed webhooks: `flask --app wsgi stripe sync` finds what Stripe never delivered, once."""
from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from sqlalchemy import func, select

from shop import stripe_emulator, stripe_gateway
from shop.extensions import db
from shop.models import Order, StripeEvent
from shop.recovery import OVERLAP_SECONDS, sync_window_start
from shop.stripe_emulator.models import CheckoutSession, Event
from tests.conftest import seeded_app
from tests.helpers import ShopClient, event_state, get_order, pay, post_event, record_stripe_calls, refund_event
from tests.reliability.conftest import run_sync

SESSION_EXPIRED_LATER = 45 * 60 + 60  # a session expires 45 minutes after its order was placed


@contextmanager
def deliveries_dropped(app: Flask) -> Iterator[None]:
    """Every webhook attempt made inside the block is silently lost (and never retried)."""
    emulator = app.extensions["stripe_emulator"]
    emulator.settings = dataclasses.replace(emulator.settings, drop=1.0)
    try:
        yield
    finally:
        emulator.settings = dataclasses.replace(emulator.settings, drop=0.0)


def statuses(app: Flask, orders) -> list[str]:
    return [get_order(app, order.public_id).status for order in orders]


def sync_counts(output: str) -> tuple[int, int, int]:
    """(fetched, applied, already seen) from the command's summary line."""
    match = re.search(r"Fetched (\d+) event\(s\): (\d+) applied, (\d+) already seen", output)
    assert match, output
    return int(match[1]), int(match[2]), int(match[3])


def stripe_event_ids(app: Flask) -> list[str]:
    with app.app_context():
        return sorted(db.session.scalars(select(Event.id)))


def recorded_event_ids(app: Flask) -> list[str]:
    with app.app_context():
        return sorted(db.session.scalars(select(StripeEvent.id).where(StripeEvent.processed_at.is_not(None))))


@pytest.fixture
def lossy_app(database_url: str) -> Iterator[Flask]:
    """The emulator configured to drop every webhook delivery (STRIPE_EMULATOR_DROP=1)."""
    with seeded_app(database_url, STRIPE_EMULATOR_DROP=1) as app:
        yield app


def test_sync_recovers_every_outcome_when_all_webhooks_are_lost(lossy_app):
    app = lossy_app
    shoppers = [ShopClient(app) for _ in range(5)]
    card, transfer, failed_transfer, _abandoned, cancelled = orders = [
        shopper.start({"enamel-mug": 1}) for shopper in shoppers
    ]
    pay(shoppers[0], card.checkout_url)
    pay(shoppers[1], transfer.checkout_url, method="bank_transfer")
    pay(shoppers[2], failed_transfer.checkout_url, method="bank_transfer_fail")
    shoppers[4].http.get(f"/checkout/cancel?order={cancelled.public_id}")
    stripe_emulator.tick(app, now=time.time() + 10)  # transfers settle
    stripe_emulator.tick(app, now=time.time() + SESSION_EXPIRED_LATER)  # the abandoned session expires
    # Stripe sent 7 events; none arrived. The cancelled one is cancelled already: Stripe
    # confirmed it closed the session when the shopper cancelled.
    assert statuses(app, orders) == ["awaiting_payment"] * 4 + ["cancelled"]

    first = run_sync(app)

    assert statuses(app, orders) == ["paid", "paid", "failed", "expired", "cancelled"]
    assert sync_counts(first.output) == (7, 7, 0)
    assert recorded_event_ids(app) == stripe_event_ids(app)

    fetched, applied, already_seen = sync_counts(run_sync(app).output)

    assert applied == 0 and already_seen == fetched > 0
    assert statuses(app, orders) == ["paid", "paid", "failed", "expired", "cancelled"]


def test_sync_after_partial_delivery_applies_only_what_was_missed(app):
    shoppers = [ShopClient(app) for _ in range(4)]
    delivered, lost, transfer, cancelled = orders = [shopper.start({"canvas-tote": 1}) for shopper in shoppers]
    pay(shoppers[0], delivered.checkout_url)
    pay(shoppers[2], transfer.checkout_url, method="bank_transfer")
    stripe_emulator.tick(app)  # 2 completions arrive
    with deliveries_dropped(app):
        pay(shoppers[1], lost.checkout_url)
        shoppers[3].http.get(f"/checkout/cancel?order={cancelled.public_id}")
        stripe_emulator.tick(app, now=time.time() + 10)  # 1 completion, 1 expiry, 1 async success: lost
    assert statuses(app, orders) == ["paid", "awaiting_payment", "processing", "cancelled"]

    assert sync_counts(run_sync(app).output) == (5, 3, 2)

    assert statuses(app, orders) == ["paid", "paid", "paid", "cancelled"]
    assert recorded_event_ids(app) == stripe_event_ids(app)


def test_sync_running_while_webhooks_arrive_applies_each_event_once(app):
    shoppers = [ShopClient(app) for _ in range(6)]
    orders = [shopper.start({"field-notebook": 1}) for shopper in shoppers]
    for shopper, order in zip(shoppers, orders, strict=True):
        pay(shopper, order.checkout_url)
    outputs: list[str] = []
    sync = threading.Thread(target=lambda: outputs.append(run_sync(app).output))

    sync.start()
    stripe_emulator.tick(app)
    sync.join(timeout=30)

    assert len(outputs) == 1, "sync did not finish"
    assert statuses(app, orders) == ["paid"] * 6
    with app.app_context():
        outcomes = db.session.scalars(select(StripeEvent.outcome)).all()
    assert sorted(outcomes) == ["order paid"] * 6
    assert recorded_event_ids(app) == stripe_event_ids(app)


def test_event_dropped_before_a_later_delivered_one_is_still_found(app):
    """The newest delivered event is ten minutes younger than the lost one."""
    started = time.time()
    lost_shopper, later_shopper = ShopClient(app), ShopClient(app)
    lost, later = lost_shopper.start({"enamel-mug": 1}), later_shopper.start({"enamel-mug": 1})
    with deliveries_dropped(app):
        pay(lost_shopper, lost.checkout_url)
        stripe_emulator.tick(app)
    pay(later_shopper, later.checkout_url, method="bank_transfer")
    stripe_emulator.tick(app)
    stripe_emulator.tick(app, now=started + 600)  # its transfer settles; that event is delivered
    assert statuses(app, [lost, later]) == ["awaiting_payment", "paid"]

    with app.app_context():
        lost_created = db.session.scalar(select(Event.created).where(Event.type == "checkout.session.completed").order_by(Event.seq))
        newest_seen = db.session.scalar(select(func.max(StripeEvent.created)))
        assert newest_seen - lost_created > OVERLAP_SECONDS
        assert sync_window_start() < lost_created
    run_sync(app)

    assert statuses(app, [lost, later]) == ["paid", "paid"]


def test_lost_refund_of_a_paid_order_is_found_after_later_deliveries(app):
    """A paid order is no longer open, so only the look-back window can find its lost refund."""
    started = time.time()
    refunded_shopper, later_shopper = ShopClient(app), ShopClient(app)
    refunded, later = refunded_shopper.start({"enamel-mug": 2}), later_shopper.start({"enamel-mug": 1})
    pay(refunded_shopper, refunded.checkout_url)
    stripe_emulator.tick(app)
    paid = get_order(app, refunded.public_id)
    with deliveries_dropped(app):
        with app.app_context():
            stripe_gateway.refund_remaining(paid, attempt="from-a-test")
        stripe_emulator.tick(app)
    pay(later_shopper, later.checkout_url, method="bank_transfer")
    stripe_emulator.tick(app)
    stripe_emulator.tick(app, now=started + 600)
    assert statuses(app, [refunded, later]) == ["paid", "paid"]

    run_sync(app)

    assert statuses(app, [refunded, later]) == ["refunded", "paid"]


def test_sync_never_asks_past_stripes_event_history_and_reconciles_older_orders_from_their_sessions(database_url):
    """Stripe lists 30 days of events: orders older than that are settled from their sessions."""
    month = 31 * 24 * 3600
    with seeded_app(database_url, STRIPE_EMULATOR_DROP=1, STRIPE_EMULATOR_EVENT_RETENTION_DAYS=30) as app:
        shoppers = [ShopClient(app) for _ in range(4)]
        paid, transfer, abandoned = placed = [shopper.start({"enamel-mug": 1}) for shopper in shoppers[:3]]
        pay(shoppers[0], paid.checkout_url)
        pay(shoppers[1], transfer.checkout_url, method="bank_transfer")  # never settles: its events are gone
        with app.app_context():
            stripe_gateway.expire_checkout_session(abandoned.stripe_session_id)
            payment_intent = db.session.scalar(select(CheckoutSession.payment_intent).where(CheckoutSession.id == paid.stripe_session_id))
            for order in db.session.scalars(select(Order)):
                order.created_at -= timedelta(seconds=month)
            for event in db.session.scalars(select(Event)):
                event.created -= month
            db.session.commit()
        refund = refund_event(payment_intent, 2400, 2400)  # delivered, but before its (lost) payment
        assert post_event(app, refund).status_code == 200
        recent = shoppers[3].start({"enamel-mug": 1})
        pay(shoppers[3], recent.checkout_url)
        stripe_emulator.tick(app)
        recorder = record_stripe_calls(app)

        output = run_sync(app).output

        [(_, url, _, _)] = [call for call in recorder.requests if "/v1/events" in call[1]]
        asked_from = int(parse_qs(urlsplit(url).query)["created[gt]"][0])
        assert asked_from >= time.time() - 30 * 24 * 3600 - 5
        assert "3 open order(s) older than Stripe's 30-day event history reconciled" in output
        final = [get_order(app, order.public_id) for order in [*placed, recent]]
        assert [order.status for order in final] == ["refunded", "processing", "expired", "paid"]
        assert "delayed payment" in final[1].review_reason and final[0].review_reason is None
        assert event_state(app, refund["id"])[0] == "applied"
