"""Browser identity without accounts: an unguessable id in the signed session cookie."""
from __future__ import annotations

import secrets

from flask import session


def current_shopper_id(create: bool = False) -> str | None:
    shopper_id = session.get("shopper_id")
    if shopper_id is None and create:
        shopper_id = secrets.token_urlsafe(24)
        session["shopper_id"] = shopper_id
        session.permanent = True
    return shopper_id
