"""Settings, read from the environment (and a local `.env` file in development).

`APP_ENV` picks the class: `production` (the default), `development` or `testing`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from dotenv import load_dotenv
from limits import parse_many

BASE_DIR = Path(__file__).resolve().parent
load_dotenv(BASE_DIR / ".env")


class ConfigError(RuntimeError):
    """The configuration is unsafe or incomplete; the app refuses to start."""


def normalise_database_url(url: str) -> str:
    """Accept the `postgres://` URLs platforms hand out and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _flag(name: str, default: str = "0") -> bool:
    return os.environ.get(name, default).strip().lower() in {"1", "true", "yes", "on"}


def _secrets(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


class Config:
    APP_ENV = "production"
    DEBUG = False
    TESTING = False
    SECRET_KEY = os.environ.get("SECRET_KEY")
    # None means "a SQLite file in the instance folder" (resolved by the factory).
    SQLALCHEMY_DATABASE_URI = (
        normalise_database_url(os.environ["DATABASE_URL"]) if os.environ.get("DATABASE_URL") else None
    )
    # No ping before each checkout from the pool (a round trip on every request): connections
    # are recycled every 5 minutes instead, and one found dead invalidates the whole pool, so a
    # database restart costs at most one failed request per worker (Stripe retries webhooks).
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_recycle": 300}
    # Connections each worker process opens at most, and keeps (no overflow: a connection opened
    # under load and closed right after costs the worker and PostgreSQL a new backend each time):
    # a third for SQLAlchemy's pool, the rest for the statements sent straight to psycopg
    # (shop.driver_pool). Every worker of every dyno needs this many of PostgreSQL's max_connections.
    DATABASE_POOL_SIZE = os.environ.get("DATABASE_POOL_SIZE") or "15"

    STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY") or None
    # Comma-separated to allow rotation: every listed secret is accepted.
    STRIPE_WEBHOOK_SECRETS = _secrets(os.environ.get("STRIPE_WEBHOOK_SECRET"))
    # None: Stripe's own API. Set to talk to a stand-in (e.g. another process's emulator).
    STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE") or None
    # Production sends the secret key to STRIPE_API_BASE only when this opt-in is set.
    ALLOW_STRIPE_API_BASE = _flag("ALLOW_STRIPE_API_BASE")
    STRIPE_MAX_NETWORK_RETRIES = os.environ.get("STRIPE_MAX_NETWORK_RETRIES") or "2"
    ALLOW_LIVE_PAYMENTS = _flag("ALLOW_LIVE_PAYMENTS")
    # The shop's public address (https://shop.example): where `flask stripe check` expects a
    # webhook endpoint to point (<SHOP_URL>/webhooks/stripe). The operator view uses the
    # address it was reached at when this is unset.
    SHOP_URL = (os.environ.get("SHOP_URL") or "").strip().rstrip("/") or None

    # Where the shop ships: two-letter country codes, comma-separated, that Checkout offers for
    # the shipping address (Stripe's `shipping_address_collection[allowed_countries]`).
    SHIPPING_COUNTRIES = tuple(
        code.strip().upper() for code in (os.environ.get("SHIPPING_COUNTRIES") or "US,CA").split(",") if code.strip()
    )
    # Ask for a phone number with the address (for the carrier): 1 to turn it on.
    SHIPPING_PHONE = _flag("SHIPPING_PHONE")

    SHOP_CURRENCY = os.environ.get("SHOP_CURRENCY", "usd").strip().lower()
    # How prices are written (symbol, grouping, decimals): a CLDR locale such as en_US or en_IN.
    SHOP_LOCALE = os.environ.get("SHOP_LOCALE", "en_US").strip()
    # HTTP basic auth for the operator view at /admin/; it answers 404 unless both are set.
    ADMIN_USERNAME = os.environ.get("ADMIN_USERNAME") or None
    ADMIN_PASSWORD = os.environ.get("ADMIN_PASSWORD") or None
    CHECKOUT_SESSION_MINUTES = 30
    # Orders still pending (no Checkout Session) after this long are expired by the sweep.
    STALE_PENDING_MINUTES = 15

    # Requests larger than this get 413 before any parsing (webhook bodies included).
    MAX_CONTENT_LENGTH = 64 * 1024
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = True
    PREFERRED_URL_SCHEME = "https"
    WTF_CSRF_TIME_LIMIT = None  # the token lives as long as the session cookie
    # The cookie is re-sent only when it changes, not on every response (31 days from then).
    SESSION_REFRESH_EACH_REQUEST = False
    # The home page may show product details and stock this many seconds old, and checkout
    # prices a cart from the same details (what the shopper saw); it always reserves live stock.
    PRODUCT_CACHE_SECONDS = 2.0

    # Offline mode: the built-in Stripe emulator stands in for Stripe's API.
    STRIPE_OFFLINE = False

    # Rate limits on starting a checkout (README "Deploying"), in Flask-Limiter's notation;
    # counted in Redis when REDIS_URL is set, else in each process's memory.
    REDIS_URL = os.environ.get("REDIS_URL") or None
    # A slow or hanging Redis must not slow a checkout: each call to it may take this long before
    # the limiter counts in the worker's memory instead (README "Deploying", item 8). Redis in
    # the same region answers in about a millisecond; connecting over TLS takes a few more.
    REDIS_TIMEOUT_MS = os.environ.get("REDIS_TIMEOUT_MS") or "50"
    # Prefix of the limiter's keys, so several apps can share one Redis.
    RATELIMIT_KEY_PREFIX = os.environ.get("RATELIMIT_KEY_PREFIX") or "shop"
    RATELIMIT_ENABLED = True
    CHECKOUT_LIMIT_PER_IP = os.environ.get("CHECKOUT_LIMIT_PER_IP") or "10 per minute; 30 per hour"
    CHECKOUT_LIMIT_PER_BROWSER = os.environ.get("CHECKOUT_LIMIT_PER_BROWSER") or "5 per minute; 15 per hour"
    # Failed sign-ins to the operator view (README "Deploying", item 8): short windows, so the
    # operator mistyping is held a minute at most; a browser they signed in from before is
    # never held by the per-username limit.
    OPERATOR_SIGN_IN_LIMIT_PER_IP = os.environ.get("OPERATOR_SIGN_IN_LIMIT_PER_IP") or "5 per minute"
    OPERATOR_SIGN_IN_LIMIT_PER_USERNAME = os.environ.get("OPERATOR_SIGN_IN_LIMIT_PER_USERNAME") or "20 per minute"
    # Most of a product's units one client address may hold in unpaid checkouts (README "Inventory").
    CHECKOUT_STOCK_SHARE = os.environ.get("CHECKOUT_STOCK_SHARE") or "0.2"
    # How many proxies in front of the shop append to X-Forwarded-For (shop/client_address.py).
    # A Heroku-style dyno (DYNO set) sits behind exactly one router; anywhere else the default
    # trusts no header, so a client can't choose its own address.
    TRUSTED_PROXY_HOPS = os.environ.get("TRUSTED_PROXY_HOPS") or ("1" if os.environ.get("DYNO") else "0")
    # IPv6 clients are counted by network: a host is given a whole /64.
    IPV6_CLIENT_PREFIX = os.environ.get("IPV6_CLIENT_PREFIX") or "64"


class DevelopmentConfig(Config):
    APP_ENV = "development"
    SECRET_KEY = Config.SECRET_KEY or "dev-only-not-secret"
    SESSION_COOKIE_SECURE = False
    PREFERRED_URL_SCHEME = "http"
    STRIPE_OFFLINE = not Config.STRIPE_SECRET_KEY


class TestingConfig(DevelopmentConfig):
    APP_ENV = "testing"
    TESTING = True
    PRODUCT_CACHE_SECONDS = 0.0
    SECRET_KEY = "testing-not-secret"
    STRIPE_SECRET_KEY = None
    STRIPE_WEBHOOK_SECRETS: list[str] = []
    STRIPE_OFFLINE = True
    STRIPE_MAX_NETWORK_RETRIES = 0
    # Tests make many checkouts from one client; the tests of limits and bounds switch them on.
    RATELIMIT_ENABLED = False
    CHECKOUT_STOCK_SHARE = 1.0
    REDIS_URL = None
    # Test clients stand in for the platform's router: they set X-Forwarded-For.
    TRUSTED_PROXY_HOPS = 1


class ProductionConfig(Config):
    APP_ENV = "production"


CONFIGS: dict[str, type[Config]] = {
    "production": ProductionConfig,
    "development": DevelopmentConfig,
    "testing": TestingConfig,
}


@dataclass(frozen=True)
class Number:
    """A numeric setting: `kind` (int or float) within [low, high], or above low when `low_open`."""

    kind: type
    low: float
    high: float
    low_open: bool = False

    def parse(self, name: str, value: object) -> int | float:
        try:
            number = self.kind(value)
        except (TypeError, ValueError):
            number = None
        if isinstance(value, bool) or number is None or not self._within(number) or (
            self.kind is int and isinstance(value, float) and value != number
        ):
            raise ConfigError(f"Refusing to start: {name}={value!r} must be {self._describe()}.")
        return number

    def _within(self, number: float) -> bool:
        above_low = number > self.low if self.low_open else number >= self.low
        return above_low and number <= self.high

    def _describe(self) -> str:
        if self.kind is int:
            return f"a whole number from {self.low:g} to {self.high:g}"
        return f"a number {'above' if self.low_open else 'from'} {self.low:g} {'and at most' if self.low_open else 'to'} {self.high:g}"


NUMERIC_SETTINGS = {
    "STRIPE_MAX_NETWORK_RETRIES": Number(int, 0, 10),
    "CHECKOUT_STOCK_SHARE": Number(float, 0, 1, low_open=True),
    "TRUSTED_PROXY_HOPS": Number(int, 0, 10),
    "IPV6_CLIENT_PREFIX": Number(int, 1, 128),
    "REDIS_TIMEOUT_MS": Number(int, 1, 5000),
    "DATABASE_POOL_SIZE": Number(int, 2, 100),
}
RATE_LIMIT_SETTINGS = (
    "CHECKOUT_LIMIT_PER_IP", "CHECKOUT_LIMIT_PER_BROWSER",
    "OPERATOR_SIGN_IN_LIMIT_PER_IP", "OPERATOR_SIGN_IN_LIMIT_PER_USERNAME",
)


def check_settings(config: dict) -> None:
    """Turn every numeric and rate-limit setting into its value, or refuse the first malformed one in one line.

    Runs in every environment: a setting that can't be read is a mistake wherever it is made.
    """
    for name, rule in NUMERIC_SETTINGS.items():
        config[name] = rule.parse(name, config[name])
    for name in RATE_LIMIT_SETTINGS:
        try:
            parse_many(config[name])
        except ValueError:
            raise ConfigError(f"{name}={config[name]!r} is not a rate limit like '10 per minute; 30 per hour'.") from None


# Shortest secrets production accepts: a signing key worth its name, a password not guessed online.
MIN_SECRET_KEY_LENGTH = 32
MIN_ADMIN_PASSWORD_LENGTH = 12
# zxcvbn's estimates: SECRET_KEY must take at least 10^24 guesses (about 80 bits: no offline
# search of a session signature finds it); ADMIN_PASSWORD at least score 3 ("safely
# unguessable": 10^8 guesses, beyond any online attack the login throttle lets through).
MIN_SECRET_KEY_GUESSES_LOG10 = 24
MIN_ADMIN_PASSWORD_SCORE = 3
# zxcvbn reads at most this many characters; a longer secret is judged by its start.
ZXCVBN_MAX_LENGTH = 72
STRIPE_KEY = re.compile(r"(sk|rk)_(test|live)_[A-Za-z0-9]+")
WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9+/=_-]+")


