"""The hosted Checkout page: test cards, field errors, delayed payments, closed sessions."""
from __future__ import annotations

import time

import pytest

from shop import stripe_emulator

from .conftest import CARD, page_path, pay, session_params


@pytest.fixture
def session(stripe_client):
    return stripe_client.v1.checkout.sessions.create(params=session_params(customer_email="ada@example.com"))


def test_page_shows_the_order(browser, session):
    page = browser.get(page_path(session.url))
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert '<html lang="en">' in html and "<title>" in html
    assert "Test mode" in html and "Simulated by the shop's offline Stripe emulator" in html
    for text in ("Mug", "Blue, 350 ml", "Sticker", "$30.00", "$25.00", 'value="ada@example.com"'):
        assert text in html
    for label in ("Email", "Card number", "Expiry", "CVC", "Card", "Bank transfer (delayed)",
                  "Bank transfer (delayed, will fail)"):
        assert f">{label}</label>" in html or f"> {label}</label>" in html
    assert '<span class="merchant-name">Fieldwork Supply</span>' in html  # the business, as Stripe names it
    assert ">Back to Fieldwork Supply</span></a>" in html
    assert 'href="https://shop.test/checkout/cancel"' in html
    assert "<button type=\"submit\">Pay $30.00</button>" in html


@pytest.mark.parametrize(
    ("card", "status", "message"),
    [
        ("4000 0000 0000 0002", 402, "Your card was declined."),
        ("4000 0000 0000 9995", 402, "Your card has insufficient funds."),
        ("1234 5678 9012 3456", 422, "Your card number is incorrect."),
    ],
)
def test_failing_cards_then_success(browser, stripe_client, webhooks, emulator_app, session, card, status, message):
    failed = pay(browser, session, card=card)
    html = failed.get_data(as_text=True)
    assert failed.status_code == status
    assert 'role="alert"' in html and message in html
    assert stripe_client.v1.checkout.sessions.retrieve(session.id).status == "open"

    done = pay(browser, session)
    assert done.status_code == 303
    assert done.headers["Location"] == f"https://shop.test/checkout/success?session_id={session.id}"
    paid = stripe_client.v1.checkout.sessions.retrieve(session.id)
    assert (paid.status, paid.payment_status, paid.url) == ("complete", "paid", None)
    assert paid.payment_intent.startswith("pi_")
    assert paid.customer_details.email == "ada@example.com"
    assert paid.customer_details.tax_exempt == "none"
    events = stripe_client.v1.events.list().data
    assert [event.type for event in events] == ["checkout.session.completed"]
    assert events[0].data.object.payment_status == "paid"
    stripe_emulator.tick(emulator_app)
    assert webhooks.types == ["checkout.session.completed"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("email", "", "Enter your email address."),
        ("email", "nope", "Enter a valid email address."),
        ("card", "", "Enter your card number."),
        ("expiry", "", "Enter your card&#39;s expiration date."),
        ("expiry", "01 / 20", "expiration year is in the past"),
        ("cvc", "", "Enter your card&#39;s security code."),
    ],
)
def test_field_errors(browser, stripe_client, session, field, value, message):
    response = pay(browser, session, **{field: value})
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert 'role="alert"' in html and message in html
    assert html.count(message) == 1  # said once, under its field
    assert 'aria-invalid="true"' in html
    assert stripe_client.v1.checkout.sessions.retrieve(session.id).status == "open"


def test_delayed_payment_succeeds_later(browser, stripe_client, emulator_app, webhooks, session):
    response = pay(browser, session, method="bank_transfer", card="", expiry="", cvc="")
    assert response.status_code == 303
    pending = stripe_client.v1.checkout.sessions.retrieve(session.id)
    assert (pending.status, pending.payment_status) == ("complete", "unpaid")

    stripe_emulator.tick(emulator_app)  # not yet due
    assert stripe_client.v1.checkout.sessions.retrieve(session.id).payment_status == "unpaid"
    stripe_emulator.tick(emulator_app, now=time.time() + 6)
    assert stripe_client.v1.checkout.sessions.retrieve(session.id).payment_status == "paid"
    assert webhooks.types == ["checkout.session.completed", "checkout.session.async_payment_succeeded"]
    stripe_emulator.tick(emulator_app, now=time.time() + 60)
    assert len(webhooks.calls) == 2


def test_delayed_payment_fails_later(browser, stripe_client, emulator_app, webhooks, session):
    assert pay(browser, session, method="bank_transfer_fail", card="").status_code == 303
    stripe_emulator.tick(emulator_app, now=time.time() + 6)
    failed = stripe_client.v1.checkout.sessions.retrieve(session.id)
    assert (failed.status, failed.payment_status) == ("complete", "unpaid")
    assert webhooks.types == ["checkout.session.completed", "checkout.session.async_payment_failed"]


def test_expiry_by_tick(browser, stripe_client, emulator_app, webhooks, session):
    stripe_emulator.tick(emulator_app, now=time.time() + 3601)
    expired = stripe_client.v1.checkout.sessions.retrieve(session.id)
    assert (expired.status, expired.url) == ("expired", None)
    assert webhooks.types == ["checkout.session.expired"]

    page = browser.get(page_path(session.url))
    assert "This checkout has expired" in page.get_data(as_text=True)
    refused = pay(browser, session)
    assert refused.status_code == 409
    assert stripe_client.v1.checkout.sessions.retrieve(session.id).payment_intent is None


def test_completed_session_cannot_be_paid_again(browser, stripe_client, session):
    assert pay(browser, session).status_code == 303
    again = pay(browser, session)
    assert again.status_code == 409
    html = again.get_data(as_text=True)
    assert "already complete" in html and f"session_id={session.id}" in html
    assert len(stripe_client.v1.events.list().data) == 1


def test_concurrent_pay_clicks_complete_once(emulator_app, stripe_client, session):
    """Two Pay clicks racing (threads, separate connections) complete the session once."""
    import threading

    results: list[int] = []

    def click() -> None:
        results.append(emulator_app.test_client().post(page_path(session.url), data=CARD).status_code)

    threads = [threading.Thread(target=click) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [303, 409, 409, 409]
    assert len(stripe_client.v1.events.list().data) == 1


def test_unknown_session_page(browser):
    page = browser.get("/_stripe/pay/cs_test_nope")
    assert page.status_code == 404
    assert "Checkout not found" in page.get_data(as_text=True)
