"""Rate limits on starting a checkout: per client IP and per browser, on a real Redis.

The suite's testing config switches limits off (other tests make many checkouts from one
client); every test here switches the shop's real default limits on.
"""
from __future__ import annotations

import http.client
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from flask import Flask, request
from flask_limiter import Limiter
from limits.storage import MemoryStorage
from sqlalchemy import select

from config import Config, ConfigError
from shop import limit_counts, stripe_emulator
from shop.extensions import db
from shop.models import Product
from tests.conftest import seeded_app
from tests.helpers import CSRF_FIELD, TOKEN_FIELD, ShopClient, get_order, pay, post_event, session_event
from tests.processes import REPO_ROOT, VENV_BIN, app_env, free_port, procfile, wait_until_serving


def limited_app(
    database_url: str, redis_url: str | None, key_prefix: str = "shop", **overrides
) -> AbstractContextManager[Flask]:
    """The shop with its production limits on, counting in Redis (or memory without a URL).

    These tests check what is counted, not how fast Redis answers: on a busy machine an answer
    can miss the production timeout, and the limiter would then count in memory. The slow-Redis
    tests (test_slow_redis.py) set the production timeout.
    """
    overrides.setdefault("REDIS_TIMEOUT_MS", 2000)
    return seeded_app(
        database_url, RATELIMIT_ENABLED=True, REDIS_URL=redis_url, RATELIMIT_KEY_PREFIX=key_prefix, **overrides
    )


MAX_CART = {"field-notebook": 10, "enamel-mug": 10, "canvas-tote": 10}
ONE_OF_EACH = {"field-notebook": 1, "enamel-mug": 1, "canvas-tote": 1}


class Browser(ShopClient):
    """A shopper's browser behind the given address, as the platform's router reports it."""

    def __init__(self, app: Flask, ip: str) -> None:
        super().__init__(app)
        self.http.environ_base["HTTP_X_FORWARDED_FOR"] = ip


def stock(app: Flask) -> dict[str, int]:
    with app.app_context():
        return dict(db.session.execute(select(Product.slug, Product.stock)).all())


def retry_after(response) -> int:
    value = response.headers["Retry-After"]
    assert value.isdigit(), value
    return int(value)


def test_the_default_limits_let_a_shopper_retry_and_stop_a_burst() -> None:
    """What the README promises: at least a few checkouts a minute per browser, at most 10 per IP."""
    assert Config.CHECKOUT_LIMIT_PER_IP == "10 per minute; 30 per hour"
    assert Config.CHECKOUT_LIMIT_PER_BROWSER == "5 per minute; 15 per hour"


def test_twenty_rapid_max_carts_from_one_ip_are_stopped_and_an_honest_shopper_still_buys(
    database_url: str, redis_url: str, redis_key_prefix: str
) -> None:
    with limited_app(
        database_url, redis_url, redis_key_prefix, CHECKOUT_STOCK_SHARE=Config.CHECKOUT_STOCK_SHARE
    ) as app:
        answers = [Browser(app, "203.0.113.66").checkout(MAX_CART) for _ in range(20)]  # a fresh cookie each

        codes = [answer.status_code for answer in answers]
        assert codes == [303] * 2 + [409] * 8 + [429] * 10  # 2 carts reach the address's share; 10 per minute
        assert stock(app) == {"field-notebook": 80, "enamel-mug": 80, "canvas-tote": 80}
        refused = next(answer for answer in answers if answer.status_code == 429)
        page = refused.get_data(as_text=True)
        assert "Too many checkouts at once" in page
        assert "Nothing was charged and nothing was reserved" in page
        assert 1 <= retry_after(refused) <= 60
        assert re.search(rf"try again in {retry_after(refused)} seconds?\.", page)
        assert 'href="/"' in page and "shop.css" in page  # the shop's own page, with a way back

        # Someone else, behind another address, is not affected and buys one of each.
        honest = Browser(app, "198.51.100.7")
        order = honest.start(ONE_OF_EACH)
        assert pay(honest, order.checkout_url).status_code == 303
        stripe_emulator.tick(app)
        assert get_order(app, order.public_id).status == "paid"


