"""gunicorn settings for production: `gunicorn backoffice.wsgi` reads this file from the
working directory (or pass `-c gunicorn.conf.py`). The environment overrides each default:

    WEB_BIND      address to listen on                   (default 0.0.0.0:$PORT, PORT 8000)
    WEB_WORKERS   worker processes                       (default: one per CPU core)
    WEB_THREADS   threads per worker (gthread when > 1)  (default 4)
    WEB_TIMEOUT   seconds before a silent worker is restarted (default 30)

Why these defaults (the intake benchmark in docs/performance.md, "API", compares them with
`bench/run.py --only api --api-configs`): one process per core for the Python work, and
threads so that a worker does not sit idle while a request waits for PostgreSQL. Creating an
order with an Idempotency-Key commits three times (the key, the order with its event, the
stored response) and the database cache's throttle a fourth; a thread waiting on a commit lets
another run. gthread workers also keep client connections alive, where sync workers close
them after every response.

Each thread keeps its own database connection for `CONN_MAX_AGE` seconds: size PostgreSQL's
`max_connections` for workers x threads x machines, plus the task cluster.
"""

import os

bind = os.environ.get("WEB_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_WORKERS", os.cpu_count() or 1))
threads = int(os.environ.get("WEB_THREADS", "4"))
worker_class = "gthread" if threads > 1 else "sync"
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = timeout
# Behind a proxy (nginx, a load balancer) that speaks keep-alive to the clients.
keepalive = 5
# Recycle workers now and then so a slow leak cannot grow forever; the jitter keeps them from
# restarting all at once.
max_requests = 10_000
max_requests_jitter = 1_000
# Access logs are the proxy's job; errors go to stderr.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("WEB_LOG_LEVEL", "warning")


def post_worker_init(worker):
    # Alert evaluation must not depend on the task cluster alone (it cannot report its own
    # death): each web worker also runs the watchdog; a claim in the database lets one
    # evaluation through per interval, whoever runs it.
    from backoffice.monitoring.watchdog import start_watchdog

    start_watchdog()
