"""Production safety: refusing unsafe configurations, security headers, cookies, /healthz."""
from __future__ import annotations

import sys
from typing import Any

import pytest
from flask import Flask

from config import ConfigError
from shop import create_app
from shop.extensions import db
from tests.processes import VENV_BIN, app_env, run


@pytest.fixture(autouse=True)
def no_debug_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLASK_DEBUG", raising=False)


def production_settings(database_url: str = "sqlite:///:memory:", **overrides: Any) -> dict[str, Any]:
    return {
        "APP_ENV": "production",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SECRET_KEY": "Jq4vN8-rT2wXc6LpZ0aHs9YbEm3KdUf7",
        "STRIPE_SECRET_KEY": "sk_test_dummy",
        "STRIPE_WEBHOOK_SECRETS": ["whsec_dummy"],
        "DEBUG": False,
        "ALLOW_LIVE_PAYMENTS": False,
        **overrides,
    }


def production_app(**overrides: Any) -> Flask:
    return create_app(production_settings(**overrides))


def test_a_complete_production_configuration_starts() -> None:
    app = production_app()
    assert app.config["APP_ENV"] == "production" and not app.debug
    assert not app.config["STRIPE_OFFLINE"]


@pytest.mark.parametrize(
    "setting, value, named",
    [
        ("SECRET_KEY", None, "SECRET_KEY"),
        ("STRIPE_SECRET_KEY", None, "STRIPE_SECRET_KEY"),
        ("STRIPE_WEBHOOK_SECRETS", [], "STRIPE_WEBHOOK_SECRET"),
        ("SQLALCHEMY_DATABASE_URI", None, "DATABASE_URL"),
    ],
)
def test_production_refuses_a_missing_secret(setting: str, value: Any, named: str) -> None:
    with pytest.raises(ConfigError, match=f"Refusing to start in production: missing {named}"):
        production_app(**{setting: value})


def test_production_names_every_missing_secret_at_once() -> None:
    with pytest.raises(ConfigError) as error:
        production_app(SECRET_KEY=None, STRIPE_SECRET_KEY=None, STRIPE_WEBHOOK_SECRETS=[])
    assert "missing SECRET_KEY, STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET." in str(error.value)


def test_production_refuses_debug() -> None:
    with pytest.raises(ConfigError, match="DEBUG on"):
        production_app(DEBUG=True)


def test_production_refuses_flask_debug_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_DEBUG", "1")
    with pytest.raises(ConfigError, match="DEBUG on"):
        production_app()


@pytest.mark.parametrize("key", ["sk_live_abc", "rk_live_abc"])
def test_production_refuses_a_live_key_unless_allowed(key: str) -> None:
    with pytest.raises(ConfigError, match="set ALLOW_LIVE_PAYMENTS=1"):
        production_app(STRIPE_SECRET_KEY=key)
    assert production_app(STRIPE_SECRET_KEY=key, ALLOW_LIVE_PAYMENTS=True).config["STRIPE_SECRET_KEY"] == key


def test_production_refuses_the_offline_emulator() -> None:
    with pytest.raises(ConfigError, match="offline Stripe emulator"):
        production_app(STRIPE_OFFLINE=True)


def test_an_unknown_app_env_is_refused() -> None:
    with pytest.raises(ConfigError, match="APP_ENV must be one of"):
        create_app({"APP_ENV": "prod"})


# A production environment that starts; each weak variant below changes one setting.
STRONG_ENV = {
    "APP_ENV": "production",
    "SECRET_KEY": "Jq4vN8-rT2wXc6LpZ0aHs9YbEm3KdUf7",
    "DATABASE_URL": "sqlite:///:memory:",
    "STRIPE_SECRET_KEY": "sk_test_dummy",
    "STRIPE_WEBHOOK_SECRET": "whsec_dummy",
    "ADMIN_USERNAME": "operator",
    "ADMIN_PASSWORD": "kettle-Orbit-93-lantern",
}


