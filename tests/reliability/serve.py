"""WSGI module for the concurrency tests' gunicorn: the testing app on $DATABASE_URL.

Testing config derives the webhook secret from SECRET_KEY, so a test app made with
`make_app(same url)` signs events the server accepts. The emulator's worker is off.
"""
import os

from shop import create_app

app = create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": os.environ["DATABASE_URL"]})