def check_production(config: dict) -> None:
    """Refuse to run production with missing or weak secrets, debug on, or unintended Stripe settings."""
    missing = [
        name
        for name, value in (
            ("SECRET_KEY", config.get("SECRET_KEY")),
            ("STRIPE_SECRET_KEY", config.get("STRIPE_SECRET_KEY")),
            ("STRIPE_WEBHOOK_SECRET", config.get("STRIPE_WEBHOOK_SECRETS")),
            ("DATABASE_URL", config.get("SQLALCHEMY_DATABASE_URI")),
        )
        if not value
    ]
    if missing:
        raise ConfigError(
            "Refusing to start in production: missing " + ", ".join(missing)
            + ". Set them in the environment (see .env.example), or set APP_ENV=development to run locally."
        )
    if config.get("DEBUG") or _flag("FLASK_DEBUG"):
        raise ConfigError("Refusing to start in production with DEBUG on.")
    if config.get("STRIPE_OFFLINE"):
        raise ConfigError("Refusing to start in production with the offline Stripe emulator (STRIPE_OFFLINE).")
    if str(config["STRIPE_SECRET_KEY"]).startswith(("sk_live_", "rk_live_")) and not config.get("ALLOW_LIVE_PAYMENTS"):
        raise ConfigError(
            "Refusing to start with a live Stripe key: set ALLOW_LIVE_PAYMENTS=1 to take real payments."
        )
    _check_weak_settings(config)


