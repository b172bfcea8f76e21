"""The shop against Stripe as it really is (`STRIPE_EMULATOR_HOSTILE=1`): every event may come
twice and in any order, other integrations' events arrive in between, a failed delivery is
retried only hours later, and an idempotency key replays a 500 for a day.

What the shop must show: the same outcomes as in the kind world, each event of its own
applied once, nothing of anyone else's touching an order, and recovery by `stripe sync` or a
resend, never by waiting for a quick retry.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from shop import events, orders, refunds, stripe_emulator, stripe_gateway
from shop.extensions import db
from shop.models import Order, StripeEvent
from shop.stripe_emulator import core, foreign
from shop.stripe_emulator.models import Charge, CheckoutSession, Delivery, Event
from tests.conftest import seeded_app
from tests.emulator.conftest import sdk_client
from tests.helpers import ShopClient, count, get_order, patch_order_handler, pay
from tests.reliability.conftest import run_sync

HOUR = 3600


@pytest.fixture
def hostile_app(database_url: str) -> Iterator[Flask]:
    with seeded_app(database_url, STRIPE_EMULATOR_HOSTILE=True) as app:
        yield app


def after_every_session_expired(app: Flask) -> float:
    """A minute after the last of the shop's Checkout Sessions' `expires_at`."""
    with app.app_context():
        shops = CheckoutSession.id.in_(select(Order.stripe_session_id))
        return db.session.scalar(select(func.max(CheckoutSession.expires_at)).where(shops)) + 60


def own_event_ids(app: Flask) -> set[str]:
    """Events about the shop's own sessions and charges (the rest is other integrations', whose
    paid sessions Stripe also keeps)."""
    with app.app_context():
        sessions = set(db.session.scalars(select(Order.stripe_session_id).where(Order.stripe_session_id.is_not(None))))
        ours = sessions | set(db.session.scalars(select(Charge.id).where(Charge.session_id.in_(sessions))))
        return {event.id for event in db.session.scalars(select(Event)) if event.object["id"] in ours}


def foreign_event_ids(app: Flask) -> set[str]:
    with app.app_context():
        every = set(db.session.scalars(select(Event.id)))
    return every - own_event_ids(app)


def applied_event_ids(app: Flask) -> list[str]:
    """Event ids the shop recorded as done, one entry per row."""
    with app.app_context():
        return list(db.session.scalars(select(StripeEvent.id).where(StripeEvent.processed_at.is_not(None))))


def orders_snapshot(app: Flask) -> list[tuple[Any, ...]]:
    with app.app_context():
        return [
            tuple(row) for row in db.session.execute(
                select(Order.public_id, Order.status, Order.payment_intent_id, Order.review_reason,
                       Order.amount_refunded).order_by(Order.id)
            )
        ]


def undelivered(app: Flask, event_ids: set[str]) -> list[tuple[str, str, int | None]]:
    """(event id, delivery status, last HTTP status) of every delivery that hasn't succeeded."""
    with app.app_context():
        rows = db.session.execute(
            select(Delivery.event_id, Delivery.status, Delivery.last_status).where(Delivery.event_id.in_(event_ids))
        ).all()
    return [tuple(row) for row in rows if row.status != "delivered"]


def fail_deliveries_of(monkeypatch: pytest.MonkeyPatch, app: Flask, event_type: str) -> None:
    """The shop's database fails while applying `event_type` (500, rolled back), until undone."""
    real_apply = orders.apply_session_event

    def apply_then_fail(kind: str, session: Any) -> orders.Outcome:
        outcome = real_apply(kind, session)
        if kind == event_type:
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
        return outcome

    patch_order_handler(monkeypatch, "apply_session_event", apply_then_fail)
    app.config["PROPAGATE_EXCEPTIONS"] = False


def test_hostile_mode_is_on(hostile_app):
    settings = hostile_app.extensions["stripe_emulator"].settings
    assert settings.duplicate and settings.shuffle and settings.save_failed_requests
    assert settings.foreign_traffic == 2 and settings.retry_schedule[0] >= HOUR
    assert settings.adaptive_pricing is not None  # customers pay in their own currency


