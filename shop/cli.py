"""Operator commands: `flask --app wsgi seed | orders list | stripe sync | stripe check`."""
from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from . import webhook_check
from .catalog.products import CATALOG
from .extensions import db
from .models import Order, Product
from .money import format_money
from .recovery import sync_with_stripe


def seed_products() -> int:
    """Insert or update the catalogue's products by slug, keeping live stock levels.

    Returns how many rows changed.
    """
    changed = 0
    for row in CATALOG:
        product = db.session.scalar(select(Product).where(Product.slug == row["slug"]))
        if product is None:
            db.session.add(Product(**row))
            changed += 1
            continue
        for key, value in row.items():
            if key != "stock" and getattr(product, key) != value:
                setattr(product, key, value)
                changed += 1
    db.session.commit()
    return changed


def init_app(app: Flask) -> None:
    @app.cli.command("seed")
    def seed() -> None:
        """Create or update the three products (idempotent; the release phase runs it)."""
        click.echo(f"Catalogue seeded ({seed_products()} change(s)).")

    # AppGroup: the commands run in an app context however they are invoked (e.g. test_cli_runner).
    orders_cli = AppGroup("orders", help="Inspect orders.")
    stripe_cli = AppGroup("stripe", help="Reconcile with Stripe.")

    @orders_cli.command("list")
    @click.option("--status", help="Only orders in this status.")
    @click.option("--limit", default=50, show_default=True, help="How many, newest first.")
    def list_orders(status: str | None, limit: int) -> None:
        """List recent orders with their status and total."""
        query = select(Order).options(selectinload(Order.items)).order_by(Order.created_at.desc()).limit(limit)
        if status:
            query = query.where(Order.status == status)
        for order in db.session.scalars(query):
            items = ", ".join(f"{item.quantity}× {item.product_name}" for item in order.items)
            review = f"  REVIEW: {order.review_reason}" if order.review_reason else ""
            click.echo(
                f"{order.created_at:%Y-%m-%d %H:%M} {order.public_id} {order.status:<18} "
                f"{format_money(order.amount_total, order.currency):>10}  {items}{review}"
            )

    @stripe_cli.command("sync")
    def sync() -> None:
        """Fetch recent Stripe events and apply any the webhook missed; expire stale orders.

        Goes on past an event that fails, or a payment or stale order Stripe can't be asked
        about, lists every failure, and then exits with status 1.
        """
        report = sync_with_stripe()
        for line in report.outcomes:
            click.echo(line)
        for line in report.beyond_history + report.overdue_waiting + report.stale_settled:
            click.echo(line)
        for failure in report.failed:
            click.echo(f"FAILED {failure.event_id} {failure.event_type}: {failure.error}", err=True)
        for line in report.lookup_failed + report.stale_failed:
            click.echo(f"FAILED {line}", err=True)
        click.echo(report.summary())
        if report.failed or report.lookup_failed or report.stale_failed:
            raise SystemExit(1)

    @stripe_cli.command("check")
    @click.option("--url", "shop_url", help="The shop's public address (default: SHOP_URL).")
    def check(shop_url: str | None) -> None:
        """Check that Stripe sends this shop every event it handles: one line per finding.

        Exits with status 1 when a finding would lose events, 2 when the shop's address is unknown.
        """
        shop_url = shop_url or webhook_check.configured_shop_url()
        if not shop_url:
            click.echo("The shop's public address is unknown: set SHOP_URL or pass --url https://…", err=True)
            raise SystemExit(2)
        click.echo(f"Webhook endpoint expected at {webhook_check.webhook_url(shop_url)}")
        findings = webhook_check.check(shop_url)
        for finding in findings:
            click.echo(finding.line)
        if not all(finding.ok for finding in findings):
            click.echo("Something above would lose events: fix it in the Stripe Dashboard (Developers → Webhooks).", err=True)
            raise SystemExit(1)

    app.cli.add_command(orders_cli)
    app.cli.add_command(stripe_cli)
