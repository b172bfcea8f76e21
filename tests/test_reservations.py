"""Bounded reservations: one open checkout per browser, and a share of stock per client address.

The suite's testing config lets one client hold any share (other tests make many checkouts
from one browser); the share tests here switch the production default (20 %) on.
"""
from __future__ import annotations

import logging
import threading
import time

import pytest
from flask import Flask
from sqlalchemy import select

from config import Config
from shop import reservations, stripe_emulator, stripe_gateway
from shop.extensions import db
from shop.models import Order, Product
from tests.conftest import seeded_app
from tests.helpers import ShopClient, get_order, pay, record_stripe_calls

MAX_CART = {"field-notebook": 10, "enamel-mug": 10, "canvas-tote": 10}


class Browser(ShopClient):
    """A shopper's browser behind the given address, as the platform's router reports it."""

    def __init__(self, app: Flask, address: str) -> None:
        super().__init__(app)
        self.http.environ_base["HTTP_X_FORWARDED_FOR"] = address


def stock(app: Flask) -> dict[str, int]:
    with app.app_context():
        return dict(db.session.execute(select(Product.slug, Product.stock)).all())


def open_orders(app: Flask, shopper_id: str) -> list[str]:
    with app.app_context():
        return list(
            db.session.scalars(
                select(Order.public_id).where(
                    Order.shopper_id == shopper_id, Order.status.in_(reservations.UNPAID_HOLDS)
                )
            )
        )


# --- One open checkout per browser ------------------------------------------------------------


def test_a_second_checkout_expires_the_first_and_leaves_one_open_reservation(app, shop):
    first = shop.start({"enamel-mug": 2})
    second = shop.start({"canvas-tote": 1})

    # Stripe was asked to expire the first session; its units come back with Stripe's event, not before.
    assert get_order(app, first.public_id).status == "awaiting_payment"
    assert stock(app)["enamel-mug"] == 98
    assert stripe_emulator.tick(app) >= 1
    assert get_order(app, first.public_id).status == "expired"
    assert get_order(app, second.public_id).status == "awaiting_payment"
    assert stock(app) == {"field-notebook": 100, "enamel-mug": 100, "canvas-tote": 99}
    assert open_orders(app, second.shopper_id) == [second.public_id]

    # The expired session can no longer be paid; the new one can.
    pay(shop, first.checkout_url)
    pay(shop, second.checkout_url)
    stripe_emulator.tick(app)
    assert [get_order(app, o.public_id).status for o in (first, second)] == ["expired", "paid"]


def test_another_browser_keeps_its_checkout(app, shop):
    theirs = ShopClient(app).start({"enamel-mug": 1})
    shop.start({"enamel-mug": 1})
    shop.start({"enamel-mug": 1})
    stripe_emulator.tick(app)
    assert get_order(app, theirs.public_id).status == "awaiting_payment"


def test_resubmitting_the_same_form_keeps_its_session_open(app, shop):
    fields = shop.form_fields()
    recorder = record_stripe_calls(app)
    first = shop.checkout({"enamel-mug": 1}, fields=fields)
    again = shop.checkout({"enamel-mug": 1}, fields=fields)
    assert first.headers["Location"] == again.headers["Location"]
    assert recorder.posts_to("/expire") == []
    assert get_order(app, shop.start({"canvas-tote": 1}).public_id).status == "awaiting_payment"
    assert len(recorder.posts_to("/expire")) == 1  # the newer order expires the earlier one, once


def test_each_superseded_session_is_expired_once(app, shop):
    recorder = record_stripe_calls(app)
    for _ in range(4):
        shop.start({"enamel-mug": 1})
    expired = [request[1] for request in recorder.posts_to("/expire")]
    assert len(expired) == len(set(expired)) == 3


def test_stripe_unreachable_while_superseding_still_starts_the_new_checkout(app, shop, monkeypatch, caplog):
    first = shop.start({"enamel-mug": 1})

    def unreachable(session_id: str):
        raise stripe_gateway.PaymentProviderError("connection refused")

    monkeypatch.setattr(stripe_gateway, "expire_checkout_session", unreachable)
    logger = logging.getLogger("shop.reservations")
    logger.addHandler(caplog.handler)
    try:
        second = shop.start({"canvas-tote": 1})
    finally:
        logger.removeHandler(caplog.handler)
    assert second.status == "awaiting_payment"
    assert f"could not expire superseded session {first.stripe_session_id} (it expires on its own)" in caplog.text
    # The first session still ends with Stripe's own expiry, at its expires_at.
    with app.app_context():
        expires_at = stripe_gateway.session_expires_at(db.session.get(Order, first.id)).timestamp()
    stripe_emulator.tick(app, now=expires_at + 60)
    assert get_order(app, first.public_id).status == "expired"


