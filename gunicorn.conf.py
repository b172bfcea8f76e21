"""gunicorn settings from the platform's environment (PORT, WEB_CONCURRENCY)."""
import os
import sys

from config import ConfigError, Number


def _whole_number(name: str, default: str, low: int, high: int) -> int:
    """The setting, or the same one-line refusal the app gives for a malformed number."""
    try:
        return int(Number(int, low, high).parse(name, os.environ.get(name) or default))
    except ConfigError as exc:
        sys.exit(f"Error: {exc}")


bind = f"0.0.0.0:{_whole_number('PORT', '5000', 1, 65535)}"
workers = _whole_number("WEB_CONCURRENCY", "2", 1, 64)
# Threads, not processes, are what a checkout waiting on Stripe holds: at 400 ms per call, 2
# workers x 4 threads start at most 20 checkouts a second however fast the code is, and a flash
# sale's crowd queues behind them for tens of seconds (bench/run.py's flash sale; README
# "Performance"). 32 threads per worker keep 64 Stripe calls in flight, and a waiting thread
# holds no database connection (checkout commits before it calls Stripe), so the pool's 15
# connections per worker serve them; the CPU, not the threads, then sets the pace.
threads = _whole_number("GUNICORN_THREADS", "32", 1, 256)
worker_class = "gthread"
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = "-"
errorlog = "-"
# forwarded_allow_ips is left to gunicorn's default: the FORWARDED_ALLOW_IPS environment variable
# (Heroku's Python buildpack sets it to '*', for its router), else only 127.0.0.1 and ::1. The app
# itself trusts X-Forwarded-* only as far as TRUSTED_PROXY_HOPS says (shop/client_address.py).
control_socket_disable = True
# Production loads the app once in the master, before forking: an unsafe configuration then
# stops gunicorn with wsgi.py's one-line error instead of crash-looping every worker. (The app
# opens no connection while it is built.) Development keeps per-worker loading, because the
# offline Stripe emulator opens the database while the app is built.
preload_app = os.environ.get("APP_ENV", "production") not in ("development", "testing")
# Production: each worker listens on a socket of its own (SO_REUSEPORT) and the kernel spreads
# new connections evenly between them. With one shared socket a burst of keep-alive
# connections can all land on whichever worker wakes first (a gthread worker accepts more
# connections than it has threads) while the other idles: 2 of 25 one-second loads of 50
# connections in bench/run.py, against 0 of 25 with reuse_port. The price: connections still
# queued on a worker that exits (a timeout, a restart) are reset. Development and tests keep
# the shared socket, so a second server started on a port in use fails instead of sharing it.
reuse_port = os.environ.get("APP_ENV", "production") not in ("development", "testing")
