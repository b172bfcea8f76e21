"""Security headers on every response.

The Content-Security-Policy allows no inline script or style. `form-action` lists where a
form may lead, redirects included (Chromium checks the 303 to Checkout against it): the
shop itself, Stripe Checkout and, when `STRIPE_API_BASE` points at a stand-in such as the
offline emulator, that stand-in's origin. A view that needs a different policy sets its
own header; it is left as is.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response

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

    @app.after_request
    def add_security_headers(response: Response) -> Response:
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response
