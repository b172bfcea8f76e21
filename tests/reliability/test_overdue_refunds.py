"""Refunds still waiting for their payment after the grace period: `stripe sync` asks Stripe
which Checkout Session the payment belongs to, and settles them by the answer."""
from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import delete, select

from shop import recovery, stripe_emulator
from shop.extensions import db
from shop.models import StripeEvent, utcnow
from shop.stripe_emulator import foreign
from shop.stripe_emulator.models import CheckoutSession, Delivery, Event
from tests.conftest import seeded_app
from tests.helpers import (
    ShopClient,
    event_state,
    get_order,
    pay,
    post_event,
    record_stripe_calls,
    refund_event,
    stripe_sdk,
)
from tests.reliability.conftest import run_sync
from tests.reliability.test_refund_ordering import refund_in_dashboard
from tests.test_admin import OPERATOR, Operator

SESSION_LOOKUPS = "/v1/checkout/sessions"


def sync_later(app: Flask, monkeypatch: pytest.MonkeyPatch, after: timedelta):
    """`stripe sync`, run `after` from now."""
    monkeypatch.setattr(recovery, "utcnow", lambda: utcnow() + after)
    return app.test_cli_runner().invoke(args=["stripe", "sync"])


def waiting_page(app: Flask) -> str:
    app.config.update(ADMIN_USERNAME=OPERATOR[0], ADMIN_PASSWORD=OPERATOR[1])
    return Operator(app).get("/admin/events").get_data(as_text=True)


def session_lookups(recorder) -> list[str]:
    return [url for method, url, *_ in recorder.requests if method == "get" and SESSION_LOOKUPS + "?" in url]


def outcome_of(app: Flask, event_id: str) -> str | None:
    with app.app_context():
        return db.session.scalar(select(StripeEvent.outcome).where(StripeEvent.id == event_id))


def test_a_refund_of_a_payment_stripe_has_no_session_for_is_resolved_as_not_ours(app, monkeypatch):
    refund = refund_event("pi_3PaidThroughTheApiElsewhere", 1500, 1500)
    assert post_event(app, refund).status_code == 200
    assert event_state(app, refund["id"])[0] == "waiting"
    assert refund["id"] in waiting_page(app)

    result = sync_later(app, monkeypatch, recovery.WAITING_GRACE + timedelta(minutes=1))

    assert result.exit_code == 0, result.output
    assert event_state(app, refund["id"]) == ("not_ours", "pi_3PaidThroughTheApiElsewhere", None)
    assert outcome_of(app, refund["id"]) == "not ours: Stripe has no Checkout Session for this payment"
    assert "1 waiting event(s) found to be another integration's payment" in result.output
    page = waiting_page(app)
    assert refund["id"] not in page and "No Stripe event has failed, none is waiting, and none flagged an order." in page


def refunded_foreign_payment(now: float) -> list[foreign.ForeignEvent]:
    """Another integration's Checkout payment, and its refund."""
    while len(events := foreign.other_payment(now)) < 3:
        pass
    return events