def test_one_browser_is_limited_even_when_its_address_changes(
    database_url: str, redis_url: str, redis_key_prefix: str
) -> None:
    with limited_app(database_url, redis_url, redis_key_prefix) as app:
        browser = ShopClient(app)
        codes = []
        for n in range(6):
            browser.http.environ_base["HTTP_X_FORWARDED_FOR"] = f"192.0.2.{n + 1}"
            codes.append(browser.checkout({"enamel-mug": 1}).status_code)
        assert codes == [303] * 5 + [429]  # 5 per minute per browser

        # The same address with another browser is still welcome.
        assert Browser(app, "192.0.2.6").checkout({"enamel-mug": 1}).status_code == 303


def test_a_limited_address_still_gets_its_status_polls_and_stripe_its_webhooks(
    database_url: str, redis_url: str, redis_key_prefix: str
) -> None:
    address = "203.0.113.5"
    with limited_app(database_url, redis_url, redis_key_prefix) as app:
        shopper = Browser(app, address)
        order = shopper.start({"canvas-tote": 1})
        codes = [Browser(app, address).checkout({"enamel-mug": 1}).status_code for _ in range(10)]
        assert codes[-1] == 429

        status_url = f"/orders/{order.public_id}/status?session_id={order.stripe_session_id}"
        assert {shopper.http.get(status_url).status_code for _ in range(50)} == {200}
        assert shopper.http.get("/").status_code == 200

        pay(shopper, order.checkout_url)
        completed = session_event(get_order(app, order.public_id), "checkout.session.completed")
        deliveries = [post_event(app, completed, **{"X-Forwarded-For": address}).status_code for _ in range(30)]
        assert deliveries == [200] * 30
        assert get_order(app, order.public_id).status == "paid"


def test_only_the_checkout_and_the_operator_view_reach_the_limiter(database_url: str, monkeypatch) -> None:
    """Every other request runs none of Flask-Limiter's code: the status poll and the pages pay nothing for it."""
    reached = []
    identify_request = Limiter.identify_request
    monkeypatch.setattr(Limiter, "identify_request", lambda limiter: reached.append(request.path) or identify_request(limiter))
    with limited_app(database_url, None) as app:
        shopper = Browser(app, "192.0.2.40")
        order = shopper.start({"canvas-tote": 1})
        assert set(reached) == {"/checkout"}

        reached.clear()
        assert shopper.http.get(f"/orders/{order.public_id}/status").status_code == 200
        assert shopper.http.get("/").status_code == 200
        assert shopper.http.get("/healthz").status_code == 200
        assert reached == []

        assert shopper.http.get("/admin/").status_code == 404  # no operator configured: still checked first
        assert reached == ["/admin/"]


@pytest.mark.sqlite_only
def test_without_redis_url_limits_count_in_memory(database_url: str) -> None:
    with limited_app(database_url, None) as app:
        codes = [Browser(app, "203.0.113.9").checkout({"enamel-mug": 1}).status_code for _ in range(11)]
        assert codes == [303] * 10 + [429]


