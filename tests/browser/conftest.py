"""Browser fixtures: the shop on a real HTTP server, and headless Chromium through Playwright.

No pytest-playwright: the fixtures are here. Each test gets a fresh SQLite database and its
own server on 127.0.0.1 in offline mode, where the Stripe emulator's worker thread delivers
real signed webhooks over HTTP to the server's /webhooks/stripe. Every request the browser
makes is recorded; anything not for 127.0.0.1 is aborted and fails the test.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import func, select
from werkzeug.serving import make_server

from shop.cli import seed_products
from shop.extensions import db
from shop.models import Order, StripeEvent
from tests.conftest import IN_CI, make_app
from tests.helpers import CSRF_FIELD, SHIPPING_ADDRESS, TOKEN_FIELD

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
WIDTHS = (375, 1280)
GOOD_CARD = "4242 4242 4242 4242"
DECLINED_CARD = "4000 0000 0000 0002"
# Webhook-driven changes: the emulator's worker ticks every 0.5 s; leave generous room.
WEBHOOK_TIMEOUT = 15_000



@dataclass
class LiveShop:
    """The shop served over HTTP: its base URL and the app (for looking into the database)."""

    app: Flask
    url: str

    def orders(self, status: str | None = None) -> int:
        with self.app.app_context():
            query = select(func.count()).select_from(Order)
            if status:
                query = query.where(Order.status == status)
            count = db.session.scalar(query) or 0
            db.session.remove()
            return count

    def events(self, event_type: str) -> int:
        """How many Stripe events of this type the shop has recorded."""
        with self.app.app_context():
            count = db.session.scalar(select(func.count()).select_from(StripeEvent).where(StripeEvent.type == event_type))
            db.session.remove()
            return count or 0


@contextmanager
def serving(database_url: str, **overrides: Any) -> Iterator[LiveShop]:
    """A real HTTP server (werkzeug, threaded) on a random port of 127.0.0.1 in front of a fresh,
    seeded app. The emulator is given no address: it follows the one the shop is served at."""
    settings = {
        "STRIPE_EMULATOR_DELIVER_IN_PROCESS": False,
        "STRIPE_EMULATOR_WORKER": True,
        "STRIPE_EMULATOR_DELAY": 0.2,
        "STRIPE_EMULATOR_ASYNC_DELAY": 2,
        **overrides,
    }
    app = make_app(database_url, **settings)
    with app.app_context():
        seed_products()
        db.session.remove()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    port = server.server_port
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield LiveShop(app, f"http://127.0.0.1:{port}")
    finally:
        server.shutdown()
        server.server_close()
        # Before the database goes: a worker still ticking would fail on every tick after it.
        app.extensions["stripe_emulator"].stop_worker()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def live_shop(database_url: str) -> Iterator[LiveShop]:
    with serving(database_url) as shop:
        yield shop


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        message = f"Chromium is not at {CHROMIUM}: install it with: apt-get install -y chromium"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class RequestLog:
    """Every URL the browser asked for; anything not for 127.0.0.1 was aborted."""

    urls: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def hosts(self) -> set[str]:
        return {urlsplit(url).hostname or "" for url in self.urls}


def _guard(context, log: RequestLog) -> None:
    def handle(route) -> None:
        url = route.request.url
        log.urls.append(url)
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            log.blocked.append(url)
            route.abort("blockedbyclient")

    context.route("**/*", handle)


@pytest.fixture
def new_context(browser) -> Iterator[Callable[..., tuple[object, RequestLog]]]:
    """Make browser contexts that only reach 127.0.0.1; checked when the test ends."""
    made: list[tuple[object, RequestLog]] = []

    def factory(**options):
        options.setdefault("viewport", {"width": 1280, "height": 900})
        context = browser.new_context(**options)
        context.set_default_timeout(10_000)
        log = RequestLog()
        _guard(context, log)
        made.append((context, log))
        return context, log

    yield factory
    for context, _ in made:
        context.close()
    blocked = [url for _, log in made for url in log.blocked]
    assert not blocked, f"requests left 127.0.0.1: {blocked}"


@pytest.fixture
def context_and_log(new_context):
    return new_context()


@pytest.fixture
def page(context_and_log):
    context, _ = context_and_log
    return context.new_page()


@pytest.fixture
def requests_log(context_and_log) -> RequestLog:
    return context_and_log[1]


def screenshot(page, name: str, widths: tuple[int, ...] = WIDTHS) -> None:
    """Full-page screenshots at each width into artifacts/screenshots/, then back to the old size.

    On the way it checks that the page fits (no sideways scrolling) from 360 px up.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    original = page.viewport_size
    for width in (360, *widths):
        page.set_viewport_size({"width": width, "height": 800})
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{page.url} scrolls sideways by {overflow}px at {width}px wide"
        if width in widths:
            # A window as tall as the page, so what sticks to the bottom of the screen (the
            # total and Buy) is drawn where it ends up, not halfway down the picture.
            height = page.evaluate("document.documentElement.scrollHeight")
            page.set_viewport_size({"width": width, "height": max(800, height)})
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True, animations="disabled")
    if original:
        page.set_viewport_size(original)


def fill_shipping_address(page) -> None:
    """Type the shipping address into the hosted checkout page, as a shopper would."""
    page.get_by_label("Full name").fill(SHIPPING_ADDRESS["name"])
    page.get_by_label("Country or region").select_option(SHIPPING_ADDRESS["country"])
    page.get_by_label("Address line 1").fill(SHIPPING_ADDRESS["line1"])
    page.get_by_label("Address line 2").fill(SHIPPING_ADDRESS["line2"])
    page.get_by_label("City").fill(SHIPPING_ADDRESS["city"])
    page.get_by_label("State").fill(SHIPPING_ADDRESS["state"])
    page.get_by_label("ZIP code").fill(SHIPPING_ADDRESS["postal_code"])


def order_over_http(
    context, base_url: str, quantities: dict[str, int], pay_with: str | None = None, method: str = "card"
) -> str:
    """Check out (and optionally pay, by `method`) with the context's cookies but no page: quick setup.

    Returns the hosted checkout page's URL.
    """
    home = context.request.get(base_url + "/").text()
    form = {"csrf_token": CSRF_FIELD.search(home)[1], "checkout_token": TOKEN_FIELD.search(home)[1]}
    form.update({f"quantity-{slug}": str(quantity) for slug, quantity in quantities.items()})
    response = context.request.post(base_url + "/checkout", form=form, max_redirects=0)
    assert response.status == 303, response.text()
    checkout_url = response.headers["location"]
    if pay_with:
        payment = {"email": "shopper@example.com", "method": method, "card": pay_with, "expiry": "12 / 34", "cvc": "123", **SHIPPING_ADDRESS}
        assert context.request.post(checkout_url, form=payment, max_redirects=0).status == 303
    return checkout_url
