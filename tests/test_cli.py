"""Operator commands: `flask --app wsgi seed | orders list | stripe sync`."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from shop.extensions import db
from shop.models import Order, Product
from tests.helpers import count, post_event, session_event


@pytest.mark.parametrize(
    "command, summary",
    [
        (["seed"], "Create or update the three products"),
        (["orders", "list"], "List recent orders"),
        (["stripe", "sync"], "Fetch recent Stripe events"),
        (["orders"], "Inspect orders."),
        (["stripe"], "Reconcile with Stripe."),
    ],
)
def test_every_command_has_help(app, command: list[str], summary: str) -> None:
    result = app.test_cli_runner().invoke(args=[*command, "--help"])
    assert result.exit_code == 0, result.output
    assert summary in result.output


def test_seed_is_idempotent(app) -> None:
    runner = app.test_cli_runner()
    before = count(app, Product)
    again = runner.invoke(args=["seed"])
    assert again.exit_code == 0, again.output
    assert again.output.strip() == "Catalogue seeded (0 change(s))."
    assert count(app, Product) == before == 3


def test_seed_restores_a_changed_product(app) -> None:
    with app.app_context():
        product = db.session.scalar(select(Product).order_by(Product.id))
        original = product.unit_amount
        product.unit_amount = original + 1
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["seed"])
    assert result.output.strip() == "Catalogue seeded (1 change(s))."
    with app.app_context():
        assert db.session.scalar(select(Product.unit_amount).order_by(Product.id).limit(1)) == original


def test_orders_list_prints_orders_newest_first(app, shop) -> None:
    mugs = shop.start({"enamel-mug": 2})
    tote = shop.start({"canvas-tote": 1})
    post_event(app, session_event(mugs, "checkout.session.completed"))

    result = app.test_cli_runner().invoke(args=["orders", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert tote.public_id in lines[0] and "awaiting_payment" in lines[0] and "1× Canvas Tote" in lines[0]
    assert mugs.public_id in lines[1] and "paid" in lines[1] and "$48.00" in lines[1] and "2× Enamel Mug" in lines[1]

    only_paid = app.test_cli_runner().invoke(args=["orders", "list", "--status", "paid"])
    assert only_paid.output.splitlines() == [lines[1]]


def test_orders_list_shows_orders_needing_review(app, shop) -> None:
    order = shop.start({"enamel-mug": 1})
    post_event(app, session_event(order, "checkout.session.completed", amount_total=1))
    output = app.test_cli_runner().invoke(args=["orders", "list"]).output
    assert "REVIEW: Stripe reports 1 usd" in output


def test_stripe_sync_reports_what_it_did(app, shop) -> None:
    shop.start({"enamel-mug": 1})
    result = app.test_cli_runner().invoke(args=["stripe", "sync"])
    assert result.exit_code == 0, result.output
    assert "0 stale pending order(s) expired." in result.output
    with app.app_context():
        assert db.session.scalar(select(Order.status)) == "awaiting_payment"
