"""Rate limits on starting a checkout, per client IP and per browser, and on the operator's
failed sign-ins, per client IP and per username (Flask-Limiter).

Only `POST /checkout` and the operator view are limited: starting a checkout reserves stock
and opens a Stripe session, which is what scalpers and card testers repeat, and the operator
view's password is what a guesser repeats. The webhook, the status polling and every other
page stay unlimited, so Stripe's deliveries and a success page's polling are never refused.

Only failed sign-ins count (a 401 to a request that carried credentials). The per-username
limit never holds a browser the operator has signed in from before (marked in its signed
session cookie), so someone guessing at the operator's username can't lock them out; the
per-address limit is short (a minute).

Counts live in Redis when `REDIS_URL` is set (shared by every worker and dyno), otherwise in
each process's memory (`shop.limit_counts`). If Redis stops answering, or answers slower than `REDIS_TIMEOUT_MS` (50 ms), each worker
counts in its own memory until it answers in time again (logged as a warning): shoppers are
never refused, nor slowed more than one timeout, because Redis is down or slow.
"""
from __future__ import annotations

import logging
import math
import time

from flask import Flask, Response, current_app, request, session
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit
from limits.strategies import STRATEGIES
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import limit_counts
from .client_address import client_address
from .shoppers import current_shopper_id

# The view that starts a checkout, and the operator view's blueprint: the only ones limited.
CHECKOUT_ENDPOINT = "checkout.create"
OPERATOR_BLUEPRINT = "admin"
# Set in the session cookie of a browser the operator signed in from.
OPERATOR_BROWSER = "operator_browser"
log = logging.getLogger("shop.limits")


def client_ip() -> str:
    """The client's address (an IPv6 client's network), as far as it can be trusted (shop.client_address)."""
    return "ip:" + client_address()


def browser() -> str:
    """The browser, by the shopper id in its signed session cookie (created if new)."""
    return "browser:" + str(current_shopper_id(create=True))


def operator_address() -> str:
    return "operator-ip:" + client_address()


def operator_username() -> str:
    auth = request.authorization
    return "operator-user:" + ((auth.username or "") if auth is not None else "")


def failed_sign_in(response: Response) -> bool:
    """Count a 401 only when credentials were sent: a browser's first, bare request is not a guess."""
    return response.status_code == 401 and request.authorization is not None


def known_operator_browser() -> bool:
    return session.get(OPERATOR_BROWSER) is True


def _log_throttled_sign_in(limit: RequestLimit) -> None:
    log.warning(
        "operator sign-in throttled (%s) for user %r from %s",
        limit.limit, operator_username().removeprefix("operator-user:"), client_address(),
    )


def init_app(app: Flask) -> None:
    """Give the app its own limiter and put the checkout limits on its checkout view.

    Call after the checkout blueprint is registered. One limiter per app, because
    Flask-Limiter keeps its storage on the limiter object.
    """
    config = app.config
    redis_url = config.get("REDIS_URL")
    if not redis_url and config["APP_ENV"] == "production" and config["RATELIMIT_ENABLED"]:
        log.warning("REDIS_URL is not set: checkout rate limits are counted separately by each worker process")

    limiter = Limiter(
        key_func=client_ip,
        storage_uri=redis_url or f"{limit_counts.SCHEME}://",
        storage_options=_redis_options(redis_url, config["REDIS_TIMEOUT_MS"] / 1000) if redis_url else {},
        strategy="moving-window",
        key_prefix=config["RATELIMIT_KEY_PREFIX"],
        # Redis down or slow (a call past the timeout): count per worker, don't refuse shoppers.
        # This is the circuit: once open, Redis is asked only by a health check (one PING) after
        # 1, 2, 4, 8, 16 and 32 seconds, then every 1-32 s again, until it answers in time.
        in_memory_fallback_enabled=True,
        swallow_errors=True,  # and if even that fails, let the checkout through (logged)
        headers_enabled=False,  # the 429 page sets Retry-After; other answers need no extra Redis call
    )
    _limit_only_the_operator_blueprint_and_the_checkout(app, limiter)
    _count_in_swept_memory_when_redis_is_down(limiter)
    app.extensions["shop_limiter"] = limiter
    _route_logs_to_the_shops_handler(logging.getLogger("flask-limiter"))

    view = app.view_functions[CHECKOUT_ENDPOINT]
    view = limiter.limit(lambda: current_app.config["CHECKOUT_LIMIT_PER_BROWSER"], key_func=browser)(view)
    view = limiter.limit(lambda: current_app.config["CHECKOUT_LIMIT_PER_IP"], key_func=client_ip)(view)
    app.view_functions[CHECKOUT_ENDPOINT] = view

    operator_view = app.blueprints[OPERATOR_BLUEPRINT]
    limiter.limit(
        lambda: current_app.config["OPERATOR_SIGN_IN_LIMIT_PER_IP"], key_func=operator_address,
        deduct_when=failed_sign_in, on_breach=_log_throttled_sign_in,
    )(operator_view)
    limiter.limit(
        lambda: current_app.config["OPERATOR_SIGN_IN_LIMIT_PER_USERNAME"], key_func=operator_username,
        deduct_when=failed_sign_in, exempt_when=known_operator_browser, on_breach=_log_throttled_sign_in,
    )(operator_view)


