"""Security headers on every response.

The Content-Security-Policy allows no inline script or style. `form-action` lists where a
form may lead, redirects included (Chromium checks the 303 to Checkout against it): the
shop itself, Stripe Checkout and, when `STRIPE_API_BASE` points at a stand-in such as the
offline emulator, that stand-in's origin. A view that needs a different policy sets its
own header; it is left as is.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from flask import Flask

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

STRIPE_CHECKOUT_ORIGIN = "https://checkout.stripe.com"
HSTS = "max-age=63072000; includeSubDomains"


def content_security_policy(*form_targets: str | None) -> str:
    """The shop's policy. Each URL given adds its origin to form-action (e.g. a stand-in Stripe)."""
    form_action = ["'self'", STRIPE_CHECKOUT_ORIGIN]
    for target in filter(None, form_targets):
        parts = urlsplit(target)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in form_action:
            form_action.append(origin)
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "form-action " + " ".join(form_action),
            "frame-ancestors 'none'",
            "base-uri 'self'",
            "object-src 'none'",
        ]
    )


def init_app(app: Flask) -> None:
    """Add the headers to every response. Call after anything that sets STRIPE_API_BASE."""
    headers = {
        "Content-Security-Policy": content_security_policy(app.config.get("STRIPE_API_BASE")),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "X-Frame-Options": "DENY",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    }
    if app.config["APP_ENV"] == "production":
        headers["Strict-Transport-Security"] = HSTS
    app.wsgi_app = SecurityHeaders(app.wsgi_app, headers)  # type: ignore[method-assign]


class SecurityHeaders:
    """WSGI middleware adding each header the response doesn't already have (any case).

    Every response passes here, error pages included. The headers are a plain list at this
    level: a set lookup per header, where Flask's response headers cost a search of the list
    and a validation of the value per header.
    """

    def __init__(self, app: WSGIApplication, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = [(name.lower(), (name, value)) for name, value in headers.items()]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def start_with_headers(status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None):
            present = {name.lower() for name, _ in headers}
            missing = [header for name, header in self.headers if name not in present]
            return start_response(status, headers + missing, exc_info)

        return self.app(environ, start_with_headers)
