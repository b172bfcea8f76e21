"""Starting a checkout, coming back from Stripe, and asking how an order stands."""
from flask import Blueprint

bp = Blueprint("checkout", __name__)

from . import views  # noqa: E402,F401  (registers the routes)
