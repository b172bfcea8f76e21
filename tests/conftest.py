"""Fixtures: the app on a fresh database (SQLite and PostgreSQL), clients, signed events.

Every test that uses `app` runs once per database backend. PostgreSQL is reached at
TEST_DATABASE_URL (default: the local server's `postgres` database); the suite creates its
own database there and drops it at the end. Redis (for the rate limit tests) is reached at
TEST_REDIS_URL. Without a reachable server those tests skip, except under CI=true, where
they fail.
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import URL, create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from shop import create_app
from shop.cli import seed_products
from shop.extensions import db
from tests.helpers import ShopClient

PG_ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
# A Redis database where the rate limit tests count checkouts, each test under its own key prefix.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: run this test on SQLite only")
    config.addinivalue_line("markers", "postgres_only: run this test on PostgreSQL only")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" not in metafunc.fixturenames:
        return
    backends = ["sqlite", "postgresql"]
    if metafunc.definition.get_closest_marker("sqlite_only"):
        backends = ["sqlite"]
    if metafunc.definition.get_closest_marker("postgres_only"):
        backends = ["postgresql"]
    metafunc.parametrize("database_url", backends, indirect=True)


def make_app(database_url: str, **overrides) -> Flask:
    return create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": database_url, **overrides})


def _migrate(database_url: str) -> None:
    app = make_app(database_url)
    with app.app_context():
        upgrade()
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file, copied for each test (much faster than migrating each time)."""
    path = tmp_path_factory.mktemp("sqlite") / "template.sqlite"
    _migrate(f"sqlite:///{path}")
    return str(path)


@contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[URL]:
    """Create an empty database on the test server and drop it afterwards.

    Skips (fails under CI) when the server can't be reached.
    """
    admin_url = make_url(PG_ADMIN_URL)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect():
            pass
    except OperationalError as exc:
        message = (
            f"PostgreSQL is not reachable at {admin_url.render_as_string(hide_password=True)} ({exc.orig}). "
            "Start it, or point TEST_DATABASE_URL at a server where this user may create databases."
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A migrated PostgreSQL database of the suite's own, dropped at the end."""
    with fresh_postgres_database("shop_test") as url:
        rendered = url.render_as_string(hide_password=False)
        _migrate(rendered)
        yield rendered


@pytest.fixture
def redis_url() -> str:
    """TEST_REDIS_URL. Skips (fails under CI) when the server can't be reached."""
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = (
            f"Redis is not reachable at {TEST_REDIS_URL} ({exc}). "
            "Start it, or point TEST_REDIS_URL at a Redis database the tests may write to."
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    finally:
        client.close()
    return TEST_REDIS_URL


@pytest.fixture
def redis_key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own (RATELIMIT_KEY_PREFIX), so runs sharing the server never
    count each other's requests; its keys are deleted afterwards."""
    prefix = f"shop-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"*{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "shop.sqlite"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_database")
    engine = create_engine(url)
    with engine.begin() as conn:
        tables = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
        ).scalars().all()
        if tables:
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@contextmanager
def seeded_app(database_url: str, **overrides: Any) -> Iterator[Flask]:
    """An app (testing config plus overrides) on the given database, with the catalogue."""
    app = make_app(database_url, **overrides)
    with app.app_context():
        seed_products()
    try:
        yield app
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    with seeded_app(database_url) as app:
        yield app


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@pytest.fixture
def shop(app: Flask) -> ShopClient:
    """A shopper's browser: one cookie jar, with helpers to check out and pay."""
    return ShopClient(app)