@pytest.mark.sqlite_only
def test_redis_down_lets_shoppers_through_counts_in_memory_and_logs_a_warning(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with limited_app(database_url, "redis://127.0.0.1:9/0") as app:  # nothing listens on port 9
        capsys.readouterr()
        assert Browser(app, "203.0.113.10").checkout({"enamel-mug": 1}).status_code == 303
        log = capsys.readouterr().out
        assert re.search(r" WARNING flask-limiter: Rate limit storage unreachable - falling back to in-memory", log), log

        codes = [Browser(app, "203.0.113.10").checkout({"enamel-mug": 1}).status_code for _ in range(10)]
        assert codes == [303] * 9 + [429]  # the worker's own count still stops a burst


@pytest.mark.sqlite_only
@pytest.mark.parametrize("redis_url", [None, "redis://127.0.0.1:9/0"], ids=["without Redis", "Redis down"])
def test_counts_in_memory_are_swept_a_few_times_a_minute_not_after_every_checkout(
    database_url: str, redis_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A launch: shoppers from many addresses start checkouts one after another. Counted in a
    worker's memory, each checkout keeps four counts for an hour, and a sweep for expired
    entries reads all of them: run after every checkout, a worker with a few thousand
    shoppers behind it spent its time sweeping."""
    sweeps: list[float] = []
    sweep = MemoryStorage._MemoryStorage__expire_events
    monkeypatch.setattr(MemoryStorage, "_MemoryStorage__expire_events",
                        lambda storage: (sweeps.append(time.monotonic()), sweep(storage)))
    with limited_app(database_url, redis_url) as app:
        time.sleep(0.1)  # the storage's sweep when created
        sweeps.clear()
        started = time.monotonic()
        codes = [Browser(app, f"198.51.100.{n}").checkout({"enamel-mug": 1}).status_code for n in range(1, 16)]
        elapsed = time.monotonic() - started
        time.sleep(0.1)
    assert codes == [303] * 15
    assert 1 <= len(sweeps) <= 1 + elapsed / limit_counts.SWEEP_SECONDS, (len(sweeps), elapsed)


def test_a_malformed_limit_setting_is_refused_at_start(database_url: str) -> None:
    with pytest.raises(ConfigError, match="CHECKOUT_LIMIT_PER_IP='lots' is not a rate limit"):
        with limited_app(database_url, None, CHECKOUT_LIMIT_PER_IP="lots"):
            pass


# --- Across gunicorn workers -----------------------------------------------------------------


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def fresh_browser_form(base: str, address: str) -> tuple[urllib.request.OpenerDirector, dict[str, str]]:
    """A new browser (its own cookie jar) that has loaded the home page's form."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()), NoRedirects())
    request = urllib.request.Request(f"{base}/", headers={"X-Forwarded-For": address})
    page = opener.open(request, timeout=10).read().decode()
    return opener, {"csrf_token": CSRF_FIELD.search(page)[1], "checkout_token": TOKEN_FIELD.search(page)[1]}


def post_checkout(
    base: str, address: str, opener: urllib.request.OpenerDirector, fields: dict[str, str], cart: dict[str, int] | None = None
) -> int:
    quantities = {f"quantity-{slug}": str(quantity) for slug, quantity in (cart or {"enamel-mug": 1}).items()}
    body = urlencode({**fields, **quantities}).encode()
    request = urllib.request.Request(f"{base}/checkout", data=body, headers={"X-Forwarded-For": address})
    try:
        with opener.open(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def post_checkout_after_a_pause(
    base: str, address: str, opener: urllib.request.OpenerDirector, fields: dict[str, str], pause: float
) -> int:
    """post_checkout from a client that connects, then waits `pause` seconds before sending.

    A worker allowed one connection at a time is held by it meanwhile, so concurrent clients
    spread over the workers however fast each request is answered.
    """
    jar = next(handler.cookiejar for handler in opener.handlers if isinstance(handler, urllib.request.HTTPCookieProcessor))
    cookies = "; ".join(f"{cookie.name}={cookie.value}" for cookie in jar)
    body = urlencode({**fields, "quantity-enamel-mug": "1"})
    connection = http.client.HTTPConnection(urlsplit(base).netloc, timeout=30)
    try:
        connection.connect()
        time.sleep(pause)
        connection.request("POST", "/checkout", body=body, headers={
            "X-Forwarded-For": address, "Cookie": cookies, "Content-Type": "application/x-www-form-urlencoded"})
        return connection.getresponse().status
    finally:
        connection.close()


def test_ipv6_addresses_rotating_inside_one_64_share_one_count(
    database_url: str, redis_url: str, redis_key_prefix: str
) -> None:
    with limited_app(database_url, redis_url, redis_key_prefix) as app:
        codes = [Browser(app, f"2001:db8:7:7::{n:x}").checkout({"enamel-mug": 1}).status_code for n in range(1, 12)]
        assert codes == [303] * 10 + [429]  # 10 a minute per client: the /64 is one client
        assert Browser(app, "2001:db8:7:8::1").checkout({"enamel-mug": 1}).status_code == 303  # another /64


def serve_directly(
    tmp_path: Path, sqlite_template: str, gunicorn_args: tuple[str, ...] = (), **settings: str
) -> tuple[subprocess.Popen, str, Path]:
    """gunicorn as the Procfile starts it (plus `gunicorn_args`), reached without any proxy in
    front (no DYNO: no router) unless `settings` say otherwise."""
    database = tmp_path / "shop.sqlite"
    shutil.copy(sqlite_template, database)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = app_env(
        APP_ENV="development",  # offline: the emulator stands in for Stripe
        DATABASE_URL=f"sqlite:///{database}",
        SECRET_KEY="limits-test-" + "x" * 32,
        STRIPE_EMULATOR_URL=f"{base}/_stripe",
        STRIPE_EMULATOR_WORKER="0",
        PORT=str(port),
        **{"WEB_CONCURRENCY": "1", **settings},
    )
    log = tmp_path / "gunicorn.log"
    with log.open("w") as output:
        command = [str(VENV_BIN / "gunicorn"), *procfile()["web"].split()[1:], "--no-control-socket", *gunicorn_args]
        server = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    wait_until_serving(server, f"{base}/healthz", log)
    return server, base, log


def test_served_directly_a_made_up_x_forwarded_for_changes_nothing(sqlite_template: str, tmp_path: Path) -> None:
    server, base, _ = serve_directly(tmp_path, sqlite_template, CHECKOUT_STOCK_SHARE="0.2")
    try:
        codes = []
        for n in range(8):  # one client, a fresh cookie and a new made-up address each time
            spoofed = f"198.51.100.{n + 1}"
            opener, fields = fresh_browser_form(base, spoofed)
            codes.append(post_checkout(base, spoofed, opener, fields, MAX_CART))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert codes == [303, 303] + [409] * 6  # the share of one client: the connection's own address


def test_two_gunicorn_workers_share_one_count_in_redis(
    sqlite_template: str, redis_url: str, redis_key_prefix: str, tmp_path: Path
) -> None:
    # One request at a time per worker, so a burst is spread over both workers; pid in the access log.
    one_at_a_time = (
        "--threads", "1", "--worker-connections", "1", "--access-logformat", "pid=%(p)s %(m)s %(U)s %(s)s",
    )
    server, base, log = serve_directly(
        tmp_path, sqlite_template, one_at_a_time,
        TRUSTED_PROXY_HOPS="1",  # the test's requests stand in for the platform's router
        REDIS_URL=redis_url,
        RATELIMIT_KEY_PREFIX=redis_key_prefix,
        CHECKOUT_LIMIT_PER_IP="4 per minute",
        WEB_CONCURRENCY="2",
    )
    try:
        address = "203.0.113.77"
        browsers = [fresh_browser_form(base, address) for _ in range(12)]
        with ThreadPoolExecutor(max_workers=12) as pool:
            codes = list(pool.map(lambda browser: post_checkout_after_a_pause(base, address, *browser, pause=0.3), browsers))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    assert sorted(codes) == [303] * 4 + [429] * 8, codes
    checkout_lines = [line for line in log.read_text().splitlines() if " POST /checkout " in line]
    workers = {line.split("pid=")[1].split()[0] for line in checkout_lines}
    assert len(checkout_lines) == 12 and len(workers) == 2, checkout_lines  # both workers answered