@pytest.mark.parametrize(
    "weak, message",
    [
        (
            {"SECRET_KEY": "x" * 31},
            "Error: Refusing to start in production: SECRET_KEY is shorter than 32 characters.",
        ),
        (
            {"ADMIN_PASSWORD": "p" * 11},
            "Error: Refusing to start in production: ADMIN_USERNAME is set but ADMIN_PASSWORD is shorter than 12 characters.",
        ),
        (
            {"ADMIN_PASSWORD": " "},
            "Error: Refusing to start in production: ADMIN_USERNAME is set but ADMIN_PASSWORD is shorter than 12 characters.",
        ),
        (
            {"ADMIN_PASSWORD": ""},
            "Error: Refusing to start in production: ADMIN_USERNAME is set but ADMIN_PASSWORD is shorter than 12 characters.",
        ),
        (
            {"STRIPE_SECRET_KEY": "pk_test_abc"},
            "Error: Refusing to start in production: STRIPE_SECRET_KEY must be a secret (sk_...) or restricted (rk_...) key,",
        ),
        (
            {"STRIPE_API_BASE": "https://api.example.net"},
            "Error: Refusing to start in production: STRIPE_API_BASE would send the secret key to https://api.example.net;",
        ),
    ],
)
def test_a_weak_production_setting_exits_non_zero_with_its_message(weak: dict[str, str], message: str) -> None:
    result = run([str(VENV_BIN / "flask"), "--app", "wsgi", "routes"], app_env(**{**STRONG_ENV, **weak}))
    assert result.returncode != 0
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stdout + result.stderr


def test_the_strong_production_environment_starts() -> None:
    """The baseline of the test above: without its one weak setting, the same environment runs."""
    result = run([str(VENV_BIN / "flask"), "--app", "wsgi", "routes"], app_env(**STRONG_ENV))
    assert result.returncode == 0, result.stderr
    assert "/checkout" in result.stdout


EASY_TO_GUESS = "Error: Refusing to start in production: SECRET_KEY is easy to guess"
WEAK_PASSWORD = "Error: Refusing to start in production: ADMIN_PASSWORD is easy to guess"
NOT_A_KEY = "Error: Refusing to start in production: STRIPE_SECRET_KEY must be a secret (sk_...) or restricted (rk_...) key,"
NOT_A_SIGNING_SECRET = "Error: Refusing to start in production: STRIPE_WEBHOOK_SECRET must be Stripe's signing secret (whsec_...)"


