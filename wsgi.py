"""Entry point for gunicorn (`wsgi:app`) and the flask CLI (`flask --app wsgi ...`)."""
import sys

from config import ConfigError
from shop import create_app

try:
    app = create_app()
except ConfigError as exc:
    # A configuration mistake, not a bug: one clear line instead of a traceback.
    print(f"Error: {exc}", file=sys.stderr)
    sys.exit(1)
