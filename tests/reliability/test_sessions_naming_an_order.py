"""A Checkout Session that names one of the shop's orders is never "not ours".

The process can die between Stripe creating an order's session and the shop recording it.
Stripe still sends that session's events, and its `client_reference_id` names the order: a
pending order takes the session and the event is applied with every check; an order the shop
has given up (or that has another session) is flagged, and the event listed for the operator.
"""
from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from shop import stripe_emulator, stripe_gateway
from shop.extensions import db
from shop.models import Order, Product, StripeEvent
from shop.stripe_emulator.models import Charge, CheckoutSession
from tests.helpers import event_state, get_order, latest_order, pay, post_event, session_event
from tests.reliability.conftest import run_sync


def product_stock(app: Flask, slug: str) -> int:
    with app.app_context():
        return db.session.scalar(select(Product.stock).where(Product.slug == slug))


def crash_after_the_session_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stripe creates the session; the worker dies before the shop records it."""
    real_create = stripe_gateway.create_checkout_session

    def create_then_die(*args: Any, **kwargs: Any):
        real_create(*args, **kwargs)
        raise SystemExit("worker killed")

    monkeypatch.setattr(stripe_gateway, "create_checkout_session", create_then_die)


def orphan_session(app: Flask) -> tuple[Order, str, str]:
    """The crashed order, and its session's id and payment page, as only Stripe knows them."""
    order = latest_order(app)
    with app.app_context():
        session = db.session.scalar(select(CheckoutSession).where(CheckoutSession.params["client_reference_id"].as_string() == order.public_id))
        return order, session.id, session.page_url


def test_payment_of_a_session_the_shop_never_recorded_pays_its_pending_order(app, shop, monkeypatch):
    crash_after_the_session_exists(monkeypatch)
    with pytest.raises(SystemExit):
        shop.checkout({"enamel-mug": 2})
    order, session_id, page_url = orphan_session(app)
    assert (order.status, order.stripe_session_id) == ("pending", None)
    stock = product_stock(app, "enamel-mug")

    assert pay(shop, page_url).status_code == 303  # the shopper had the page open: it can be paid
    stripe_emulator.tick(app)

    paid = get_order(app, order.public_id)
    assert (paid.status, paid.stripe_session_id, paid.review_reason) == ("paid", session_id, None)
    assert paid.payment_intent_id and paid.paid_at
    assert product_stock(app, "enamel-mug") == stock  # its reserved units are the ones sold


def test_a_session_the_shop_never_recorded_is_still_checked_against_its_order(app, shop):
    order = shop.start({"enamel-mug": 1})
    with app.app_context():  # as if the process died before recording the session
        db.session.execute(update(Order).where(Order.id == order.id).values(status="pending", stripe_session_id=None))
        db.session.commit()
    event = session_event(order, "checkout.session.completed", id="cs_test_unrecorded", amount_total=1)

    assert post_event(app, event).status_code == 200

    flagged = get_order(app, order.public_id)
    assert (flagged.status, flagged.stripe_session_id) == ("awaiting_payment", "cs_test_unrecorded")
    assert "Stripe reports 1 usd" in flagged.review_reason
    assert event_state(app, event["id"])[0] == "needs_review"


@pytest.mark.parametrize("gave_up_as", ["expired", "failed", "cancelled"])
def test_payment_on_an_order_the_shop_gave_up_is_flagged_and_needs_attention(app, shop, gave_up_as):
    order = shop.start({"enamel-mug": 1})
    with app.app_context():
        db.session.execute(update(Order).where(Order.id == order.id).values(status=gave_up_as, stripe_session_id=None))
        db.session.commit()
    event = session_event(order, "checkout.session.completed", id="cs_test_never_recorded", payment_intent="pi_taken")

    assert post_event(app, event).status_code == 200

    flagged = get_order(app, order.public_id)
    assert flagged.status == gave_up_as and flagged.paid_at is None
    assert f"while the order was {gave_up_as}" in flagged.review_reason and "pi_taken" in flagged.review_reason
    assert event_state(app, event["id"]) == ("needs_review", None, order.id)
    assert post_event(app, event).status_code == 200  # a repeat is a duplicate, and changes nothing
    assert event_state(app, event["id"]) == ("needs_review", None, order.id)


def test_payment_through_a_second_session_of_a_paid_order_is_flagged(app, shop):
    order = shop.start({"enamel-mug": 1})
    assert post_event(app, session_event(order, "checkout.session.completed")).status_code == 200
    second = session_event(order, "checkout.session.completed", id="cs_test_second", payment_intent="pi_second")

    assert post_event(app, second).status_code == 200

    flagged = get_order(app, order.public_id)
    assert (flagged.status, flagged.stripe_session_id) == ("paid", order.stripe_session_id)
    assert f"while the order was paid with session {order.stripe_session_id}" in flagged.review_reason
    assert event_state(app, second["id"])[0] == "needs_review"


def test_expiry_of_a_session_naming_an_order_that_moved_on_changes_nothing(app, shop):
    order = shop.start({"enamel-mug": 1})
    assert post_event(app, session_event(order, "checkout.session.completed")).status_code == 200
    expired = session_event(order, "checkout.session.expired", id="cs_test_other")

    assert post_event(app, expired).status_code == 200

    assert get_order(app, order.public_id).review_reason is None
    assert event_state(app, expired["id"]) == ("applied", None, order.id)


