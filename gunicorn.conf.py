"""gunicorn settings from the platform's environment (PORT, WEB_CONCURRENCY)."""
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = "-"
errorlog = "-"
# Heroku-style routers terminate TLS; the app's ProxyFix trusts one proxy hop.
forwarded_allow_ips = "*"
control_socket_disable = True