# --- A share of stock per client address -------------------------------------------------------


@pytest.fixture
def shared_app(database_url: str):
    with seeded_app(database_url, CHECKOUT_STOCK_SHARE=Config.CHECKOUT_STOCK_SHARE) as app:
        yield app


def test_the_default_share_is_a_fifth_and_always_one_full_cart() -> None:
    assert Config.CHECKOUT_STOCK_SHARE == "0.2"  # read by config.check_settings
    assert reservations.share_bound(in_stock=100, held=0, share=0.2, full_cart=10) == 20
    assert reservations.share_bound(in_stock=80, held=20, share=0.2, full_cart=10) == 20
    assert reservations.share_bound(in_stock=12, held=0, share=0.2, full_cart=10) == 10


def test_one_address_holds_at_most_its_share_even_with_fresh_cookies(shared_app):
    address = "203.0.113.20"
    answers = [Browser(shared_app, address).checkout(MAX_CART) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [303, 303, 409, 409]
    page = answers[2].get_data(as_text=True)
    assert "one shopper can hold at most 20 × Field Notebook in unpaid checkouts at a time" in page
    assert "and 20 are already waiting for payment from your connection" in page
    assert stock(shared_app) == {"field-notebook": 80, "enamel-mug": 80, "canvas-tote": 80}

    # Another address is not affected.
    assert Browser(shared_app, "198.51.100.20").checkout(MAX_CART).status_code == 303


def test_concurrent_checkouts_from_one_address_never_pass_the_share(shared_app):
    address = "203.0.113.30"
    browsers = [Browser(shared_app, address) for _ in range(6)]
    forms = [browser.form_fields() for browser in browsers]
    barrier = threading.Barrier(len(browsers))
    answers: list[int] = []

    def buy(browser: Browser, fields: dict[str, str]) -> None:
        barrier.wait()
        answers.append(browser.checkout({"enamel-mug": 10}, fields=fields).status_code)

    threads = [threading.Thread(target=buy, args=pair) for pair in zip(browsers, forms, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(answers) == [303, 303, 409, 409, 409, 409]
    assert stock(shared_app)["enamel-mug"] == 80


def test_units_released_by_the_address_can_be_reserved_again(shared_app):
    address = "203.0.113.40"
    first, second = Browser(shared_app, address), Browser(shared_app, address)
    held = [first.start({"enamel-mug": 10}), second.start({"enamel-mug": 10})]
    assert Browser(shared_app, address).checkout({"enamel-mug": 1}).status_code == 409

    pay(first, held[0].checkout_url)  # paid units are bought, not held
    second.http.get(f"/checkout/cancel?order={held[1].public_id}")  # cancelled units are let go
    stripe_emulator.tick(shared_app)
    assert [get_order(shared_app, o.public_id).status for o in held] == ["paid", "cancelled"]
    assert Browser(shared_app, address).checkout({"enamel-mug": 10}).status_code == 303


def test_addresses_rotating_inside_one_ipv6_64_hold_one_share(shared_app):
    answers = [Browser(shared_app, f"2001:db8:1:2::{n:x}").checkout(MAX_CART) for n in range(1, 11)]
    assert [answer.status_code for answer in answers] == [303, 303] + [409] * 8
    assert stock(shared_app) == {"field-notebook": 80, "enamel-mug": 80, "canvas-tote": 80}
    # Another /64 is another client; an IPv4 address still counts alone.
    assert Browser(shared_app, "2001:db8:1:3::1").checkout(MAX_CART).status_code == 303
    assert Browser(shared_app, "198.51.100.21").checkout(MAX_CART).status_code == 303


# --- Delayed payments still hold stock ------------------------------------------------------------


def test_delayed_payments_still_processing_count_toward_the_share(shared_app):
    address = "203.0.113.50"
    for _ in range(2):
        browser = Browser(shared_app, address)
        order = browser.start(MAX_CART)
        pay(browser, order.checkout_url, method="bank_transfer")  # completes unpaid: days, for a real transfer
    stripe_emulator.tick(shared_app)
    with shared_app.app_context():
        statuses = db.session.scalars(select(Order.status)).all()
    assert statuses == ["processing", "processing"]

    refused = Browser(shared_app, address).checkout(MAX_CART)
    assert refused.status_code == 409
    assert "and 20 are already waiting for payment from your connection" in refused.get_data(as_text=True)
    assert stock(shared_app) == {"field-notebook": 80, "enamel-mug": 80, "canvas-tote": 80}


def test_a_browser_with_a_bank_transfer_still_processing_is_told_before_a_second_checkout(app, shop):
    order = shop.start({"enamel-mug": 1})
    pay(shop, order.checkout_url, method="bank_transfer")
    stripe_emulator.tick(app)
    assert get_order(app, order.public_id).status == "processing"

    refused = shop.checkout({"canvas-tote": 1})
    assert refused.status_code == 409
    page = refused.get_data(as_text=True)
    assert "A payment is still in progress" in page
    assert f"Your bank transfer for order {order.public_id} is still being confirmed" in page
    assert "Nothing was charged for this one." in page
    assert stock(app)["canvas-tote"] == 100

    # Once the transfer clears, the browser buys again.
    stripe_emulator.tick(app, now=time.time() + 10)
    assert get_order(app, order.public_id).status == "paid"
    assert shop.checkout({"canvas-tote": 1}).status_code == 303


# --- Two tabs, one payable checkout ---------------------------------------------------------------


def payable_sessions(app: Flask, public_ids: list[str]) -> list[str]:
    """Of these orders, the ones whose Checkout Session Stripe would still take a payment on."""
    with app.app_context():
        session_ids = db.session.scalars(select(Order.stripe_session_id).where(Order.public_id.in_(public_ids))).all()
        return [sid for sid in session_ids if sid and stripe_gateway.retrieve_checkout_session(sid)["status"] == "open"]


@pytest.mark.postgres_only
def test_two_tabs_submitting_at_once_end_with_exactly_one_payable_session(app):
    for _ in range(6):
        first_tab = ShopClient(app)
        first_form = first_tab.form_fields()
        second_tab = ShopClient(app)  # the same browser: its session cookie
        second_tab.http.set_cookie("session", first_tab.http.get_cookie("session").value)
        second_form = second_tab.form_fields()
        barrier = threading.Barrier(2)
        answers: list[int] = []

        def submit(tab: ShopClient, fields: dict[str, str], barrier: threading.Barrier, answers: list[int]) -> None:
            barrier.wait()
            answers.append(tab.checkout({"enamel-mug": 1}, fields=fields).status_code)

        threads = [
            threading.Thread(target=submit, args=(tab, form, barrier, answers))
            for tab, form in ((first_tab, first_form), (second_tab, second_form))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(answers) in ([303, 303], [303, 409]), answers
        stripe_emulator.tick(app)
        with app.app_context():
            ids = db.session.scalars(
                select(Order.public_id).where(Order.checkout_token.in_([first_form["checkout_token"], second_form["checkout_token"]]))
                .order_by(Order.id)
            ).all()
        assert len(ids) == 2
        assert payable_sessions(app, ids) == [get_order(app, ids[1]).stripe_session_id]  # the newer one
        assert [get_order(app, public_id).status for public_id in ids] == ["expired", "awaiting_payment"]


# --- Saying what is true ----------------------------------------------------------------------


def test_a_superseded_checkout_is_not_offered_and_its_form_does_not_lead_to_it(app, shop):
    first_form = shop.form_fields()
    first = shop.checkout({"enamel-mug": 1}, fields=first_form)
    assert first.status_code == 303
    newer = shop.start({"canvas-tote": 1})

    # Before Stripe's expired event arrives: one payable order, the newer.
    page = shop.http.get("/").get_data(as_text=True)
    assert page.count("Continue to payment") == 1
    assert newer.checkout_url in page and first.headers["Location"] not in page
    again = shop.checkout({"enamel-mug": 1}, fields=first_form)
    assert again.status_code == 409
    assert "You started a newer checkout in this browser, so we asked Stripe to close this one." in again.get_data(as_text=True)


def test_the_log_says_when_stripe_refused_to_expire_a_superseded_session(app, shop, caplog):
    first = shop.start({"enamel-mug": 1})
    pay(shop, first.checkout_url)  # paid at Stripe; its webhook has not arrived yet
    logger = logging.getLogger("shop.reservations")
    logger.addHandler(caplog.handler)
    try:
        shop.start({"canvas-tote": 1})
    finally:
        logger.removeHandler(caplog.handler)
    assert f"superseded session {first.stripe_session_id} was not expired: Stripe says it is complete, payment paid" in caplog.text
    assert f"expired session {first.stripe_session_id}" not in caplog.text
    stripe_emulator.tick(app)
    assert get_order(app, first.public_id).status == "paid"
