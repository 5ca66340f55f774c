"""Settings for thinnest analytics, read from the environment.

With nothing set, the app runs on embedded defaults: SQLite under ``var/``, the
in-memory channel layer and Celery's filesystem broker. ``DATABASE_URL`` switches
to PostgreSQL; ``DATABASE_REPLICA_URL`` adds a streaming replica for the read
pages and endpoints; ``REDIS_URL`` makes Redis carry both the channel layer and
the Celery broker.
"""

import ipaddress
import os
from pathlib import Path

import dj_database_url

from .env import envbool, envint, envlist

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.getenv("VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = envbool("DEBUG", "false")
SECRET_KEY = os.getenv("SECRET_KEY", "")
if not SECRET_KEY:
    # Embedded default: a key generated once per install, kept out of the repo.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        from django.core.management.utils import get_random_secret_key

        key_file.write_text(get_random_secret_key())
        key_file.chmod(0o600)
    SECRET_KEY = key_file.read_text().strip()

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")
SITE_URL = os.getenv("SITE_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "daphne",
    "accounts.apps.AdminConfig",  # Django's admin, with the login pause
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "ninja",
    "channels",
    "accounts",
    "metrics",
    "pricing",
    "agents",
    "voice",
    "dashboard",
    "billing",
    "audit",
    "alerts",
    "otel",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "thinnest_analytics.middleware.ApiJsonErrorsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    # Before sessions: on the way out it sees the session cookie a sign-in sets.
    "thinnest_analytics.middleware.ReplicaMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "thinnest_analytics.middleware.RejectNulMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "accounts.middleware.CurrentOrganisationMiddleware",
    "thinnest_analytics.middleware.DatabaseUnavailableMiddleware",
    "thinnest_analytics.middleware.PageErrorMiddleware",
]

ROOT_URLCONF = "thinnest_analytics.urls"
ASGI_APPLICATION = "thinnest_analytics.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.organisation",
                "thinnest_analytics.replica.replica_lag_context",
            ],
            # {% load formatting %}: one number and money style for every page.
            "libraries": {"formatting": "thinnest_analytics.formatting_tags"},
        },
    },
]

# --- database -------------------------------------------------------------
DATABASE_URL = os.getenv("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
        }
    }
# A streaming replica of the primary (docs/operations.md, "Read replica"): the
# dashboard's pages and the read endpoints read it; everything else the primary.
DATABASE_REPLICA_URL = os.getenv("DATABASE_REPLICA_URL", "")
if DATABASE_REPLICA_URL:
    if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("DATABASE_REPLICA_URL needs a PostgreSQL DATABASE_URL")
    # In tests the replica alias is the test database itself (Django's test mirror).
    DATABASES["replica"] = {**dj_database_url.parse(DATABASE_REPLICA_URL), "TEST": {"MIRROR": "default"}}
    DATABASE_ROUTERS = ["thinnest_analytics.replica.ReplicaRouter"]
# Lag above this many seconds is shown on pages that read the replica ("data as
# of N s ago"); the lag is read at most every REPLICA_LAG_CACHE_SECONDS per process.
REPLICA_LAG_NOTICE_SECONDS = float(os.getenv("REPLICA_LAG_NOTICE_SECONDS", "10"))
REPLICA_LAG_CACHE_SECONDS = float(os.getenv("REPLICA_LAG_CACHE_SECONDS", "1"))
# After a change made in a browser, its replica reads go to the primary until the
# replica has replayed the change, for this long at most.
REPLICA_PIN_SECONDS = envint("REPLICA_PIN_SECONDS", "60")

