"""What the platform needs from the app: a health check and logs of one line per event."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .extensions import db

log = logging.getLogger("shop.ops")
bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """200 when the database answers, 503 when it does not. Sets no cookie."""
    try:
        db.session.execute(text("SELECT 1"))
        status, code = "ok", 200
    except SQLAlchemyError as exc:
        log.error("health check: database unavailable: %s", exc.__class__.__name__)
        status, code = "unavailable", 503
    finally:
        db.session.rollback()
    response = jsonify(status=status)
    response.status_code = code
    response.headers["Cache-Control"] = "no-store"
    return response


class OneLineFormatter(logging.Formatter):
    """Keeps multi-line messages and tracebacks on one line, so each event is one log line."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "").replace("\n", " | ")
