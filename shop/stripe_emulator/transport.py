"""Talking to the app without a socket: the SDK's HTTP client and the webhook transports.

In-process requests run in a fresh `contextvars.Context`, so the inner request gets its own
Flask app context and SQLAlchemy session instead of sharing (and committing) the caller's.
"""
from __future__ import annotations

import contextvars
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import stripe
from flask import Flask, has_request_context, request
from requests.structures import CaseInsensitiveDict
from werkzeug.test import Client, TestResponse

from .addresses import SERVER_ORIGIN_KEY, server_origin
from .core import Transport

T = TypeVar("T")


def _isolated(call: Callable[[], T]) -> T:
    return contextvars.Context().run(call)


def wsgi_request(
    app: Flask,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | str | None = None,
    *,
    origin: str | None = None,
    environ: Mapping[str, Any] | None = None,
) -> TestResponse:
    """Dispatch one request into `app`'s WSGI stack (ProxyFix and all), as if it came over HTTP.

    It is addressed to `url`, or to `url`'s path at `origin` when given; `environ` adds
    WSGI environ entries.
    """
    parts = urlsplit(url)
    return _isolated(
        lambda: Client(app).open(
            parts.path,
            method=method.upper(),
            base_url=origin or f"{parts.scheme}://{parts.netloc}",
            query_string=parts.query,
            headers=dict(headers),
            data=body,
            environ_overrides=dict(environ or {}),
        )
    )


class InProcessHTTPClient(stripe.HTTPClient):
    """A `stripe.HTTPClient` that serves the SDK's requests from the emulator in the same app.

    With `follow_the_shop` (no `STRIPE_EMULATOR_URL` configured), a call made while the shop
    serves a request reaches the API at that request's own address: the session's hosted page
    is then wherever the shopper reached the shop, and its webhooks go to the socket that
    request came in on. Outside a request (CLI commands) the SDK's base address is used as is.
    """

    name = "stripe_emulator_in_process"

    def __init__(self, app: Flask, follow_the_shop: bool = True) -> None:
        super().__init__()
        self._app = app
        self._follow_the_shop = follow_the_shop

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        origin, environ = None, None
        if self._follow_the_shop and has_request_context():
            origin = request.host_url.rstrip("/")
            environ = {SERVER_ORIGIN_KEY: server_origin(request.environ)}
        response = wsgi_request(self._app, method, url, headers or {}, post_data, origin=origin, environ=environ)
        return response.get_data(as_text=True), response.status_code, CaseInsensitiveDict(response.headers.items())

    def request_stream(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError("The Stripe emulator does not stream responses.")

    def close(self) -> None:
        """Nothing to release: no sockets are opened."""


def wsgi_transport(app: Flask) -> Transport:
    """Deliver webhooks by POSTing into the same app's WSGI stack."""

    def send(url: str, body: bytes, headers: dict[str, str]) -> int:
        return wsgi_request(app, "POST", url, headers, body).status_code

    return send


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Stripe doesn't follow a webhook endpoint's redirects: a 3xx is a failed delivery."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def http_transport(url: str, body: bytes, headers: dict[str, str]) -> int:
    """Deliver a webhook over HTTP; connection failures raise OSError (URLError)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _opener.open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
