"""The shop's single page: products, the checkout form and the shopper's orders."""
from flask import Blueprint

bp = Blueprint("catalog", __name__)

from . import views  # noqa: E402,F401  (registers the routes)
