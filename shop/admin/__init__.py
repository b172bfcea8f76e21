"""Operator view at /admin/: orders, refunds, Stripe sync, CSV export and products.

Behind HTTP basic auth (`ADMIN_USERNAME`/`ADMIN_PASSWORD`); without both settings the whole
blueprint answers 404, as if it did not exist.
"""
from __future__ import annotations

import hmac
import logging

from flask import Blueprint, abort, current_app, render_template, request, session
from werkzeug.wrappers import Response

from ..client_address import client_address
from ..extensions import csrf
from ..limits import OPERATOR_BROWSER

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates")
# Checked in `require_operator` instead, after the blueprint has answered 404 or 401.
csrf.exempt(bp)
log = logging.getLogger("shop.admin")


def _credentials_match(username: str, password: str) -> bool:
    config = current_app.config
    # Both comparisons always run, so the timing does not reveal which one failed.
    user_ok = hmac.compare_digest(username.encode(), config["ADMIN_USERNAME"].encode())
    password_ok = hmac.compare_digest(password.encode(), config["ADMIN_PASSWORD"].encode())
    return user_ok and password_ok


@bp.before_request
def require_operator() -> Response | None:
    if not (current_app.config.get("ADMIN_USERNAME") and current_app.config.get("ADMIN_PASSWORD")):
        abort(404)
    auth = request.authorization
    if auth is not None and auth.type == "basic" and _credentials_match(auth.username or "", auth.password or ""):
        # Marks this browser as the operator's: the per-username sign-in limit never holds it.
        session[OPERATOR_BROWSER] = True
        if current_app.config["WTF_CSRF_ENABLED"] and request.method in current_app.config["WTF_CSRF_METHODS"]:
            csrf.protect()
        return None
    if auth is not None:
        log.warning("operator sign-in failed for user %r from %s", auth.username, client_address())
    page = render_template(
        "error.html", title="Sign in required", message="The operator view needs a username and password.", code=401
    )
    return Response(page, 401, {"WWW-Authenticate": 'Basic realm="Shop admin", charset="UTF-8"'}, mimetype="text/html")


@bp.after_request
def never_cache(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


from . import views  # noqa: E402,F401  (registers the routes)
