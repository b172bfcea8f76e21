"""Recovery no single event can stop: a failing event is recorded, reported and retried,
and everything after it is still applied."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from shop import orders, stripe_emulator
from shop.extensions import db
from shop.models import StripeEvent
from tests.conftest import seeded_app
from tests.helpers import ShopClient, event_state, get_order, patch_order_handler, pay, post_event, session_event


@pytest.fixture
def lossy_app(database_url: str):
    with seeded_app(database_url, STRIPE_EMULATOR_DROP=1) as app:
        yield app


def poison(monkeypatch: pytest.MonkeyPatch, session_id: str) -> None:
    """Handling any event of this Checkout Session raises, as a bug or bad data would."""
    real = orders.apply_session_event

    def failing(event_type, session):
        if session["id"] == session_id:
            raise ValueError(f"cannot handle {session_id}")
        return real(event_type, session)

    patch_order_handler(monkeypatch, "apply_session_event", failing)


def failed_events(app) -> list[tuple[str, str | None, int]]:
    with app.app_context():
        rows = db.session.execute(
            select(StripeEvent.type, StripeEvent.error, StripeEvent.failures).where(StripeEvent.state == "failed")
        ).all()
        return [tuple(row) for row in rows]


def test_sync_goes_past_a_failing_event_records_it_and_applies_it_once_fixed(lossy_app, monkeypatch):
    app = lossy_app
    shoppers = [ShopClient(app) for _ in range(3)]
    first, broken, last = placed = [shopper.start({"enamel-mug": 1}) for shopper in shoppers]
    for shopper, order in zip(shoppers, placed, strict=True):
        pay(shopper, order.checkout_url)
    stripe_emulator.tick(app)  # every delivery is lost: only sync can find them
    poison(monkeypatch, broken.stripe_session_id)

    result = app.test_cli_runner().invoke(args=["stripe", "sync"])

    assert result.exit_code == 1, result.output
    assert f"cannot handle {broken.stripe_session_id}" in result.output and "FAILED evt_" in result.output
    assert "2 applied" in result.output and "1 failed" in result.output
    assert [get_order(app, order.public_id).status for order in placed] == ["paid", "awaiting_payment", "paid"]
    assert failed_events(app) == [
        ("checkout.session.completed", f"ValueError: cannot handle {broken.stripe_session_id}", 1)
    ]

    again = app.test_cli_runner().invoke(args=["stripe", "sync"])  # still broken: reported again, counted
    assert again.exit_code == 1
    assert failed_events(app)[0][2] == 2

    monkeypatch.undo()
    fixed = app.test_cli_runner().invoke(args=["stripe", "sync"])

    assert fixed.exit_code == 0, fixed.output
    assert "1 applied" in fixed.output and "0 failed" in fixed.output
    assert [get_order(app, order.public_id).status for order in placed] == ["paid", "paid", "paid"]
    assert failed_events(app) == []


def test_a_failing_webhook_delivery_is_recorded_with_its_error(app, shop, monkeypatch):
    order = shop.start({"canvas-tote": 1})
    event = session_event(order, "checkout.session.completed")
    poison(monkeypatch, order.stripe_session_id)
    app.config["PROPAGATE_EXCEPTIONS"] = False

    assert post_event(app, event).status_code == 500
    assert post_event(app, event).status_code == 500

    assert event_state(app, event["id"]) == ("failed", None, None)
    assert failed_events(app) == [("checkout.session.completed", f"ValueError: cannot handle {order.stripe_session_id}", 2)]
    monkeypatch.undo()
    assert post_event(app, event).status_code == 200
    assert get_order(app, order.public_id).status == "paid"
    assert event_state(app, event["id"])[0] == "applied"


def test_an_email_longer_than_any_column_limit_is_stored(app, shop):
    """Stripe's email fields have no 320-character limit the database could enforce."""
    order = shop.start({"canvas-tote": 1})
    email = "a" * 400 + "@example.com"
    event = session_event(order, "checkout.session.completed", customer_details={"email": email})

    assert post_event(app, event).status_code == 200

    paid = get_order(app, order.public_id)
    assert (paid.status, paid.customer_email) == ("paid", email)
