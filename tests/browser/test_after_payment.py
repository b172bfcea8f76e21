"""After the payment, in Chromium: a chargeback and a refund that fails, as the operator and the
shopper see them, with Stripe's test cards on the emulator's hosted page."""
from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveShop, order_over_http, screenshot, serving

OPERATOR = ("operator", "a-long-operator-password")


def reload_until(page: Page, selector: str, tries: int = 30) -> None:
    """The operator's pages don't update themselves: reload until Stripe's events have arrived."""
    for _ in range(tries):
        if page.locator(selector).count():
            return
        page.wait_for_timeout(500)
        page.reload()


@pytest.fixture
def shop_with_operator(database_url: str) -> Iterator[LiveShop]:
    with serving(database_url, ADMIN_USERNAME=OPERATOR[0], ADMIN_PASSWORD=OPERATOR[1]) as shop:
        yield shop


@pytest.fixture
def operator(new_context) -> Page:
    context, _ = new_context(http_credentials={"username": OPERATOR[0], "password": OPERATOR[1]})
    return context.new_page()


def test_a_payment_with_the_dispute_card_shows_the_operator_the_deadline_and_no_refund(
    page: Page, operator: Page, shop_with_operator: LiveShop
):
    base = shop_with_operator.url
    order_over_http(page.context, base, {"enamel-mug": 1}, pay_with="4000 0000 0000 0259")
    operator.goto(base + "/admin/")
    reload_until(operator, ".admin-attention")
    attention = operator.locator(".admin-attention")
    expect(attention).to_contain_text("Disputed — respond by")
    screenshot(operator, "admin-orders-dispute")
    attention.locator("a code").first.click()
    expect(operator.locator(".admin-dispute")).to_contain_text("Do not ship this order")
    expect(operator.locator(".admin-dispute a")).to_have_attribute("href", re.compile(r"https://dashboard\.stripe\.com/test/disputes/dp_\w+"))
    expect(operator.get_by_text("No refund is offered")).to_be_visible()
    expect(operator.get_by_role("button", name="Refund")).to_have_count(0)
    screenshot(operator, "admin-order-dispute")


def test_a_refund_of_the_failing_refund_card_fails_visibly_and_never_reads_refunded(
    page: Page, operator: Page, shop_with_operator: LiveShop
):
    base = shop_with_operator.url
    order_over_http(page.context, base, {"enamel-mug": 1}, pay_with="4000 0000 0000 5126")
    operator.goto(base + "/admin/")
    reload_until(operator, ".admin-table .badge-paid")
    operator.locator(".admin-table a code").first.click()
    operator.locator('input[name="confirm"]').check()
    operator.get_by_role("button", name="Refund").click()
    expect(operator.locator(".flash")).to_contain_text("Refund requested")
    reload_until(operator, ".admin-refund-failed")  # the emulator fails it after its async delay (2 s here)
    expect(operator.locator(".admin-refund-failed")).to_contain_text("expired_or_canceled_card")
    expect(operator.get_by_role("link", name="contact the customer")).to_have_attribute("href", re.compile(r"mailto:shopper@example\.com\?subject="))
    screenshot(operator, "admin-order-refund-failed")

    page.goto(base + "/")
    orders = page.locator("#orders")
    expect(orders).to_contain_text("Paid")
    expect(orders).not_to_contain_text("Refund")