def test_every_outcome_amid_duplicates_shuffles_and_other_integrations_events(hostile_app):
    app = hostile_app
    shoppers = [ShopClient(app) for _ in range(4)]
    card, transfer, failed_transfer, abandoned = orders_ = [s.start({"enamel-mug": 1}) for s in shoppers]
    pay(shoppers[0], card.checkout_url)
    pay(shoppers[1], transfer.checkout_url, method="bank_transfer")
    pay(shoppers[2], failed_transfer.checkout_url, method="bank_transfer_fail")
    started = time.time()
    stripe_emulator.tick(app, now=started)
    stripe_emulator.tick(app, now=started + 10)  # the transfers settle
    stripe_emulator.tick(app, now=after_every_session_expired(app))  # the abandoned session expires
    stripe_emulator.tick(app, now=after_every_session_expired(app) + 60)

    assert [get_order(app, o.public_id).status for o in orders_] == ["paid", "paid", "failed", "expired"]
    assert [get_order(app, o.public_id).review_reason for o in orders_] == [None] * 4
    # Adaptive Pricing: the customer paid 22.08 EUR, the order is checked and paid as 24.00 USD.
    assert [get_order(app, o.public_id).presentment_amount for o in orders_[:2]] == [2208, 2208]
    own = own_event_ids(app)
    assert len(own) == 6  # 3 completed, 1 async succeeded, 1 async failed, 1 expired
    applied = applied_event_ids(app)
    assert own <= set(applied) and len(applied) == len(set(applied))
    assert undelivered(app, own) == []  # every delivery of the shop's own events was answered 2xx
    assert foreign_event_ids(app)  # and there was other traffic in between


def test_a_declined_card_then_a_good_one_and_a_cancelled_checkout(hostile_app):
    app = hostile_app
    buyer, leaver = ShopClient(app), ShopClient(app)
    bought, left = buyer.start({"enamel-mug": 1}), leaver.start({"canvas-tote": 1})
    assert pay(buyer, bought.checkout_url, card="4000 0000 0000 0002").status_code == 402
    assert pay(buyer, bought.checkout_url).status_code == 303
    leaver.http.get(f"/checkout/cancel?order={left.public_id}")
    assert pay(leaver, left.checkout_url).status_code == 409  # Stripe closed the session
    stripe_emulator.tick(app)

    assert get_order(app, bought.public_id).status == "paid"
    assert get_order(app, left.public_id).status == "cancelled"
    assert count(app, Order) == 2
    assert undelivered(app, own_event_ids(app)) == []


def test_other_integrations_events_are_answered_2xx_and_change_no_order(hostile_app):
    app = hostile_app
    shoppers = [ShopClient(app) for _ in range(3)]
    paid, left, _untouched = orders_ = [s.start({"canvas-tote": 1}) for s in shoppers]
    pay(shoppers[0], paid.checkout_url)
    shoppers[1].http.get(f"/checkout/cancel?order={left.public_id}")
    stripe_emulator.tick(app)
    before = orders_snapshot(app)

    settings = app.extensions["stripe_emulator"].settings
    with app.app_context():  # every kind of their traffic, at every API version, nothing of ours
        for version in (*foreign.OLDER_API_VERSIONS, stripe.api_version):
            for story in foreign.STORIES.values():
                for kind, obj, _ in story(time.time()):
                    core.emit(settings, kind, obj, time.time(), api_version=version)
        db.session.commit()
    while stripe_emulator.tick(app):  # a tick sends at most 100 deliveries
        pass

    theirs = foreign_event_ids(app)
    assert len(theirs) >= 4 * len(foreign.STORIES)
    assert undelivered(app, theirs) == []  # each answered 2xx: Stripe won't retry it for 3 days
    assert orders_snapshot(app) == before
    assert [get_order(app, o.public_id).status for o in orders_] == ["paid", "cancelled", "awaiting_payment"]
    with app.app_context():
        linked = db.session.scalars(
            select(StripeEvent.id).where(StripeEvent.id.in_(theirs), StripeEvent.order_id.is_not(None))
        ).all()
    assert linked == []  # and none was taken for an event about one of our orders


