"""Browser identity without accounts: an unguessable id in the signed session cookie."""
from __future__ import annotations

import secrets

from flask import Flask, session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer


def current_shopper_id(create: bool = False) -> str | None:
    shopper_id = session.get("shopper_id")
    if shopper_id is None and create:
        shopper_id = secrets.token_urlsafe(24)
        session["shopper_id"] = shopper_id
        session.permanent = True
    return shopper_id


class SessionCookie(SecureCookieSessionInterface):
    """Flask's signed session cookie, its serializer built once instead of on every request.

    The keys are read on each request as Flask reads them (SECRET_KEY, SECRET_KEY_FALLBACKS),
    and a new serializer is built when they change. One instance per app.
    """

    def __init__(self) -> None:
        self._built: tuple[tuple, URLSafeTimedSerializer | None] = ((), None)  # (keys, serializer): one swap

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, tuple(app.config["SECRET_KEY_FALLBACKS"] or ()))
        built = self._built
        if built[0] != keys:
            built = self._built = (keys, super().get_signing_serializer(app))
        return built[1]
