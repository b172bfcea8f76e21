"""Adaptive Pricing: the customer pays in their own currency, the shop is paid in its own.

With `STRIPE_EMULATOR_ADAPTIVE_PRICING`, the emulator shows the customer the total in their
currency and, as Stripe does, keeps `amount_total` and `currency` the shop's while the paid
session and its charge carry `presentment_details`. The shop still checks the payment against
its own amount, and shows the operator what the customer paid.
"""
from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from flask import Flask

from shop import create_app, stripe_emulator
from tests.conftest import seeded_app
from tests.helpers import ShopClient, get_order, path_of, pay, stripe_sdk


@pytest.fixture
def adaptive_app(database_url: str, request: pytest.FixtureRequest) -> Iterator[Flask]:
    setting = getattr(request, "param", "eur:0.92")
    with seeded_app(database_url, STRIPE_EMULATOR_ADAPTIVE_PRICING=setting) as app:
        app.config.update(ADMIN_USERNAME="operator", ADMIN_PASSWORD="a-long-password")
        yield app


def test_the_customer_sees_and_pays_their_currency_and_the_order_is_paid_in_the_shops(adaptive_app):
    app, shopper = adaptive_app, ShopClient(adaptive_app)
    order = shopper.start({"enamel-mug": 1})  # $24.00
    page = shopper.http.get(path_of(order.checkout_url)).get_data(as_text=True)
    assert "€22.08 ($24.00)" in page

    open_session = stripe_sdk(app).v1.checkout.sessions.retrieve(order.stripe_session_id)
    assert open_session.adaptive_pricing.enabled is True
    assert "presentment_details" not in json.loads(open_session.last_response.body)  # not chosen yet

    assert pay(shopper, order.checkout_url).status_code == 303
    stripe_emulator.tick(app)

    paid = get_order(app, order.public_id)
    assert (paid.status, paid.amount_total, paid.currency, paid.review_reason) == ("paid", 2400, "usd", None)
    assert (paid.presentment_amount, paid.presentment_currency) == (2208, "eur")
    session = json.loads(stripe_sdk(app).v1.checkout.sessions.retrieve(order.stripe_session_id).last_response.body)
    assert (session["amount_total"], session["currency"]) == (2400, "usd")
    assert session["presentment_details"] == {"presentment_amount": 2208, "presentment_currency": "eur"}

    detail = app.test_client().get(f"/admin/orders/{order.public_id}", auth=("operator", "a-long-password"))
    assert "(the customer paid €22.08: Stripe's Adaptive Pricing" in detail.get_data(as_text=True)


def test_the_charge_carries_the_customers_currency_too(adaptive_app):
    app, shopper = adaptive_app, ShopClient(adaptive_app)
    order = shopper.start({"enamel-mug": 2})
    pay(shopper, order.checkout_url)
    stripe_emulator.tick(app)
    sdk = stripe_sdk(app)
    sdk.v1.refunds.create(params={"payment_intent": get_order(app, order.public_id).payment_intent_id, "amount": 100})

    refunded = json.loads(sdk.v1.events.list(params={"type": "charge.refunded"}).last_response.body)["data"][0]
    charge = refunded["data"]["object"]
    assert (charge["amount"], charge["currency"]) == (4800, "usd")
    assert charge["presentment_details"] == {"presentment_amount": 4416, "presentment_currency": "eur"}


@pytest.mark.parametrize("adaptive_app", ["jpy:150"], indirect=True)
def test_a_zero_decimal_currency_is_counted_in_whole_units(adaptive_app):
    app, shopper = adaptive_app, ShopClient(adaptive_app)
    order = shopper.start({"enamel-mug": 1})
    pay(shopper, order.checkout_url)
    stripe_emulator.tick(app)
    paid = get_order(app, order.public_id)
    assert (paid.status, paid.presentment_amount, paid.presentment_currency) == ("paid", 3600, "jpy")  # ¥3,600


@pytest.mark.parametrize("adaptive_app", ["usd:1.5"], indirect=True)
def test_a_customer_in_the_shops_own_currency_sees_no_conversion(adaptive_app):
    app, shopper = adaptive_app, ShopClient(adaptive_app)
    order = shopper.start({"enamel-mug": 1})
    pay(shopper, order.checkout_url)
    stripe_emulator.tick(app)
    paid = get_order(app, order.public_id)
    assert (paid.status, paid.presentment_amount, paid.presentment_currency) == ("paid", None, None)


@pytest.mark.parametrize("setting", ["eur", "eur:0", "euro:1", "eur:x"])
def test_a_malformed_setting_stops_the_app(setting, tmp_path):
    with pytest.raises(ValueError, match="STRIPE_EMULATOR_ADAPTIVE_PRICING must look like eur:0.92"):
        create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.sqlite",
                    "STRIPE_EMULATOR_ADAPTIVE_PRICING": setting})