def test_a_refund_delivered_before_its_payment_is_not_lost(hostile_app, monkeypatch):
    """The payment's first delivery fails, so its retry is an hour away; the refund comes first."""
    app = hostile_app
    shop = ShopClient(app)
    order = shop.start({"field-notebook": 2})
    pay(shop, order.checkout_url)
    fail_deliveries_of(monkeypatch, app, orders.SESSION_COMPLETED)
    started = time.time()
    stripe_emulator.tick(app, now=started)
    assert get_order(app, order.public_id).status == "awaiting_payment"
    monkeypatch.undo()

    # Refunded from Stripe's dashboard (the shop doesn't know the payment yet).
    with app.app_context():
        payment_intent = db.session.scalar(
            select(CheckoutSession.payment_intent).where(CheckoutSession.id == order.stripe_session_id)
        )
    order.payment_intent_id = payment_intent
    with app.app_context():
        stripe_gateway.refund_remaining(order, attempt="from-a-test")
    stripe_emulator.tick(app, now=started + 60)  # the refund arrives first
    stripe_emulator.tick(app, now=started + HOUR + 60)  # then the payment's retry

    final = get_order(app, order.public_id)
    assert final.status == "refunded"
    assert final.amount_refunded == final.amount_total


def test_a_failed_delivery_is_retried_hours_later_so_sync_applies_it(hostile_app, monkeypatch):
    app = hostile_app
    shop = ShopClient(app)
    order = shop.start({"enamel-mug": 1})
    pay(shop, order.checkout_url)
    fail_deliveries_of(monkeypatch, app, orders.SESSION_COMPLETED)
    started = time.time()
    stripe_emulator.tick(app, now=started)
    monkeypatch.undo()
    stripe_emulator.tick(app, now=started + 10 * 60)  # no quick retry: ten minutes on, still nothing
    assert get_order(app, order.public_id).status == "awaiting_payment"

    run_sync(app)
    assert get_order(app, order.public_id).status == "paid"

    stripe_emulator.tick(app, now=started + HOUR + 60)  # Stripe's retry: a duplicate by now
    assert get_order(app, order.public_id).status == "paid"
    assert undelivered(app, own_event_ids(app)) == []
    applied = applied_event_ids(app)
    assert len(applied) == len(set(applied))


def test_a_resend_delivers_a_failed_event_without_waiting_for_the_retry(hostile_app, monkeypatch):
    app = hostile_app
    shop = ShopClient(app)
    order = shop.start({"enamel-mug": 1})
    pay(shop, order.checkout_url)
    fail_deliveries_of(monkeypatch, app, orders.SESSION_COMPLETED)
    stripe_emulator.tick(app)
    monkeypatch.undo()
    [completed] = own_event_ids(app)

    assert stripe_emulator.resend(app, completed)
    stripe_emulator.tick(app)
    assert get_order(app, order.public_id).status == "paid"


def test_a_replayed_500_fails_the_order_cleanly_and_a_new_form_pays(hostile_app):
    """Stripe made the session but answered 500; the key replays that 500 for a day."""
    app = hostile_app
    app.extensions["stripe_emulator"].failures.add("POST", "/v1/checkout/sessions", work_committed=True)
    shop = ShopClient(app)
    fields = shop.form_fields()

    first = shop.checkout({"enamel-mug": 1}, fields)
    assert first.status_code == 503
    assert "nothing was charged" in first.get_data(as_text=True)
    failed = get_order(app, latest_order_id(app))
    assert failed.status == "failed" and failed.stripe_session_id is None
    again = shop.checkout({"enamel-mug": 1}, fields)  # the same form resubmitted: the same 500
    assert again.status_code == 503
    assert count(app, Order) == 1

    order = shop.start({"enamel-mug": 1})  # a fresh form is a new order with its own key
    assert order.public_id != failed.public_id
    pay(shop, order.checkout_url)
    started = time.time()
    stripe_emulator.tick(app, now=started)
    stripe_emulator.tick(app, now=started + 25 * HOUR)  # the orphan session expires
    assert get_order(app, order.public_id).status == "paid"
    assert get_order(app, failed.public_id).status == "failed"