for _alias, _db in DATABASES.items():
    if _db["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets the dashboard read while ingestion writes; IMMEDIATE takes the
        # write lock up front so concurrent batches queue instead of failing.
        _db.setdefault("OPTIONS", {}).update(
            {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            }
        )
    elif envbool("DB_POOL", "true"):
        # ASGI runs views on worker threads: a pool instead of per-thread persistent
        # connections (one pool per alias). connect_timeout keeps an outage answer
        # (503) quick; the check before each use drops connections a database
        # restart broke, so the first requests after a restart are served instead
        # of answered 503. Reconnection attempts back off exponentially; giving up
        # after the pool timeout lets the next request start a fresh one, so a long
        # outage never leaves the pool waiting out a long back-off once the
        # database is back.
        from .pool import pool_check

        _pool_timeout = float(os.getenv("DB_POOL_TIMEOUT", "5"))
        _db.setdefault("OPTIONS", {}).update(
            {
                "pool": {
                    "min_size": 1,
                    "max_size": envint("DB_POOL_MAX", "16"),
                    "timeout": _pool_timeout,
                    "reconnect_timeout": _pool_timeout,
                    "check": pool_check(_alias),
                },
                "connect_timeout": 3,
            }
        )
    else:
        _db.setdefault("OPTIONS", {})["connect_timeout"] = 3
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Ingestion runs on worker threads so concurrent batches overlap.
DB_WORKER_THREADS = envbool("DB_WORKER_THREADS", "true")

# --- auth -----------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

# --- i18n -----------------------------------------------------------------
LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# --- static ---------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# plotly.min.js is served from the copy inside the plotly wheel: no CDN, one version.
import plotly as _plotly  # noqa: E402

STATICFILES_DIRS = [BASE_DIR / "static", ("vendor/plotly", Path(_plotly.__file__).parent / "package_data")]
SERVE_STATIC = envbool("SERVE_STATIC", "true")

# --- request limits -------------------------------------------------------
# A batch of 1000 traces with long transcripts fits; anything larger is 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("MAX_REQUEST_BYTES", str(32 * 1024 * 1024))
INGEST_MAX_BATCH = 1000
INGEST_MAX_TEXT_CHARS = envint("INGEST_MAX_TEXT_CHARS", str(1_000_000))
# OTLP: requests served at once per process (more are answered 503 with
# Retry-After, which exporters retry), and the spans kept per trace.
OTEL_MAX_CONCURRENT_REQUESTS = envint("OTEL_MAX_CONCURRENT_REQUESTS", "4")
OTEL_MAX_SPANS_PER_TRACE = envint("OTEL_MAX_SPANS_PER_TRACE", "10000")
# A trace's received spans are compacted once nothing has arrived for it for this long.
OTEL_SPAN_SETTLE_SECONDS = envint("OTEL_SPAN_SETTLE_SECONDS", "3600")

# --- channels -------------------------------------------------------------
REDIS_URL = os.getenv("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- celery ---------------------------------------------------------------
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # A task taken by a worker that dies (acks late) goes back to the queue
    # after this many seconds; keep it above the longest retry delay (810 s).
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {
        "visibility_timeout": envint("BROKER_VISIBILITY_TIMEOUT", "3600")
    }
else:
    # Embedded broker: kombu's filesystem transport, no server to install.
    _broker_dir = VAR_DIR / "celery-broker"
    for _sub in ("processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", "false")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- security -------------------------------------------------------------
# Outside debug the app assumes TLS in front of it: secure cookies, HSTS, and a
# redirect to https. ALLOW_HTTP=true (set by scripts/serve.sh for the local
# embedded run on 127.0.0.1) turns that off.
HTTPS = not DEBUG and not envbool("ALLOW_HTTP", "false")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = envint("HSTS_SECONDS", "31536000") if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS and envbool("HSTS_PRELOAD", "true")
SECURE_SSL_REDIRECT = HTTPS and envbool("SSL_REDIRECT", "true")
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP
if os.getenv("SECURE_PROXY_SSL_HEADER"):  # e.g. HTTP_X_FORWARDED_PROTO, set only behind a trusted proxy
    SECURE_PROXY_SSL_HEADER = (os.environ["SECURE_PROXY_SSL_HEADER"], "https")
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    # No inline styles: plotly.js's rules come from static/css/plotly.css.
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'", "ws:", "wss:"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'"],
    "base-uri": ["'self'"],
}

# Failed logins per username and address before a pause, and how long it lasts.
LOGIN_MAX_FAILURES = envint("LOGIN_MAX_FAILURES", "5")
LOGIN_LOCKOUT_SECONDS = envint("LOGIN_LOCKOUT_SECONDS", "900")
# Requests per API key and minute on each ingestion endpoint; 0 turns the limit off.
INGEST_REQUESTS_PER_MINUTE = envint("INGEST_REQUESTS_PER_MINUTE", "1200")

# --- cache (rate limits) ----------------------------------------------------
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- product --------------------------------------------------------------
DEFAULT_VOICE_PRICE_PER_MINUTE = os.getenv("VOICE_PRICE_PER_MINUTE", "0.05")
# A call the server has heard nothing about for this long is closed as dropped.
VOICE_STALE_CALL_MINUTES = envint("VOICE_STALE_CALL_MINUTES", "30")
# Live voice metrics: at most one update per interval per subscriber; a
# heartbeat when nothing else was sent for this long (under 5 s).
VOICE_LIVE_MIN_INTERVAL_MS = envint("VOICE_LIVE_MIN_INTERVAL_MS", "250")
VOICE_LIVE_HEARTBEAT_MS = envint("VOICE_LIVE_HEARTBEAT_MS", "4000")
# Live sockets close at once when their API key is revoked or their member removed
# (a channel-layer notice); each process also re-checks its sockets' keys and
# memberships this often, so they close within it even if a notice is lost.
LIVE_ACCESS_RECHECK_SECONDS = float(os.getenv("LIVE_ACCESS_RECHECK_SECONDS", "4"))
RETENTION_DAYS = envint("RETENTION_DAYS", "400")
ALERT_WEBHOOK_TIMEOUT = float(os.getenv("ALERT_WEBHOOK_TIMEOUT", "10"))
# Outbound requests to user-chosen URLs (alert webhooks) go to public addresses
# only; list networks (CIDR, comma-separated) to allow an internal receiver, e.g.
# "10.20.0.0/16,fd12:3456::/48". Empty: none. Cloud metadata addresses stay refused.
OUTBOUND_ALLOWED_NETWORKS = [
    str(ipaddress.ip_network(network, strict=False)) for network in envlist("OUTBOUND_ALLOWED_NETWORKS", "")
]
# Subscription plans, "name" or "name:price in USD"; a priced plan is charged
# to the ledger when an organisation moves to it.
BILLING_PLANS = envlist("BILLING_PLANS", "free,starter:29.00,pro:99.00,enterprise")
# A worker sending a notification holds it this long; keep it well above the
# webhook and SMTP timeouts. After it, a dead worker's notification is sent again.
ALERT_DELIVERY_LEASE_SECONDS = envint("ALERT_DELIVERY_LEASE_SECONDS", "60")
# How often beat queues again the notifications whose delivery task was lost.
ALERT_SWEEP_SECONDS = envint("ALERT_SWEEP_SECONDS", "60")

# Email: SMTP when EMAIL_HOST is set. Without it, messages (invitation links among
# them) are printed to the console only under DEBUG; otherwise each is written to a
# file in VAR_DIR/outbox, readable by the server's user alone, and never to the
# server's log, which is often shipped elsewhere. `check --deploy` warns then.
EMAIL_OUTBOX_DIR = VAR_DIR / "outbox"
if os.getenv("EMAIL_HOST"):
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {
                "host": os.getenv("EMAIL_HOST"),
                "port": envint("EMAIL_PORT", "25"),
                "username": os.getenv("EMAIL_HOST_USER", ""),
                "password": os.getenv("EMAIL_HOST_PASSWORD", ""),
                "use_tls": envbool("EMAIL_USE_TLS", "false"),
                "timeout": 10,
            },
        }
    }
elif DEBUG:
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
else:
    EMAIL_OUTBOX_DIR.mkdir(mode=0o700, exist_ok=True)
    EMAIL_OUTBOX_DIR.chmod(0o700)
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "OPTIONS": {"file_path": str(EMAIL_OUTBOX_DIR)},
        }
    }
DEFAULT_FROM_EMAIL = os.getenv("DEFAULT_FROM_EMAIL", "alerts@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "WARNING")},
}
TRUSTED_PROXY_HEADER = os.getenv("TRUSTED_PROXY_HEADER", "")  # e.g. HTTP_X_FORWARDED_FOR