def test_a_session_naming_no_order_of_the_shop_is_not_ours(app, shop):
    order = shop.start({"enamel-mug": 1})
    event = session_event(order, "checkout.session.completed", id="cs_test_theirs", client_reference_id="ord_unknown",
                          metadata={"order_id": "ord_unknown"})
    assert post_event(app, event).status_code == 200
    assert event_state(app, event["id"])[0] == "not_ours"
    assert get_order(app, order.public_id).status == "awaiting_payment"


def test_deliveries_racing_for_an_unrecorded_session_pay_its_order_once(app, shop):
    order = shop.start({"enamel-mug": 3})
    with app.app_context():
        db.session.execute(update(Order).where(Order.id == order.id).values(status="pending", stripe_session_id=None))
        db.session.commit()
    stock = product_stock(app, "enamel-mug")
    # Stripe's events for one session: a completion (delivered twice over, under new ids as a
    # Dashboard resend of a copy would be) and its expiry racing it.
    events = [session_event(order, "checkout.session.completed", id="cs_test_raced", payment_intent="pi_raced")
              for _ in range(6)]
    events.append(session_event(order, "checkout.session.expired", id="cs_test_raced"))
    start = threading.Barrier(len(events))
    answers: list[int] = []

    def deliver(event: dict[str, Any]) -> None:
        start.wait()
        answers.append(post_event(app, event).status_code)

    threads = [threading.Thread(target=deliver, args=(event,)) for event in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers == [200] * len(events)
    paid = get_order(app, order.public_id)
    assert (paid.status, paid.stripe_session_id, paid.review_reason) == ("paid", "cs_test_raced", None)
    assert product_stock(app, "enamel-mug") == stock
    with app.app_context():
        states = db.session.scalars(select(StripeEvent.state)).all()
    assert sorted(states) == ["applied"] * len(events)


# --- The stale-order sweep ---------------------------------------------------------------------


def time_passes(app: Flask, minutes: int) -> None:
    """Move the orders and Stripe's sessions back in time together, as if `minutes` had passed."""
    seconds = minutes * 60
    with app.app_context():
        for order in db.session.scalars(select(Order)):
            order.created_at -= timedelta(seconds=seconds)
        db.session.execute(
            update(CheckoutSession).values(
                created=CheckoutSession.created - seconds, expires_at=CheckoutSession.expires_at - seconds
            )
        )
        db.session.commit()


def emulator_charges(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Charge))


def crashed_checkout_gone_stale(app: Flask, shop, monkeypatch: pytest.MonkeyPatch) -> tuple[Order, str, str]:
    crash_after_the_session_exists(monkeypatch)
    with pytest.raises(SystemExit):
        shop.checkout({"enamel-mug": 2})
    monkeypatch.undo()
    time_passes(app, app.config["STALE_PENDING_MINUTES"] + 1)
    return orphan_session(app)


def test_the_sweep_closes_the_session_of_a_crashed_checkout_before_returning_its_stock(app, shop, monkeypatch):
    """Killed between Stripe creating the session and the shop recording it; swept; then paid."""
    stock = product_stock(app, "enamel-mug")
    order, session_id, page_url = crashed_checkout_gone_stale(app, shop, monkeypatch)
    assert product_stock(app, "enamel-mug") == stock - 2

    output = run_sync(app).output

    assert "1 stale pending order(s) expired" in output
    assert f"{order.public_id}: found its session {session_id} at Stripe (expired, unpaid): order expired" in output
    expired = get_order(app, order.public_id)
    assert (expired.status, expired.stripe_session_id, expired.review_reason) == ("expired", session_id, None)
    assert product_stock(app, "enamel-mug") == stock

    assert pay(shop, page_url).status_code == 409  # the shopper's open tab can no longer pay
    stripe_emulator.tick(app)
    assert emulator_charges(app) == 0
    assert get_order(app, order.public_id).status == "expired"


def test_the_sweep_finds_a_crashed_checkout_paid_and_keeps_its_stock(app, shop, monkeypatch):
    stock = product_stock(app, "enamel-mug")
    order, session_id, page_url = crashed_checkout_gone_stale(app, shop, monkeypatch)
    assert pay(shop, page_url).status_code == 303  # paid; its webhook not yet delivered (no tick)

    output = run_sync(app).output

    assert "0 stale pending order(s) expired" in output
    paid = get_order(app, order.public_id)
    assert (paid.status, paid.stripe_session_id, paid.review_reason) == ("paid", session_id, None)
    assert product_stock(app, "enamel-mug") == stock - 2
    stripe_emulator.tick(app)  # the webhook arrives after all: nothing more to do
    assert get_order(app, order.public_id).status == "paid"


def test_the_sweep_keeps_a_crashed_checkout_pending_while_stripe_cannot_be_asked(app, shop, monkeypatch):
    stock = product_stock(app, "enamel-mug")
    order, _, _ = crashed_checkout_gone_stale(app, shop, monkeypatch)

    def unreachable(*args: Any) -> list:
        raise stripe_gateway.PaymentProviderError("Stripe is unreachable")

    monkeypatch.setattr(stripe_gateway, "checkout_sessions_naming", unreachable)

    result = app.test_cli_runner().invoke(args=["stripe", "sync"])

    assert result.exit_code == 1
    assert f"FAILED {order.public_id}: left pending, could not ask Stripe for its Checkout Session" in result.output
    assert get_order(app, order.public_id).status == "pending"
    assert product_stock(app, "enamel-mug") == stock - 2  # held until Stripe says nobody can pay
