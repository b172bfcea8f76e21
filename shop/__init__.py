"""The shop: an application factory wiring config, extensions and blueprints."""
from __future__ import annotations

import logging
import os
import sqlite3
import sys
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from config import CONFIGS, ConfigError, check_production, check_settings, development_warnings

from . import client_address, driver_pool
from .extensions import csrf, db, migrate
from .ops import OneLineFormatter
from .shoppers import SessionCookie


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app for `APP_ENV` (default production), with optional config overrides."""
    overrides = dict(overrides or {})
    env_name = overrides.pop("APP_ENV", None) or os.environ.get("APP_ENV", "production")
    if env_name not in CONFIGS:
        raise ConfigError(f"APP_ENV must be one of {', '.join(CONFIGS)}, not {env_name!r}.")

    app = Flask(__name__, instance_relative_config=True)
    app.session_interface = SessionCookie()
    app.config.from_object(CONFIGS[env_name])
    app.config.update(overrides)
    if not app.config["SQLALCHEMY_DATABASE_URI"] and env_name != "production":
        os.makedirs(app.instance_path, exist_ok=True)
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{os.path.join(app.instance_path, 'shop.sqlite')}"
    check_settings(app.config)
    if not str(app.config["SQLALCHEMY_DATABASE_URI"]).startswith("sqlite"):
        orm_share, _ = driver_pool.shares(int(app.config["DATABASE_POOL_SIZE"]))  # the rest: shop.driver_pool
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            **app.config["SQLALCHEMY_ENGINE_OPTIONS"], "pool_size": orm_share, "max_overflow": 0,
        }
    if env_name == "production":
        check_production(app.config)

    _configure_logging(lean=env_name == "production")
    if env_name == "development":
        for warning in development_warnings(app.config):
            logging.getLogger("shop").warning("%s", warning)
    client_address.init_app(app)

    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(__file__), os.pardir, "migrations"))
    csrf.init_app(app)

    if app.config["STRIPE_OFFLINE"]:
        # Development and tests without Stripe keys: serve a faithful Stripe stand-in.
        from . import stripe_emulator

        stripe_emulator.init_app(app)

    from . import admin, catalog, checkout, cli, errors, filters, limits, ops, security, status_words, webhooks

    filters.init_app(app)
    status_words.init_app(app)
    errors.init_app(app)
    security.init_app(app)
    cli.init_app(app)
    app.register_blueprint(catalog.bp)
    app.register_blueprint(checkout.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(admin.bp)
    limits.init_app(app)
    return app


def _configure_logging(lean: bool) -> None:
    """One line per event on stdout, as platforms expect.

    `lean` (production): records skip what no line of the shop's or gunicorn's shows, the
    caller's file and line and the thread (the logging HOWTO's "Optimization"); every webhook
    writes a line. gunicorn's own lines show the process id, so that stays. Development and
    tests keep it all for pytest's and the debugger's output.
    """
    if lean:
        logging._srcfile = None
        logging.logThreads = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("shop")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """SQLite: enforce foreign keys and let concurrent writers wait instead of failing."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()