@pytest.mark.parametrize(
    "weak, message",
    [
        ({"SECRET_KEY": " " * 32}, EASY_TO_GUESS),
        ({"SECRET_KEY": "a" * 32}, EASY_TO_GUESS),
        ({"SECRET_KEY": "abcdefghijklmnopqrstuvwxyz012345"}, EASY_TO_GUESS),
        ({"ADMIN_PASSWORD": "aaaaaaaaaaaa"}, WEAK_PASSWORD),
        ({"ADMIN_PASSWORD": "password1234"}, WEAK_PASSWORD),
        ({"ADMIN_PASSWORD": "operatoroperator"}, WEAK_PASSWORD),
        ({"STRIPE_SECRET_KEY": "sk_"}, NOT_A_KEY),
        ({"STRIPE_SECRET_KEY": "sk_test_"}, NOT_A_KEY),
        ({"STRIPE_SECRET_KEY": "rk_live"}, NOT_A_KEY),
        ({"STRIPE_WEBHOOK_SECRETS": ["x"]}, NOT_A_SIGNING_SECRET),
        ({"STRIPE_WEBHOOK_SECRETS": ["whsec_new", "old"]}, NOT_A_SIGNING_SECRET),
        ({"STRIPE_WEBHOOK_SECRETS": ["whsec_"]}, NOT_A_SIGNING_SECRET),
    ],
)
def test_production_refuses_guessable_secrets_and_malformed_stripe_keys(weak: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        production_app(**{"ADMIN_USERNAME": "operator", "ADMIN_PASSWORD": "kettle-Orbit-93-lantern", **weak})
    assert f"Error: {refused.value}".startswith(message)


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("CHECKOUT_STOCK_SHARE", "abc", "CHECKOUT_STOCK_SHARE='abc' must be a number above 0 and at most 1."),
        ("CHECKOUT_STOCK_SHARE", "-1", "CHECKOUT_STOCK_SHARE='-1' must be a number above 0 and at most 1."),
        ("CHECKOUT_STOCK_SHARE", "0", "CHECKOUT_STOCK_SHARE='0' must be a number above 0 and at most 1."),
        ("CHECKOUT_STOCK_SHARE", "1.5", "CHECKOUT_STOCK_SHARE='1.5' must be a number above 0 and at most 1."),
        ("CHECKOUT_STOCK_SHARE", "nan", "CHECKOUT_STOCK_SHARE='nan' must be a number above 0 and at most 1."),
        ("STRIPE_MAX_NETWORK_RETRIES", "x", "STRIPE_MAX_NETWORK_RETRIES='x' must be a whole number from 0 to 10."),
        ("STRIPE_MAX_NETWORK_RETRIES", "2.5", "STRIPE_MAX_NETWORK_RETRIES='2.5' must be a whole number from 0 to 10."),
        ("TRUSTED_PROXY_HOPS", "-1", "TRUSTED_PROXY_HOPS='-1' must be a whole number from 0 to 10."),
        ("IPV6_CLIENT_PREFIX", "129", "IPV6_CLIENT_PREFIX='129' must be a whole number from 1 to 128."),
        ("DATABASE_POOL_SIZE", "1", "DATABASE_POOL_SIZE='1' must be a whole number from 2 to 100."),
    ],
)
def test_a_malformed_number_is_refused_with_one_line(setting: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:", setting: value})
    assert str(refused.value) == f"Refusing to start: {message}"


@pytest.mark.parametrize(
    "app_env_name, setting, value",
    [("production", "CHECKOUT_STOCK_SHARE", "abc"), ("development", "STRIPE_MAX_NETWORK_RETRIES", "x")],
)
def test_a_malformed_number_in_the_environment_exits_with_one_line(app_env_name: str, setting: str, value: str) -> None:
    """Through the real entry point: no traceback, in any environment."""
    result = run([str(VENV_BIN / "flask"), "--app", "wsgi", "routes"], app_env(**{**STRONG_ENV, "APP_ENV": app_env_name, setting: value}))
    assert result.returncode != 0
    assert result.stderr.startswith(f"Error: Refusing to start: {setting}={value!r} must be a "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("key", ["sk_test_abc", "rk_test_abc"])
def test_production_accepts_secret_and_restricted_keys(key: str) -> None:
    assert production_app(STRIPE_SECRET_KEY=key).config["STRIPE_SECRET_KEY"] == key


def test_production_accepts_stripe_api_base_only_with_its_opt_in() -> None:
    with pytest.raises(ConfigError, match="ALLOW_STRIPE_API_BASE=1"):
        production_app(STRIPE_API_BASE="http://127.0.0.1:9")
    app = production_app(STRIPE_API_BASE="http://127.0.0.1:9", ALLOW_STRIPE_API_BASE=True)
    assert app.config["STRIPE_API_BASE"] == "http://127.0.0.1:9"


def test_production_without_an_operator_view_needs_no_admin_password() -> None:
    assert production_app(ADMIN_USERNAME=None, ADMIN_PASSWORD=None).config["ADMIN_USERNAME"] is None


def test_flask_cli_without_secrets_exits_with_one_clear_line() -> None:
    result = run([str(VENV_BIN / "flask"), "--app", "wsgi", "routes"], app_env(APP_ENV="production"))
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "Error: Refusing to start in production: missing SECRET_KEY, STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, "
        "DATABASE_URL. Set them in the environment (see .env.example), or set APP_ENV=development to run locally."
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_production_never_imports_the_stripe_emulator(tmp_path) -> None:
    env = app_env(
        APP_ENV="production",
        SECRET_KEY="a-long-random-production-secret-key",
        DATABASE_URL=f"sqlite:///{tmp_path / 'shop.sqlite'}",
        STRIPE_SECRET_KEY="sk_test_dummy",
        STRIPE_WEBHOOK_SECRET="whsec_dummy",
    )
    code = (
        "import sys, wsgi; client = wsgi.app.test_client(); client.get('/healthz'); client.get('/'); "
        "print(sorted(name for name in sys.modules if name.startswith('shop.')))"
    )
    result = run([sys.executable, "-c", code], env)
    assert result.returncode == 0, result.stderr
    assert "shop.stripe_gateway" in result.stdout  # the check below looks at the right list
    assert "shop.stripe_emulator" not in result.stdout


# --- Security headers ---------------------------------------------------------------------


def test_every_response_carries_the_security_headers(client) -> None:
    for response in (client.get("/"), client.get("/static/css/shop.css"), client.get("/no-such-page")):
        headers = response.headers
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
        assert "camera=()" in headers["Permissions-Policy"]
        assert "Strict-Transport-Security" not in headers  # only production promises HTTPS


def test_content_security_policy_allows_no_inline_code(client) -> None:
    policy = client.get("/").headers["Content-Security-Policy"]
    directives = dict(directive.split(" ", 1) for directive in policy.split("; "))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["img-src"] == "'self' data:"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'self'"
    assert directives["object-src"] == "'none'"
    # The 303 after the checkout form may lead to Stripe Checkout or, offline, the emulator.
    assert directives["form-action"].split() == ["'self'", "https://checkout.stripe.com", "http://127.0.0.1:5000"]


def test_shop_pages_have_no_inline_script_or_style(client) -> None:
    html = client.get("/").get_data(as_text=True)
    assert "<script>" not in html and "<style" not in html and " style=" not in html


def test_production_adds_hsts_and_allows_only_stripe_checkout() -> None:
    response = production_app().test_client().get("/healthz")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "form-action 'self' https://checkout.stripe.com;" in response.headers["Content-Security-Policy"]


@pytest.mark.sqlite_only
def test_production_session_cookie_is_secure_httponly_and_lax(database_url: str) -> None:
    app = production_app(database_url=database_url)
    response = app.test_client().get("/", base_url="https://shop.example")
    assert response.status_code == 200
    cookie = response.headers["Set-Cookie"]
    assert "; Secure" in cookie and "; HttpOnly" in cookie and "; SameSite=Lax" in cookie


@pytest.mark.sqlite_only
def test_the_session_cookie_follows_a_rotated_secret_key(client, app: Flask) -> None:
    client.get("/")  # the browser's session cookie, signed with the current key
    with client.session_transaction() as session:
        shopper = session["shopper_id"]
    old_key = app.secret_key
    app.secret_key = old_key + "-rotated"
    app.config["SECRET_KEY_FALLBACKS"] = [old_key]
    with client.session_transaction() as session:
        assert session["shopper_id"] == shopper  # the old key still verifies, as a fallback
    app.config["SECRET_KEY_FALLBACKS"] = []
    with client.session_transaction() as session:
        assert "shopper_id" not in session  # and no longer once it is dropped


# --- /healthz -----------------------------------------------------------------------------


def test_healthz_answers_ok_without_a_session_cookie(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}
    assert "Set-Cookie" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"


def test_healthz_answers_503_when_the_database_is_down(tmp_path) -> None:
    missing = tmp_path / "no-such-dir" / "shop.sqlite"  # SQLite cannot open a file here
    app = production_app(database_url=f"sqlite:///{missing}")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable"}
    assert "Set-Cookie" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize(
    "platform, logged",
    [
        ({}, "client addresses: the connection's own address; X-Forwarded-* headers are ignored (TRUSTED_PROXY_HOPS=0)"),
        ({"DYNO": "web.1"}, "client addresses: X-Forwarded-For, the address 1 proxy hop(s) from the right (TRUSTED_PROXY_HOPS=1)"),
        ({"TRUSTED_PROXY_HOPS": "2"}, "client addresses: X-Forwarded-For, the address 2 proxy hop(s) from the right"),
    ],
)
def test_production_logs_which_address_it_trusts(platform: dict[str, str], logged: str) -> None:
    result = run([str(VENV_BIN / "flask"), "--app", "wsgi", "routes"], app_env(**STRONG_ENV, **platform))
    assert result.returncode == 0, result.stderr
    assert logged in result.stdout


@pytest.mark.parametrize("setting", ["GUNICORN_THREADS", "PORT"])
def test_gunicorn_refuses_a_malformed_number_in_one_line(setting: str) -> None:
    """gunicorn.conf.py's own settings. (A malformed WEB_CONCURRENCY stops gunicorn before it reads the file.)"""
    result = run([str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--check-config", "wsgi:app"],
                 app_env(**{**STRONG_ENV, setting: "x"}))
    assert result.returncode != 0
    assert result.stderr.startswith(f"Error: Refusing to start: {setting}='x' must be a whole number from 1 to "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stdout + result.stderr
