"""The shop in offline mode as a developer starts it: `flask run` or gunicorn on any port.

Each server is a separate process on a random port, on its own SQLite database (the
development default), with no STRIPE_EMULATOR_URL: the emulator's hosted page and webhook
target must come from where the shop is actually served. A purchase with 4242 goes through
the hosted page over plain HTTP and turns paid only through the emulator's signed webhook.
"""
from __future__ import annotations

import http.cookiejar
import json
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from shop.extensions import db
from tests.helpers import CSRF_FIELD, SHIPPING_ADDRESS, TOKEN_FIELD, RecordingHTTPClient
from tests.processes import REPO_ROOT, VENV_BIN, app_env, free_port, run, wait_until_serving

CARD = {"email": "shopper@example.com", "method": "card", "card": "4242 4242 4242 4242", "expiry": "12 / 34", "cvc": "123", **SHIPPING_ADDRESS}
STATUS_URL = re.compile(r'data-status-url="([^"]+)"')
CONCURRENT_CHECKOUTS = 16


@dataclass
class RunningShop:
    port: int
    database_url: str
    log: Path

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}"

    def order_statuses(self) -> list[str]:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(text("SELECT status FROM orders ORDER BY id")).scalars())
        finally:
            engine.dispose()


def shop_env(database_url: str, **extra: str) -> dict[str, str]:
    return app_env(
        APP_ENV="development",
        DATABASE_URL=database_url,
        SECRET_KEY="runs-anywhere-test-secret",
        # No address for the emulator: it must find the shop by itself (blank, so .env can't fill it in).
        STRIPE_EMULATOR_URL="",
        STRIPE_EMULATOR_WEBHOOK_URL="",
        STRIPE_EMULATOR_DELAY="0.2",
        # A burst of checkouts from one address is what these tests make; the limits and the
        # client's share of stock have their own tests.
        CHECKOUT_LIMIT_PER_IP="1000 per minute",
        CHECKOUT_LIMIT_PER_BROWSER="1000 per minute",
        CHECKOUT_STOCK_SHARE="1.0",
        PYTHONUNBUFFERED="1",
        **extra,
    )


def start(command: list[str], env: dict[str, str], workdir: Path, port: int) -> Iterator[RunningShop]:
    """Migrate and seed the database as the README says, then serve it; stop the server afterwards."""
    for setup in (["db", "upgrade"], ["seed"]):
        result = run([str(VENV_BIN / "flask"), "--app", "wsgi", *setup], env, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    log = workdir / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(process, f"http://127.0.0.1:{port}/healthz", log, timeout=60)
        yield RunningShop(port, env["DATABASE_URL"], log)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def flask_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningShop]:
    """`flask --app wsgi run --port <random>`: the README's command on another port."""
    workdir = tmp_path_factory.mktemp("flask-run")
    port = free_port()
    env = shop_env(f"sqlite:///{workdir / 'shop.sqlite'}")
    yield from start([str(VENV_BIN / "flask"), "--app", "wsgi", "run", "--port", str(port)], env, workdir, port)


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningShop]:
    """The Procfile's gunicorn with the repo's gunicorn.conf.py, 2 workers, on a random PORT."""
    workdir = tmp_path_factory.mktemp("gunicorn")
    port = free_port()
    env = shop_env(f"sqlite:///{workdir / 'shop.sqlite'}", PORT=str(port), WEB_CONCURRENCY="2")
    yield from start([str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], env, workdir, port)


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browser:
    """One shopper over plain HTTP: a cookie jar, redirects not followed."""

    def __init__(self) -> None:
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirects()
        )

    def request(self, url: str, form: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(urllib.request.Request(url, data=data), timeout=30) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()

    def checkout_form(self, base: str) -> dict[str, str]:
        status, _, page = self.request(base + "/")
        assert status == 200
        return {"csrf_token": CSRF_FIELD.search(page)[1], "checkout_token": TOKEN_FIELD.search(page)[1],
                "quantity-enamel-mug": "1"}


def buy_with_4242(base: str) -> None:
    """Check out, pay on the emulator's hosted page and wait for the webhook to mark the order paid."""
    browser = Browser()
    status, headers, body = browser.request(base + "/checkout", browser.checkout_form(base))
    assert status == 303, body
    page_url = headers["Location"]
    assert page_url.startswith(base + "/_stripe/pay/cs_test_"), page_url

    status, _, page = browser.request(page_url)
    assert status == 200 and "4242" in page
    status, headers, body = browser.request(page_url, CARD)
    assert status == 303, body
    success_url = headers["Location"]
    assert success_url.startswith(base + "/checkout/success?session_id=cs_test_")

    status, _, page = browser.request(success_url)
    assert status == 200
    status_url = base + STATUS_URL.search(page)[1].replace("&amp;", "&")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        order = json.loads(browser.request(status_url)[2])
        if order["status"] != "awaiting_payment":
            break
        time.sleep(0.2)
    assert order["status"] == "paid"


def concurrent_checkouts(base: str, count: int) -> list[int]:
    """`count` shoppers press Buy at the same moment; returns each answer's status."""
    shoppers = [(browser, browser.checkout_form(base)) for browser in (Browser() for _ in range(count))]
    barrier = threading.Barrier(count)
    statuses: list[int] = []

    def press_buy(browser: Browser, form: dict[str, str]) -> None:
        barrier.wait()
        statuses.append(browser.request(base + "/checkout", form)[0])

    threads = [threading.Thread(target=press_buy, args=shopper) for shopper in shoppers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


@pytest.mark.parametrize("server, host", [("flask_run", "127.0.0.1"), ("flask_run", "localhost"), ("gunicorn", "127.0.0.1")])
def test_a_purchase_turns_paid_wherever_the_shop_is_served(request, server, host):
    shop: RunningShop = request.getfixturevalue(server)
    buy_with_4242(shop.url(host))
    log = shop.log.read_text()
    assert "Webhook delivery failed" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("server", ["flask_run", "gunicorn"])
def test_sixteen_concurrent_checkouts_all_reach_stripe(request, server):
    shop: RunningShop = request.getfixturevalue(server)
    before = len(shop.order_statuses())
    statuses = concurrent_checkouts(shop.url(), CONCURRENT_CHECKOUTS)
    assert statuses == [303] * CONCURRENT_CHECKOUTS, shop.log.read_text()[-3000:]
    new_orders = shop.order_statuses()[before:]
    assert new_orders == ["awaiting_payment"] * CONCURRENT_CHECKOUTS
    assert "QueuePool limit" not in shop.log.read_text()


def test_checkout_holds_no_database_connection_while_stripe_answers(app, shop):
    """The cause of the pool running dry: each checkout kept a connection across the Stripe call."""
    held: list[int] = []
    inner = app.extensions["stripe_http_client"]

    class Watching(RecordingHTTPClient):
        def request(self, method, url, headers, post_data=None, *, _usage=None):
            with app.app_context():
                held.append(db.engine.pool.checkedout())
            return super().request(method, url, headers, post_data)

    app.extensions["stripe_http_client"] = Watching(inner)
    order = shop.start({"enamel-mug": 1})
    assert held == [0]
    assert order.status == "awaiting_payment" and order.checkout_url
