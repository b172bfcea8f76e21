"""Every page a shopper or operator sees, in each state it can be in: one line per page-state.

`PAGE_STATES` is what `test_page_states.py` runs its class checks on. A new page, or a new
state of one, is one more `PageState(name, heading, reach)` line: `reach` gets a `Visit` (a
fresh browser context of its own on the shared server, so its own shopper and orders) and
leaves its page showing the state; `heading` is the visible h1 that proves it got there.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask
from playwright.sync_api import BrowserContext, Page, expect
from sqlalchemy import select

from shop import orders, stripe_emulator
from shop.extensions import db
from shop.models import Order, Product
from tests.browser.conftest import (
    DECLINED_CARD,
    GOOD_CARD,
    WEBHOOK_TIMEOUT,
    LiveShop,
    fill_shipping_address,
    order_over_http,
)
from tests.helpers import CSRF_FIELD, TOKEN_FIELD, dispute_event, post_event, refund_event

OPERATOR = ("operator", "a-long-operator-password")
# The shared server's bank transfers settle only when a page-state moves the emulator's clock on.
ASYNC_DELAY = 600


@dataclass
class Visit:
    """One browser context on the shared server, and what page-states need to set themselves up."""

    shop: LiveShop
    context: BrowserContext
    page: Page
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def app(self) -> Flask:
        return self.shop.app

    def goto(self, path: str, status: int = 200) -> None:
        response = self.page.goto(self.shop.url + path)
        assert response is not None and response.status == status, f"{path}: {response and response.status}"

    def order(self, quantities: dict[str, int], pay_with: str | None = None, method: str = "card") -> str:
        """Check out over HTTP with this context's cookies (paying if asked); the session id.
        A bank transfer (`method`) needs no card: it is paid as soon as it is chosen."""
        paying = pay_with or (GOOD_CARD if method != "card" else None)
        return order_over_http(self.context, self.shop.url, quantities, pay_with=paying, method=method).rsplit("/", 1)[1]

    def wait_for(self, session_id: str, status: str) -> Order:
        """Until the order of this session has reached status (through Stripe's webhook)."""
        deadline = time.monotonic() + WEBHOOK_TIMEOUT / 1000
        while True:
            with self.app.app_context():
                order = db.session.scalar(select(Order).where(Order.stripe_session_id == session_id))
                db.session.expunge_all()
                db.session.remove()
            if order.status == status or time.monotonic() > deadline:
                assert order.status == status, f"order of {session_id} is {order.status}, not {status}"
                return order
            time.sleep(0.1)

    def success(self, session_id: str) -> None:
        self.goto(f"/checkout/success?session_id={session_id}")

    def settle_bank_transfers(self) -> None:
        """Move the emulator's clock past the delay, as if the transfers cleared (or bounced)."""
        later = time.time() + ASYNC_DELAY + 1
        stripe_emulator.tick(self.app, now=later)  # settles them: the event is queued
        stripe_emulator.tick(self.app, now=later + 1)  # and sent

    def expire_at_stripe(self, session_id: str) -> None:
        """Expire the session through the API, as Stripe does when its window closes."""
        response = self.context.request.post(
            f"{self.shop.url}/_stripe/v1/checkout/sessions/{session_id}/expire",
            headers={"Authorization": "Bearer sk_test_page_states"},
        )
        assert response.status == 200, response.text()

    def stripe_down_for_next_checkout(self) -> None:
        self.app.extensions["stripe_emulator"].failures.add("POST", "/v1/checkout/sessions")

    def set_stock(self, **stock: int) -> None:
        """Set stock levels for this page-state; the old levels come back afterwards."""
        old = self._write_stock(stock)
        self.cleanups.append(lambda: self._write_stock(old))

    def _write_stock(self, stock: dict[str, int]) -> dict[str, int]:
        with self.app.app_context():
            products = {product.slug: product for product in db.session.scalars(select(Product))}
            old = {slug: products[slug.replace("_", "-")].stock for slug in stock}
            for slug, level in stock.items():
                products[slug.replace("_", "-")].stock = level
            db.session.commit()
            db.session.remove()
        return old

    def flag_for_review(self, session_id: str, reason: str) -> str:
        with self.app.app_context():
            order = db.session.scalar(select(Order).where(Order.stripe_session_id == session_id))
            orders.flag_for_review(order, reason)
            db.session.commit()
            public_id = order.public_id
            db.session.remove()
        return public_id

    def dispute(self, order: Order) -> None:
        """The card's bank opens a chargeback on the order's payment."""
        event = dispute_event("charge.dispute.created", "dp_" + order.public_id[4:], order.payment_intent_id,
                              "needs_response", int(time.time()), amount=order.amount_total)
        assert post_event(self.app, event).status_code == 200

    def refund_waiting_for_its_payment(self) -> None:
        """A charge.refunded that arrived before its payment (Stripe promises no order)."""
        assert post_event(self.app, refund_event("pi_" + "3Qw8Zk2eZvKYlo2C1a2b3c4d", 1800, 1800)).status_code == 200


# --- How each state is reached --------------------------------------------------------------

def home_with_orders(visit: Visit) -> None:
    visit.order({"field-notebook": 1}, pay_with=GOOD_CARD)
    paid = visit.order({"enamel-mug": 2, "canvas-tote": 1}, pay_with=GOOD_CARD)
    visit.order({"canvas-tote": 3})  # left at the payment page: can still be paid
    visit.wait_for(paid, "paid")
    visit.goto("/")


def home_after_stripe_was_unreachable(visit: Visit) -> None:
    visit.stripe_down_for_next_checkout()
    home = visit.context.request.get(visit.shop.url + "/").text()
    form = {"csrf_token": CSRF_FIELD.search(home)[1], "checkout_token": TOKEN_FIELD.search(home)[1], "quantity-enamel-mug": "1"}
    assert visit.context.request.post(visit.shop.url + "/checkout", form=form, max_redirects=0).status == 503
    visit.goto("/")


def buy_while_stripe_is_unreachable(visit: Visit) -> None:
    visit.goto("/")
    visit.stripe_down_for_next_checkout()
    visit.page.locator("#qty-canvas-tote").fill("2")
    visit.page.get_by_role("button", name="Buy").click()
    expect(visit.page.get_by_text("nothing was charged")).to_be_visible()


def home_after_cancel(visit: Visit) -> None:
    visit.goto("/")
    visit.page.locator("#qty-enamel-mug").fill("1")
    visit.page.get_by_role("button", name="Buy").click()
    visit.page.wait_for_url(re.compile(r"/_stripe/pay/"))
    visit.page.get_by_role("link", name=re.compile("Cancel")).click()
    expect(visit.page.get_by_text("Checkout cancelled")).to_be_visible()


def home_low_and_no_stock(visit: Visit) -> None:
    visit.set_stock(canvas_tote=0, field_notebook=3)
    visit.goto("/")


def home_quantity_refused(visit: Visit) -> None:
    visit.goto("/")
    visit.page.locator("#qty-field-notebook").fill("11")
    visit.page.get_by_role("button", name="Buy").click()
    expect(visit.page.get_by_role("alert")).to_have_text("Please fix the quantity marked above.")


def payment_page(visit: Visit) -> None:
    visit.goto("/_stripe/pay/" + visit.order({"enamel-mug": 1, "field-notebook": 2}))


def payment_page_with_field_errors(visit: Visit) -> None:
    payment_page(visit)
    visit.page.get_by_role("button", name=re.compile("^Pay")).click()
    expect(visit.page.locator(".field-error").first).to_be_visible()


def payment_page_declined(visit: Visit) -> None:
    payment_page(visit)
    visit.page.get_by_label("Email").fill("shopper@example.com")
    fill_shipping_address(visit.page)
    visit.page.get_by_label("Card number").fill(DECLINED_CARD)
    visit.page.get_by_label("Expiry").fill("1234")
    visit.page.get_by_label("CVC").fill("123")
    visit.page.get_by_role("button", name=re.compile("^Pay")).click()
    expect(visit.page.get_by_role("alert")).to_have_text("Your card was declined.")


def success_waiting(visit: Visit) -> None:
    visit.success(visit.order({"enamel-mug": 2}))


def success_still_waiting_after_two_minutes(visit: Visit) -> None:
    visit.page.clock.install()
    success_waiting(visit)
    visit.page.clock.fast_forward("02:05")
    visit.page.clock.run_for(4000)
    # The poll that notices the two minutes ends with a real fetch, after the clock has run.
    visit.page.get_by_role("heading", name="Still waiting for confirmation").wait_for()


def success_processing(visit: Visit) -> None:
    session_id = visit.order({"canvas-tote": 1}, method="bank_transfer")
    visit.wait_for(session_id, "processing")
    visit.success(session_id)


def success_paid(visit: Visit) -> None:
    session_id = visit.order({"field-notebook": 2}, pay_with=GOOD_CARD)
    visit.wait_for(session_id, "paid")
    visit.success(session_id)


def success_failed(visit: Visit) -> None:
    session_id = visit.order({"canvas-tote": 1}, method="bank_transfer_fail")
    visit.wait_for(session_id, "processing")
    visit.settle_bank_transfers()
    visit.wait_for(session_id, "failed")
    visit.success(session_id)


def success_expired(visit: Visit) -> None:
    session_id = visit.order({"enamel-mug": 1})
    visit.expire_at_stripe(session_id)
    visit.wait_for(session_id, "expired")
    visit.success(session_id)


def admin_orders(visit: Visit) -> None:
    visit.order({"enamel-mug": 1}, pay_with=GOOD_CARD)
    odd = visit.order({"canvas-tote": 2}, pay_with=GOOD_CARD)
    visit.wait_for(odd, "paid")
    visit.flag_for_review(odd, "amount_total 9900 does not match the order's 6400 usd")
    visit.goto("/admin/")


def admin_order_paid(visit: Visit) -> None:
    session_id = visit.order({"enamel-mug": 1, "field-notebook": 1}, pay_with=GOOD_CARD)
    visit.goto(f"/admin/orders/{visit.wait_for(session_id, 'paid').public_id}")


def admin_order_needs_review(visit: Visit) -> None:
    session_id = visit.order({"canvas-tote": 1}, pay_with=GOOD_CARD)
    visit.wait_for(session_id, "paid")
    public_id = visit.flag_for_review(session_id, "amount_total 9900 does not match the order's 3200 usd")
    visit.goto(f"/admin/orders/{public_id}")


def admin_order_refunded(visit: Visit) -> None:
    session_id = visit.order({"enamel-mug": 2}, pay_with=GOOD_CARD)
    public_id = visit.wait_for(session_id, "paid").public_id
    visit.goto(f"/admin/orders/{public_id}")
    visit.page.locator("input[name=confirm]").check()
    with visit.page.expect_navigation():
        visit.page.get_by_role("button", name="Refund").click()
    visit.wait_for(session_id, "refunded")
    visit.goto(f"/admin/orders/{public_id}")


def admin_order_disputed(visit: Visit) -> None:
    session_id = visit.order({"field-notebook": 1}, pay_with=GOOD_CARD)
    order = visit.wait_for(session_id, "paid")
    visit.dispute(order)
    visit.goto(f"/admin/orders/{order.public_id}")
    expect(visit.page.get_by_text(re.compile("^Disputed"))).to_be_visible()


def admin_orders_with_a_dispute(visit: Visit) -> None:
    session_id = visit.order({"canvas-tote": 1}, pay_with=GOOD_CARD)
    visit.dispute(visit.wait_for(session_id, "paid"))
    visit.goto("/admin/")
    expect(visit.page.get_by_role("heading", name="Needs attention")).to_be_visible()


def admin_to_ship(visit: Visit) -> None:
    visit.wait_for(visit.order({"enamel-mug": 1, "canvas-tote": 1}, pay_with=GOOD_CARD), "paid")
    visit.goto("/admin/to-ship")


def admin_events_waiting(visit: Visit) -> None:
    visit.refund_waiting_for_its_payment()
    visit.goto("/admin/events")


def admin_after_sync(visit: Visit) -> None:
    visit.goto("/admin/")
    visit.page.get_by_role("button", name="Sync with Stripe").click()
    expect(visit.page.get_by_text(re.compile("^Synced with Stripe"))).to_be_visible()


@dataclass(frozen=True)
class PageState:
    """A page in one state: `name` (page-state, as in the screenshots' file names), the h1 it
    shows, how to reach it, and whether it runs with JavaScript and as the operator."""

    name: str
    heading: str
    reach: Callable[[Visit], None]
    javascript: bool = True
    operator: bool = False


SHOP_HEADING = "Three good things"
PAGE_STATES: list[PageState] = [
    PageState("home-empty", SHOP_HEADING, lambda visit: visit.goto("/")),
    PageState("home-orders", SHOP_HEADING, home_with_orders),
    PageState("home-orders-nojs", SHOP_HEADING, home_with_orders, javascript=False),
    PageState("home-cancelled", SHOP_HEADING, home_after_cancel),
    PageState("home-stripe-unreachable", SHOP_HEADING, home_after_stripe_was_unreachable),
    PageState("home-stock", SHOP_HEADING, home_low_and_no_stock),
    PageState("home-refused", SHOP_HEADING, home_quantity_refused),
    PageState("pay-form", "Order summary", payment_page),
    PageState("pay-field-errors", "Order summary", payment_page_with_field_errors),
    PageState("pay-declined", "Order summary", payment_page_declined),
    PageState("success-waiting", "Confirming your payment…", success_waiting),
    PageState("success-waiting-nojs", "Confirming your payment…", success_waiting, javascript=False),
    PageState("success-timeout", "Still waiting for confirmation", success_still_waiting_after_two_minutes),
    PageState("success-processing", "Payment processing", success_processing),
    PageState("success-paid", "Payment received", success_paid),
    PageState("success-failed", "Payment not completed", success_failed),
    PageState("success-expired", "Payment not completed", success_expired),
    PageState("error-404", "We couldn't find that page", lambda visit: visit.goto("/no-such-page", 404)),
    PageState("error-503", "Payment is unavailable right now", buy_while_stripe_is_unreachable),
    PageState("error-400", "That request didn't look right", lambda visit: visit.goto("/checkout/success?session_id=", 400)),
    PageState("admin-orders", "Orders", admin_orders, operator=True),
    PageState("admin-orders-none", "Orders", lambda visit: visit.goto("/admin/?status=refunded&from=2001-01-01&to=2001-01-02"), operator=True),
    PageState("admin-synced", "Orders", admin_after_sync, operator=True),
    PageState("admin-order-paid", "Order ord_", admin_order_paid, operator=True),
    PageState("admin-order-review", "Order ord_", admin_order_needs_review, operator=True),
    PageState("admin-orders-disputed", "Orders", admin_orders_with_a_dispute, operator=True),
    PageState("admin-order-refunded", "Order ord_", admin_order_refunded, operator=True),
    PageState("admin-order-disputed", "Order ord_", admin_order_disputed, operator=True),
    PageState("admin-to-ship", "To ship", admin_to_ship, operator=True),
    PageState("admin-events-waiting", "Stripe events needing attention", admin_events_waiting, operator=True),
    PageState("admin-products", "Products", lambda visit: visit.goto("/admin/products"), operator=True),
    PageState("admin-stripe-webhook", "Stripe webhook", lambda visit: visit.goto("/admin/stripe"), operator=True),
]
