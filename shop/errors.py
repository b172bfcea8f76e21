"""Error pages in the shop's style; JSON for machine clients (webhooks, status polling)."""
from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from flask_limiter import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from .limits import retry_after_seconds

TITLES = {
    400: "That request didn't look right",
    404: "We couldn't find that page",
    405: "That isn't allowed here",
    409: "That was already done",
    413: "That request was too large",
    415: "Unsupported content type",
    429: "Too many checkouts at once",
    500: "Something went wrong on our side",
}


def _wants_json() -> bool:
    return request.blueprint == "webhooks" or request.path.endswith("/status") or request.path.startswith("/_stripe/v1")


def _render(code: int, message: str):
    if _wants_json():
        return jsonify(message=message), code
    title = TITLES.get(code, "Something went wrong")
    return render_template("error.html", title=title, message=message, code=code), code


def init_app(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError):
        return _render(400, "Your session expired or the form was tampered with. Reload the page and try again.")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if error.code is None or error.code < 400:
            return error
        return _render(error.code, error.description or "")

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(error: RateLimitExceeded):
        retry_after = retry_after_seconds(error)
        if request.blueprint == "admin":
            message = f"Too many failed sign-ins. Try again in {_in_words(retry_after)}."
            page = render_template("error.html", title="Too many sign-in attempts", message=message, code=429)
            return page, 429, {"Retry-After": str(retry_after), "Cache-Control": "no-store"}
        page = render_template("rate_limited.html", title=TITLES[429], wait=_in_words(retry_after))
        return page, 429, {"Retry-After": str(retry_after)}

    @app.errorhandler(InternalServerError)
    def server_error(error: InternalServerError):
        return _render(500, "Please try again in a moment. If you were paying, no order was charged twice.")


def _in_words(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = -(-seconds // 60)
    return f"{minutes} minutes"