def _limit_only_the_operator_blueprint_and_the_checkout(app: Flask, limiter: Limiter) -> None:
    """Initialise the limiter with its request hooks on the operator blueprint only.

    Flask-Limiter hooks every request (a check before, a deduction after, a cleanup at the
    end); every other request skips them, so it costs nothing: no count, no storage call,
    never a 429. The checkout's limits are checked by the decorators on its view, which
    need no hook; the operator view's limits are blueprint limits, checked by the hook
    before the blueprint's own sign-in check, and counted by the hook after its answer.
    """
    hooks = (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs)
    app_wide_before = [list(registry[None]) for registry in hooks]
    limiter.init_app(app)
    for registry, earlier in zip(hooks, app_wide_before, strict=True):
        added = registry[None][len(earlier):]
        registry[None] = earlier
        # First in the blueprint's lists: the check runs before `require_operator`, and the
        # deduction (after-request hooks run in reverse) after `never_cache`, as app-wide.
        registry[OPERATOR_BLUEPRINT][:0] = added


def _count_in_swept_memory_when_redis_is_down(limiter: Limiter) -> None:
    """Flask-Limiter's fallback counts in limits' MemoryStorage; give it the swept one (shop.limit_counts)."""
    limiter._fallback_storage = limit_counts.SweptMemoryStorage()
    limiter._fallback_limiter = STRATEGIES[limiter._strategy](limiter._fallback_storage)


def _redis_options(url: str, timeout_seconds: float) -> dict:
    """Short timeouts and no retries: one slow call, then the circuit opens (see `init_app`)."""
    options: dict = {
        "socket_connect_timeout": timeout_seconds,
        "socket_timeout": timeout_seconds,
        # redis-py retries a timed-out call three times with backoff by default: up to seconds.
        "retry": Retry(NoBackoff(), 0),
    }
    if url.startswith("rediss://"):
        # Heroku's Key-Value Store serves TLS with a self-signed certificate.
        options["ssl_cert_reqs"] = "none"
    return options


def _route_logs_to_the_shops_handler(logger: logging.Logger) -> None:
    """Flask-Limiter's warnings (e.g. storage unreachable) as one-line logs, like the shop's."""
    logger.handlers[:] = logging.getLogger("shop").handlers
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def retry_after_seconds(error: RateLimitExceeded) -> int:
    """Whole seconds until the breached limit lets this client start a checkout again."""
    limiter: Limiter = current_app.extensions["shop_limiter"]
    window = int(error.limit.limit.get_expiry())
    try:
        reset_at = limiter.current_limit.reset_at  # type: ignore[union-attr]
    except Exception:  # storage gone mid-request: the whole window is a safe upper bound
        return window
    # Flask-Limiter rounds the reset time up by a second; never ask for more than the window.
    return min(window, max(1, math.ceil(reset_at - time.time())))