@pytest.fixture
def foreign_app(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    monkeypatch.setattr(foreign, "traffic", refunded_foreign_payment)
    with seeded_app(database_url, STRIPE_EMULATOR_FOREIGN_TRAFFIC=1) as app:
        yield app


def test_a_refund_of_another_integrations_checkout_payment_is_resolved_as_not_ours(foreign_app, monkeypatch):
    app, shopper = foreign_app, ShopClient(foreign_app)
    order = shopper.start({"enamel-mug": 1})
    pay(shopper, order.checkout_url)
    stripe_emulator.tick(app)  # the shop's payment, then another integration's payment and refund
    assert get_order(app, order.public_id).status == "paid"
    with app.app_context():
        waiting = db.session.scalars(select(StripeEvent).where(StripeEvent.state == "waiting")).all()
        # charge.refunded, and refund.created at the API versions that send it: both wait for one payment
        [payment_intent] = {row.waiting_for for row in waiting}
        refund_ids = [row.id for row in waiting]
        theirs = db.session.scalar(select(CheckoutSession.id).where(CheckoutSession.payment_intent == payment_intent))
    assert theirs is not None  # Stripe knows the session that payment was made through

    result = sync_later(app, monkeypatch, recovery.WAITING_GRACE + timedelta(minutes=1))

    assert result.exit_code == 0, result.output
    for refund_id in refund_ids:
        assert event_state(app, refund_id)[0] == "not_ours"
        assert outcome_of(app, refund_id) == f"not ours: its Checkout Session {theirs} is not one of this shop's"
        assert refund_id not in waiting_page(app)
    assert get_order(app, order.public_id).status == "paid"


def lose_the_events_of(app: Flask, session_id: str) -> None:
    """Stripe no longer has the session's events (and will never deliver them)."""
    with app.app_context():
        events = db.session.scalars(select(Event).where(Event.type.like("checkout.session.%"))).all()
        lost_ids = [event.id for event in events if event.object["id"] == session_id]
        assert lost_ids
        db.session.execute(delete(Delivery).where(Delivery.event_id.in_(lost_ids)))
        db.session.execute(delete(Event).where(Event.id.in_(lost_ids)))
        db.session.commit()


def test_a_refund_of_our_payment_whose_completion_was_lost_is_applied_after_the_payment(app, monkeypatch):
    shopper = ShopClient(app)
    order = shopper.start({"enamel-mug": 2})
    pay(shopper, order.checkout_url)
    refund_in_dashboard(app, order.stripe_session_id, amount=1000)
    lose_the_events_of(app, order.stripe_session_id)
    stripe_emulator.tick(app)  # only the refund arrives
    with app.app_context():
        waiting = db.session.scalars(select(StripeEvent.type).where(StripeEvent.state == "waiting")).all()
        refund_ids = db.session.scalars(select(StripeEvent.id).where(StripeEvent.state == "waiting")).all()
    assert sorted(waiting) == ["charge.refunded", "refund.created"]
    assert get_order(app, order.public_id).status == "awaiting_payment"

    result = sync_later(app, monkeypatch, recovery.WAITING_GRACE + timedelta(minutes=1))

    assert result.exit_code == 0, result.output
    paid = get_order(app, order.public_id)
    assert (paid.status, paid.amount_refunded, paid.review_reason) == ("partially_refunded", 1000, None)
    assert paid.paid_at is not None and paid.customer_email == "shopper@example.com"
    assert [event_state(app, refund_id) for refund_id in refund_ids] == [("applied", None, paid.id)] * 2
    assert f"its session {order.stripe_session_id} (complete, paid) applied: order paid" in result.output
    assert "0 waiting" in run_sync(app).output  # and a second sync finds nothing more to do
    assert get_order(app, order.public_id).amount_refunded == 1000


def test_a_refund_within_the_grace_period_keeps_waiting_without_asking_stripe(app, monkeypatch):
    refund = refund_event("pi_3MaybeItsPaymentIsOnItsWay", 1500, 1500)
    assert post_event(app, refund).status_code == 200
    recorder = record_stripe_calls(app)

    result = sync_later(app, monkeypatch, recovery.WAITING_GRACE - timedelta(minutes=5))

    assert result.exit_code == 0, result.output
    assert event_state(app, refund["id"])[0] == "waiting"
    assert session_lookups(recorder) == []
    assert "1 waiting for their payment" in result.output
    assert refund["id"] in waiting_page(app)


def test_stripe_unreachable_leaves_the_refund_waiting_and_says_so(app, monkeypatch):
    refund = refund_event("pi_3NobodyCanSayWhose", 1500, 1500)
    refund["created"] = int(time.time() - 2 * 3600)
    assert post_event(app, refund).status_code == 200
    failures = app.extensions["stripe_emulator"].failures
    failures.add("GET", SESSION_LOOKUPS, times=1 + app.config["STRIPE_MAX_NETWORK_RETRIES"])

    result = app.test_cli_runner().invoke(args=["stripe", "sync"])

    assert result.exit_code == 1
    assert "FAILED pi_3NobodyCanSayWhose: could not ask Stripe whose payment it is, still waiting" in result.output
    assert "1 payment(s) could not be looked up at Stripe" in result.output
    assert event_state(app, refund["id"]) == ("waiting", "pi_3NobodyCanSayWhose", None)
    assert refund["id"] in waiting_page(app)
    assert "Events needing attention (1)" in waiting_page(app)

    assert run_sync(app).exit_code == 0  # Stripe answers again: settled
    assert event_state(app, refund["id"])[0] == "not_ours"


def test_a_refund_through_a_session_that_only_names_one_of_our_orders_keeps_waiting(app, monkeypatch):
    """A session the shop never made, carrying an order id of ours: not proof either way, so the
    refund is neither applied nor dismissed, and sync says so."""
    shopper = ShopClient(app)
    order = shopper.start({"enamel-mug": 1})
    stranger = stripe_sdk(app).v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "client_reference_id": order.public_id,
            "line_items": [{"price_data": {"currency": "usd", "unit_amount": 2400, "product_data": {"name": "Mug"}},
                            "quantity": 1}],
            "success_url": "https://elsewhere.example/done",
        }
    )
    pay(shopper, stranger.url)
    refund_in_dashboard(app, stranger.id)
    stripe_emulator.tick(app)
    with app.app_context():
        refund_ids = db.session.scalars(select(StripeEvent.id).where(StripeEvent.state == "waiting")).all()
    assert len(refund_ids) == 2  # refund.created and charge.refunded

    result = sync_later(app, monkeypatch, recovery.WAITING_GRACE + timedelta(minutes=1))

    assert result.exit_code == 0, result.output
    assert f"names order {order.public_id}, which was never given that session" in result.output
    assert [event_state(app, refund_id)[0] for refund_id in refund_ids] == ["waiting"] * 2
    flagged = get_order(app, order.public_id)
    assert flagged.status == "awaiting_payment"
    assert f"session {stranger.id}, which names this order" in flagged.review_reason  # its payment, listed for the operator
