"""Running behind a Heroku-style platform: its database URLs, its proxy, its log collector, app.json."""
from __future__ import annotations

import json
import logging
import re
from contextlib import ExitStack

import pytest
from flask import request, url_for

from config import normalise_database_url
from shop import create_app
from tests.processes import REPO_ROOT, procfile

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) shop\.[\w.]+: .+$")


@pytest.mark.parametrize(
    "given, expected",
    [
        ("postgres://u:p@db.example:5432/shop", "postgresql+psycopg://u:p@db.example:5432/shop"),
        ("postgresql://u:p@db.example/shop?sslmode=require", "postgresql+psycopg://u:p@db.example/shop?sslmode=require"),
        ("postgresql+psycopg://u@db.example/shop", "postgresql+psycopg://u@db.example/shop"),
        ("sqlite:////tmp/shop.sqlite", "sqlite:////tmp/shop.sqlite"),
    ],
)
def test_platform_database_urls_use_the_psycopg3_driver(given: str, expected: str) -> None:
    assert normalise_database_url(given) == expected


def test_forwarded_proto_https_makes_external_urls_https(app) -> None:
    @app.get("/_test/external-url")
    def external_url() -> str:
        return url_for("catalog.index", _external=True)

    client = app.test_client()
    behind_router = client.get(
        "/_test/external-url", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example"}
    )
    assert behind_router.get_data(as_text=True) == "https://shop.example/"
    assert client.get("/_test/external-url").get_data(as_text=True) == "http://localhost/"


def test_forwarded_client_address_is_the_routers_last_hop(app) -> None:
    @app.get("/_test/remote-addr")
    def remote_addr() -> str:
        return request.remote_addr or ""

    response = app.test_client().get("/_test/remote-addr", headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7"})
    assert response.get_data(as_text=True) == "198.51.100.7"  # one trusted hop: a spoofed first entry is ignored


def test_logs_are_one_line_per_event_on_stdout(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    # The factory binds its handler to the stdout of the moment: build the app under capture.
    create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'shop.sqlite'}"})
    capsys.readouterr()
    log = logging.getLogger("shop.test")
    log.info("first event")
    log.warning("a message\nspread over\r\nlines")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("an error with a traceback")
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 3, captured.out
    assert all(LOG_LINE.match(line) for line in lines), lines
    assert lines[1].endswith("a message | spread over | lines")
    assert "Traceback (most recent call last):" in lines[2] and "ValueError: boom" in lines[2]
    assert captured.err == ""


def test_app_json_describes_every_setting() -> None:
    manifest = json.loads((REPO_ROOT / "app.json").read_text())
    assert manifest["addons"] == ["heroku-postgresql", "heroku-redis"]  # heroku-redis sets REDIS_URL
    assert "web" in manifest["formation"]
    env = manifest["env"]
    assert set(env) == {
        "SECRET_KEY", "APP_ENV", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "SHOP_CURRENCY", "SHOP_LOCALE", "SHOP_URL", "ALLOW_LIVE_PAYMENTS",
        "ADMIN_USERNAME", "ADMIN_PASSWORD", "STRIPE_MAX_NETWORK_RETRIES", "WEB_CONCURRENCY", "GUNICORN_THREADS",
        "DATABASE_POOL_SIZE", "CHECKOUT_LIMIT_PER_IP", "CHECKOUT_LIMIT_PER_BROWSER", "CHECKOUT_STOCK_SHARE", "REDIS_TIMEOUT_MS",
        "SHIPPING_COUNTRIES", "SHIPPING_PHONE",
    }
    assert all(setting["description"] for setting in env.values())
    assert env["SECRET_KEY"]["generator"] == "secret"  # 64 hex characters: production wants at least 32
    assert env["APP_ENV"]["value"] == "production"
    assert env["ALLOW_LIVE_PAYMENTS"]["value"] == "0"


def test_procfile_runs_migrations_and_seed_in_the_release_phase() -> None:
    processes = procfile()
    assert processes["release"] == "flask --app wsgi db upgrade && flask --app wsgi seed"
    assert processes["web"].startswith("gunicorn --config gunicorn.conf.py ")


@pytest.mark.postgres_only
def test_a_worker_keeps_every_database_connection_it_opens(database_url: str) -> None:
    """Under load a worker reuses its connections instead of opening and closing one per burst,
    and opens no more than DATABASE_POOL_SIZE: a third for SQLAlchemy's pool, the rest for the
    statements sent straight to psycopg."""
    from shop import reads
    from shop.extensions import db

    app = create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": database_url, "DATABASE_POOL_SIZE": "7"})
    with app.app_context(), ExitStack() as lent:
        orm = [db.engine.raw_connection() for _ in range(2)]
        driver = [lent.enter_context(reads.autocommit_connection()) for _ in range(5)]
        backends = {c.driver_connection.info.backend_pid for c in orm} | {c.info.backend_pid for c in driver}
        assert len(backends) == 7
        for connection in orm:
            connection.close()
        lent.close()
        assert db.engine.pool.checkedin() == 2  # all kept open for the next burst
        with reads.autocommit_connection() as again:
            assert again.info.backend_pid in backends
        db.engine.dispose()