def _guesses_log10(secret: str, *related: str) -> tuple[float, int]:
    """zxcvbn's estimate of how many guesses find `secret` (log10), and its 0-4 score."""
    from zxcvbn import zxcvbn  # 40 ms of word lists: loaded only where production is checked

    estimate = zxcvbn(secret[:ZXCVBN_MAX_LENGTH], user_inputs=[word for word in related if word])
    return estimate["guesses_log10"], estimate["score"]


def _check_weak_settings(config: dict) -> None:
    refuse = "Refusing to start in production: "
    secret_key = str(config["SECRET_KEY"])
    if len(secret_key) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(
            f"{refuse}SECRET_KEY is shorter than {MIN_SECRET_KEY_LENGTH} characters. "
            "Use a long random one, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(48))'."
        )
    if _guesses_log10(secret_key)[0] < MIN_SECRET_KEY_GUESSES_LOG10:
        raise ConfigError(
            f"{refuse}SECRET_KEY is easy to guess (repeated characters, words or a pattern). "
            "Use a random one, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(48))'."
        )
    if config.get("ADMIN_USERNAME"):
        password = (config.get("ADMIN_PASSWORD") or "").strip()
        if len(password) < MIN_ADMIN_PASSWORD_LENGTH:
            raise ConfigError(
                f"{refuse}ADMIN_USERNAME is set but ADMIN_PASSWORD is shorter than "
                f"{MIN_ADMIN_PASSWORD_LENGTH} characters. Set a long random password, or unset ADMIN_USERNAME."
            )
        if _guesses_log10(password, config["ADMIN_USERNAME"], "admin", "operator", "shop")[1] < MIN_ADMIN_PASSWORD_SCORE:
            raise ConfigError(
                f"{refuse}ADMIN_PASSWORD is easy to guess (repeated characters, a common word or the username). "
                "Set a random one, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(24))'."
            )
    if not STRIPE_KEY.fullmatch(str(config["STRIPE_SECRET_KEY"])):
        raise ConfigError(
            f"{refuse}STRIPE_SECRET_KEY must be a secret (sk_...) or restricted (rk_...) key, "
            "e.g. sk_test_ followed by the rest of the key from the Dashboard."
        )
    if not all(WEBHOOK_SECRET.fullmatch(secret) for secret in config["STRIPE_WEBHOOK_SECRETS"]):
        raise ConfigError(
            f"{refuse}STRIPE_WEBHOOK_SECRET must be Stripe's signing secret (whsec_...), "
            "or several of them separated by commas while rotating."
        )
    if config.get("STRIPE_API_BASE") and not config.get("ALLOW_STRIPE_API_BASE"):
        raise ConfigError(
            f"{refuse}STRIPE_API_BASE would send the secret key to "
            f"{config['STRIPE_API_BASE']}; unset it, or set ALLOW_STRIPE_API_BASE=1 if that host is yours."
        )