def latest_order_id(app: Flask) -> str:
    with app.app_context():
        return db.session.scalar(select(Order.public_id).order_by(Order.id.desc()))


def test_refunds_of_a_paid_order_apply_once_each(hostile_app):
    app = hostile_app
    shop = ShopClient(app)
    order = shop.start({"field-notebook": 2})
    pay(shop, order.checkout_url)
    stripe_emulator.tick(app)
    paid = get_order(app, order.public_id)
    assert paid.status == "paid"

    dashboard = sdk_client(app)  # a partial refund made in Stripe's dashboard
    dashboard.v1.refunds.create(params={"payment_intent": paid.payment_intent_id, "amount": 500})
    stripe_emulator.tick(app)
    partly = get_order(app, order.public_id)
    assert (partly.status, partly.amount_refunded) == ("partially_refunded", 500)

    with app.app_context():
        stripe_gateway.refund_remaining(partly, attempt="from-a-test")
    stripe_emulator.tick(app)
    refunded = get_order(app, order.public_id)
    assert (refunded.status, refunded.amount_refunded) == ("refunded", refunded.amount_total)
    assert undelivered(app, own_event_ids(app)) == []


def test_sync_recovers_every_outcome_when_no_webhook_arrives(database_url):
    with seeded_app(database_url, STRIPE_EMULATOR_HOSTILE=True, STRIPE_EMULATOR_DROP=1) as app:
        shoppers = [ShopClient(app) for _ in range(4)]
        card, transfer, failed_transfer, abandoned = orders_ = [s.start({"enamel-mug": 1}) for s in shoppers]
        pay(shoppers[0], card.checkout_url)
        pay(shoppers[1], transfer.checkout_url, method="bank_transfer")
        pay(shoppers[2], failed_transfer.checkout_url, method="bank_transfer_fail")
        started = time.time()
        stripe_emulator.tick(app, now=started + 10)
        stripe_emulator.tick(app, now=after_every_session_expired(app))
        assert [get_order(app, o.public_id).status for o in orders_] == ["awaiting_payment"] * 4

        run_sync(app)

        assert [get_order(app, o.public_id).status for o in orders_] == ["paid", "paid", "failed", "expired"]
        assert [get_order(app, o.public_id).review_reason for o in orders_] == [None] * 4
        applied = applied_event_ids(app)
        assert own_event_ids(app) <= set(applied) and len(applied) == len(set(applied))
        before = orders_snapshot(app)
        run_sync(app)
        assert orders_snapshot(app) == before


def test_a_refund_whose_every_attempt_failed_is_found_by_sync(hostile_app, monkeypatch):
    """The refund of a paid order fails at the shop until Stripe gives up (63 hours on)."""
    app = hostile_app
    shop = ShopClient(app)
    order = shop.start({"enamel-mug": 2})
    pay(shop, order.checkout_url)
    stripe_emulator.tick(app)
    paid = get_order(app, order.public_id)
    def database_down(*args: Any, **kwargs: Any) -> orders.Outcome:
        raise OperationalError("UPDATE", {}, Exception("could not connect to server"))

    real_handlers = dict(events.HANDLERS)
    for event_type in refunds.REFUND_EVENTS | {refunds.CHARGE_REFUNDED}:
        monkeypatch.setitem(events.HANDLERS, event_type, database_down)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    with app.app_context():
        stripe_gateway.refund_remaining(paid, attempt="from-a-test")
    started = time.time()
    for hours in range(0, 72, 1):
        stripe_emulator.tick(app, now=started + hours * HOUR)
    with app.app_context():
        refund_deliveries = db.session.execute(
            select(Delivery.status, Delivery.attempts).join(Event, Event.id == Delivery.event_id)
            .where(Event.type == "charge.refunded", Event.id.in_(own_event_ids(app)))
        ).all()
    assert [tuple(row) for row in refund_deliveries] == [("failed", 7), ("failed", 7)]  # duplicated
    assert get_order(app, order.public_id).status == "paid"

    monkeypatch.setattr(events, "HANDLERS", real_handlers)
    run_sync(app)
    assert get_order(app, order.public_id).status == "refunded"
