"""Whole purchases through the emulator's hosted page and its signed webhooks."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from shop import stripe_emulator
from shop.extensions import db
from shop.models import Order, StripeEvent
from tests.conftest import seeded_app
from tests.helpers import ShopClient, count, get_order, path_of, pay

SESSION_EXPIRED_LATER = 45 * 60 + 60  # a session expires 45 minutes after its order was placed


def test_buying_two_and_one_with_4242_ends_paid_on_the_home_page(app, shop):
    order = shop.start({"field-notebook": 2, "canvas-tote": 1})
    payment = pay(shop, order.checkout_url)
    assert payment.status_code == 303
    assert payment.headers["Location"] == f"http://localhost/checkout/success?session_id={order.stripe_session_id}"

    # Back on the shop before the webhook arrived: the success page waits, it doesn't decide.
    success = shop.http.get(path_of(payment.headers["Location"]))
    assert "Confirming your payment" in success.get_data(as_text=True)
    assert get_order(app, order.public_id).status == "awaiting_payment"

    assert stripe_emulator.tick(app) >= 1  # the signed webhook goes through /webhooks/stripe
    paid = get_order(app, order.public_id)
    assert paid.status == "paid"
    assert paid.customer_email == "shopper@example.com"
    assert paid.payment_intent_id.startswith("pi_")
    with app.app_context():
        recorded = db.session.scalars(select(StripeEvent.type).where(StripeEvent.order_id == paid.id)).all()
    assert recorded == ["checkout.session.completed"]

    home = shop.http.get("/").get_data(as_text=True)
    assert f'data-order-id="{order.public_id}" data-status="paid"' in home
    assert "$68.00" in home and "2 × Field Notebook" in home and "1 × Canvas Tote" in home


@pytest.mark.parametrize(
    "card, message", [("4000 0000 0000 0002", "Your card was declined."), ("4000000000009995", "insufficient funds")]
)
def test_a_refused_card_can_be_retried_and_ends_in_one_paid_order(app, shop, card, message):
    order = shop.start({"enamel-mug": 1})
    refused = pay(shop, order.checkout_url, card=card)
    assert refused.status_code == 402
    assert message in refused.get_data(as_text=True)
    stripe_emulator.tick(app)
    assert get_order(app, order.public_id).status == "awaiting_payment"

    assert pay(shop, order.checkout_url).status_code == 303
    stripe_emulator.tick(app)
    assert get_order(app, order.public_id).status == "paid"
    assert count(app, Order) == 1


def test_delayed_payment_processes_then_succeeds(app, shop):
    order = shop.start({"enamel-mug": 1})
    pay(shop, order.checkout_url, method="bank_transfer")
    stripe_emulator.tick(app)
    assert get_order(app, order.public_id).status == "processing"
    status = shop.http.get(f"/orders/{order.public_id}/status").json
    assert status["status"] == "processing" and status["paid"] is False

    stripe_emulator.tick(app, now=time.time() + 10)
    assert get_order(app, order.public_id).status == "paid"


def test_delayed_payment_that_fails(app, shop):
    order = shop.start({"enamel-mug": 1})
    pay(shop, order.checkout_url, method="bank_transfer_fail")
    stripe_emulator.tick(app)
    stripe_emulator.tick(app, now=time.time() + 10)
    assert get_order(app, order.public_id).status == "failed"


def test_unpaid_session_expires_45_minutes_after_the_order(app, shop):
    order = shop.start({"enamel-mug": 1})
    stripe_emulator.tick(app, now=time.time() + 44 * 60)
    assert get_order(app, order.public_id).status == "awaiting_payment"
    stripe_emulator.tick(app, now=time.time() + SESSION_EXPIRED_LATER)
    assert get_order(app, order.public_id).status == "expired"
    late = pay(shop, order.checkout_url)
    assert late.status_code == 409
    assert get_order(app, order.public_id).status == "expired"


def test_cancelled_session_cannot_be_paid_afterwards(app, shop):
    order = shop.start({"enamel-mug": 1})
    shop.http.get(f"/checkout/cancel?order={order.public_id}")
    assert pay(shop, order.checkout_url).status_code == 409
    stripe_emulator.tick(app)
    assert get_order(app, order.public_id).status == "cancelled"


def test_completed_session_cannot_be_paid_twice(app, shop):
    order = shop.start({"enamel-mug": 1})
    pay(shop, order.checkout_url)
    assert pay(shop, order.checkout_url).status_code == 409
    stripe_emulator.tick(app)
    with app.app_context():
        assert db.session.scalar(select(StripeEvent.type)) == "checkout.session.completed"
    assert count(app, StripeEvent) == 1


@pytest.fixture
def chaos_app(database_url):
    """An app whose emulator delivers every event twice, in shuffled order."""
    with seeded_app(database_url, STRIPE_EMULATOR_DUPLICATE=True, STRIPE_EMULATOR_SHUFFLE=True) as app:
        yield app


def test_duplicated_and_shuffled_deliveries_apply_once(chaos_app):
    app = chaos_app
    shoppers = [ShopClient(app) for _ in range(4)]
    orders = [s.start({"enamel-mug": i + 1}) for i, s in enumerate(shoppers)]
    pay(shoppers[0], orders[0].checkout_url)
    pay(shoppers[1], orders[1].checkout_url, method="bank_transfer")
    pay(shoppers[2], orders[2].checkout_url, method="bank_transfer_fail")
    # orders[3] is left to expire.
    stripe_emulator.tick(app, now=time.time() + 10)  # completions, and the async results, race
    stripe_emulator.tick(app, now=time.time() + SESSION_EXPIRED_LATER)
    stripe_emulator.tick(app, now=time.time() + SESSION_EXPIRED_LATER + 60)
    assert [get_order(app, o.public_id).status for o in orders] == ["paid", "paid", "failed", "expired"]
    with app.app_context():
        recorded = db.session.scalars(select(StripeEvent.id)).all()
    assert len(recorded) == len(set(recorded)) == 6  # 3 completed, 1 async ok, 1 async failed, 1 expired
