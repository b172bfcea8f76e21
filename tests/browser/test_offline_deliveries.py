"""Offline mode: the success page tells the developer when the payment's webhook can't get through."""
from __future__ import annotations

from dataclasses import replace

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import WEBHOOK_TIMEOUT, LiveShop, screenshot
from tests.browser.test_journeys import SUCCESS_URL, go_to_checkout, pay
from tests.processes import free_port

pytestmark = pytest.mark.sqlite_only


def test_the_success_page_says_where_the_webhook_fails_then_flips_to_paid(page: Page, live_shop: LiveShop):
    emulator = live_shop.app.extensions["stripe_emulator"]
    working = emulator.settings
    nowhere = f"http://127.0.0.1:{free_port()}/webhooks/stripe"
    emulator.settings = replace(working, webhook_url=nowhere)

    go_to_checkout(page, live_shop, {"enamel-mug": 1})
    pay(page)
    page.wait_for_url(SUCCESS_URL)
    problem = page.get_by_role("alert")
    expect(problem).to_be_visible(timeout=WEBHOOK_TIMEOUT)
    expect(problem).to_contain_text("the payment's webhook isn't reaching the shop")
    expect(problem).to_contain_text(f"checkout.session.completed to {nowhere}")
    expect(problem).to_contain_text("Connection refused")
    expect(problem).to_contain_text("flask --app wsgi stripe sync")
    screenshot(page, "success-webhook-failing")

    emulator.settings = working  # the developer fixes the address: the next attempt gets through
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible(timeout=WEBHOOK_TIMEOUT)
    expect(problem).to_be_hidden()
