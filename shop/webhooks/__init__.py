"""Stripe's webhook: the only way an order becomes paid."""
from flask import Blueprint

from ..extensions import csrf

bp = Blueprint("webhooks", __name__)
csrf.exempt(bp)  # Stripe signs its requests; there is no browser form to protect

from . import views  # noqa: E402,F401  (registers the routes)