def development_warnings(config: dict) -> list[str]:
    """What a developer running on real Stripe keys must hear at start: each missing or
    suspicious setting, in one line each (empty offline, where the emulator needs nothing)."""
    key = str(config.get("STRIPE_SECRET_KEY") or "")
    if config.get("STRIPE_OFFLINE") or not key:
        return []
    live = key.startswith(("sk_live_", "rk_live_"))
    warnings = [
        f"Using real Stripe in {'LIVE' if live else 'test'} mode with STRIPE_SECRET_KEY={key[:8]}…: "
        "the offline banner is off and payments go to your Stripe account."
    ]
    if live:
        warnings.append("STRIPE_SECRET_KEY is a LIVE key in development: real cards are charged. Use an sk_test_ key.")
    elif not key.startswith(("sk_test_", "rk_test_")):
        warnings.append("STRIPE_SECRET_KEY is not a secret key (sk_test_...) or restricted key (rk_test_...): Stripe will refuse it.")
    secrets = config.get("STRIPE_WEBHOOK_SECRETS") or []
    if not secrets:
        warnings.append(
            "STRIPE_WEBHOOK_SECRET is not set: every webhook gets 503 and no order is ever marked paid. "
            "Run `stripe listen --forward-to localhost:5000/webhooks/stripe` and set it to the whsec_... it prints."
        )
    for secret in secrets:
        if not secret.startswith("whsec_"):
            warnings.append(f"STRIPE_WEBHOOK_SECRET {secret[:6]}… does not start with whsec_: no webhook will verify.")
    return warnings
