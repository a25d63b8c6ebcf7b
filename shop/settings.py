"""The one settings module. Everything that differs between machines comes from the environment.

Embedded defaults (nothing to install): SQLite in ``var/`` and kombu's filesystem broker.
Real use: ``DATABASE_URL=postgres://...`` and ``CELERY_BROKER_URL=redis://...``.
"""

import datetime as dt
import hashlib
import os
from pathlib import Path

import dj_database_url
import dj_email_url
from django.core.exceptions import ImproperlyConfigured

from outbox.ops import RELAY_QUEUE
from shop.services import LOCAL_APPS, SERVICES, UnknownService, service_get

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("SHOP_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use 1/0, true/false)")


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None


DEBUG = env_bool("DJANGO_DEBUG", True)
_DEV_SECRET = "dev-only-insecure-secret-key-never-use-in-production"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = _DEV_SECRET
elif not DEBUG and (SECRET_KEY == _DEV_SECRET or len(SECRET_KEY) < 50):
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be a real secret of 50+ characters")

ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get(
        "DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver" if DEBUG else ""
    ).split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

# --- The shape: the monolith, or one service of the split deployment (shop/services.py) --------
# SHOP_SERVICE unset: the monolith (every app, one database, one broker). SHOP_SERVICE=payments:
# the payments service alone (its app, the outbox, PAYMENTS_DATABASE_URL and
# PAYMENTS_CELERY_BROKER_URL).
try:
    SERVICE = service_get(os.environ.get("SHOP_SERVICE", "").strip())
except UnknownService as exc:
    raise ImproperlyConfigured(str(exc)) from None
SERVICE_APPS = list(SERVICE.apps if SERVICE is not None else LOCAL_APPS)

# The host project's web side (the REST API, the admin, logins, API tokens, the API docs): the
# monolith's and the shop service's. A service without it is its apps, the outbox and beat's
# tables (the outbox keeps its relay tick and retention purge there: outbox/migrations/0002).
_WEB_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
]
SERVICE_WEB = SERVICE is None or SERVICE.web
INSTALLED_APPS = [
    *(_WEB_APPS if SERVICE_WEB else []),
    "django_celery_beat",
    *(["shop"] if SERVICE_WEB else []),
    "outbox",
    *SERVICE_APPS,
]
# The test suite's own app (events, handlers and an effects table); never in production.
if env_bool("SHOP_TEST_APPS", False):
    INSTALLED_APPS.append("tests.testapp")
# The benchmark's own app (bench-only events, no-op handlers and tasks); only for `make bench`.
if env_bool("SHOP_BENCH_APPS", False):
    INSTALLED_APPS.append("bench.benchapp")
    # The consuming service of the cross-database latency scenario (bench/bus_latency.py).
    if env_bool("SHOP_BENCH_BUS_CONSUMER", False):
        INSTALLED_APPS.append("bench.busconsumer")
# The chaos run's counting subscribers (not idempotent on purpose); only for `make chaos`, which
# puts scripts/ on the processes' PYTHONPATH.
if env_bool("SHOP_CHAOS_APPS", False):
    INSTALLED_APPS.append("chaos.countingapp")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so it sees the exceptions of the views: a lost database is a 503 (shop/middleware.py).
    "shop.middleware.DatabaseUnavailableMiddleware",
]
if not SERVICE_WEB:
    # No sessions, logins or pages: the probes and /metrics only (shop/urls_service.py).
    MIDDLEWARE = [
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
        "shop.middleware.DatabaseUnavailableMiddleware",
    ]

ROOT_URLCONF = "shop.urls" if SERVICE_WEB else "shop.urls_service"
WSGI_APPLICATION = "shop.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The project's own overrides of third-party templates (Swagger UI without inline CSS).
        "DIRS": [BASE_DIR / "shop" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------

# A service's own database: DATABASE_URL for the monolith and the shop service,
# PAYMENTS_DATABASE_URL for the payments service (shop/services.py names each one's variable).
_DATABASE_ENV = SERVICE.database_env if SERVICE is not None else "DATABASE_URL"
_DATABASE_DEFAULT = "db.sqlite3" if _DATABASE_ENV == "DATABASE_URL" else f"{SERVICE.name}.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get(_DATABASE_ENV) or f"sqlite:///{VAR_DIR / _DATABASE_DEFAULT}",
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
_db = DATABASES["default"]
# Test databases are named after this checkout, so two clones can run their suites at once.
_checkout = hashlib.sha1(str(VAR_DIR).encode()).hexdigest()[:6]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE: every atomic block takes the write lock when it begins, so SQLite serialises
    # writers up front (the single-claimer path) instead of failing on a lock upgrade mid-way.
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    _db["CONN_MAX_AGE"] = 0
    _db["TEST"] = {"NAME": str(VAR_DIR / f"test-{_checkout}.sqlite3")}
else:
    _db["TEST"] = {"NAME": f"test_{_db['NAME']}_{_checkout}"}
    # A database that does not answer fails a connection attempt in seconds, never hangs it.
    _db.setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", int(os.environ.get("DATABASE_CONNECT_TIMEOUT", "5"))
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed, compressed files from `collectstatic` in production; the apps' own in development.
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# Served by WhiteNoise from the apps' own folders in development, from STATIC_ROOT otherwise.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- Security (production when DJANGO_DEBUG is off) -------------------------------------------

if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
# X-Forwarded-Proto says the request came over HTTPS only when a proxy in front of the web
# process sets it (and overwrites a client's own): trusted only when this says there is one.
# Without a proxy anyone could send the header over plain HTTP and skip the HTTPS redirect.
BEHIND_PROXY = env_bool("DJANGO_BEHIND_PROXY", False)
if BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Content Security Policy on every response (django-csp): scripts, styles, fonts and frames
# from this origin only, no inline script or style anywhere (the admin, the API docs and the
# flow page are written for it; tests/flow/test_csp.py proves it in a browser).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- Celery -----------------------------------------------------------------------------------

# Each service has a broker of its own (its relay's and handlers' queues have the same names in
# every service): CELERY_BROKER_URL, or PAYMENTS_CELERY_BROKER_URL for the payments service.
_BROKER_ENV = SERVICE.broker_env if SERVICE is not None else "CELERY_BROKER_URL"
CELERY_BROKER_URL = os.environ.get(_BROKER_ENV) or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_default = "broker" if _BROKER_ENV == "CELERY_BROKER_URL" else f"broker-{SERVICE.name}"
    _broker_dir = Path(os.environ.get("SHOP_BROKER_DIR", VAR_DIR / _broker_default))
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": env_float("SHOP_BROKER_POLLING_INTERVAL", 0.05),
    }
# On Redis kombu's acknowledgement emulation stays on (its default). Off, it saved about 1 ms of
# worker CPU per message (bench/experiments/no_redis_ack_emulation.py), but a worker that cannot
# put its reserved messages back at shutdown then pickles them into a file in the temporary
# folder (kombu's emergency dump), the likely source of two files a clean-clone run of the
# suite left behind; so not taken.
if _BROKER_ENV != "CELERY_BROKER_URL":
    # Celery prefers the CELERY_BROKER_URL environment variable to any setting: this process's
    # broker is its service's, whatever the environment holds for the shop.
    os.environ["CELERY_BROKER_URL"] = CELERY_BROKER_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# A task sent without a queue of its own goes to the relay's (subscribers' queues: the registry).
CELERY_TASK_DEFAULT_QUEUE = RELAY_QUEUE
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Celery's Django fix-up closes every database connection around every task unless this is set;
# shop/celery.py then closes them as Django does after a request (CONN_MAX_AGE, broken ones).
CELERY_DB_REUSE_MAX = 2**31
# No task of the shop has a rate limit: the worker skips the bookkeeping per message.
CELERY_WORKER_DISABLE_RATE_LIMITS = True
CELERY_TIMEZONE = TIME_ZONE

# --- The outbox -------------------------------------------------------------------------------
# Every knob has a default in outbox/conf.py; these read the environment so that each process
# of the Procfile is configured the same way.

OUTBOX = {
    "LEASE_SECONDS": env_float("OUTBOX_LEASE_SECONDS", 30.0),
    "MAX_ATTEMPTS": int(os.environ.get("OUTBOX_MAX_ATTEMPTS", "8")),
    "BACKOFF_BASE_SECONDS": env_float("OUTBOX_BACKOFF_BASE_SECONDS", 1.0),
    "BACKOFF_CAP_SECONDS": env_float("OUTBOX_BACKOFF_CAP_SECONDS", 300.0),
    "LOCK_WAIT_SECONDS": env_float("OUTBOX_LOCK_WAIT_SECONDS", 0.5),
    "RELAY_BATCH_SIZE": int(os.environ.get("OUTBOX_RELAY_BATCH_SIZE", "500")),
    "RELAY_GATHER_SECONDS": env_float("OUTBOX_RELAY_GATHER_SECONDS", 0.01),
    "CONTINUATION": env_bool("OUTBOX_CONTINUATION", True),
    "CONTINUATION_MAX_DEPTH": int(os.environ.get("OUTBOX_CONTINUATION_MAX_DEPTH", "10")),
    "CONTINUATION_MAX_SECONDS": env_float("OUTBOX_CONTINUATION_MAX_SECONDS", 2.0),
    "CONTINUATION_BORN_CLAIMED": env_bool("OUTBOX_CONTINUATION_BORN_CLAIMED", True),
    "DELIVERY_BATCH_SIZE": int(os.environ.get("OUTBOX_DELIVERY_BATCH_SIZE", "20")),
    "WAKE_BY_NOTIFY": env_bool("OUTBOX_WAKE_BY_NOTIFY", True),
    "RETENTION_DAYS": int(os.environ.get("OUTBOX_RETENTION_DAYS", "30")),
}

# --- The event bus (docs/bus.md) ---------------------------------------------------------------
# amqp://... (RabbitMQ) or nats://... (NATS JetStream); unset: no bus, events stay inside.
EVENT_BUS_URL = os.environ.get("EVENT_BUS_URL", "")
# In the split deployment the service's name and apps come from SHOP_SERVICE (shop/services.py).
EVENT_BUS = {
    "SERVICE": SERVICE.name if SERVICE is not None else os.environ.get("EVENT_BUS_SERVICE", "shop"),
    "NAMESPACE": os.environ.get("EVENT_BUS_NAMESPACE", "shop"),
    "EXTERNALISE_ALL": env_bool("EVENT_BUS_EXTERNALISE_ALL", False),
    "ACK_WAIT_SECONDS": env_float("EVENT_BUS_ACK_WAIT_SECONDS", 30.0),
    # The consumer runs small batches of what it stored itself (docs/bus.md, "The consumer").
    "RUN": env_bool("EVENT_BUS_RUN", True),
    "RUN_MAX_EVENTS": int(os.environ.get("EVENT_BUS_RUN_MAX_EVENTS", "10")),
    "RUN_MAX_SECONDS": env_float("EVENT_BUS_RUN_MAX_SECONDS", 0.5),
    "RUN_QUEUES": [
        q.strip() for q in os.environ.get("EVENT_BUS_RUN_QUEUES", "").split(",") if q.strip()
    ]
    or None,
    # Small claims published by the relay's own process (0: all through the bus queue).
    "RELAY_PUBLISH_MAX": int(os.environ.get("EVENT_BUS_RELAY_PUBLISH_MAX", "50")),
    # outbox_replay --to-service: which apps each service of the split installs.
    "SERVICES": {name: list(service.apps) for name, service in SERVICES.items()},
    "LOCAL_APPS": list(SERVICE.apps)
    if SERVICE is not None
    else [a.strip() for a in os.environ.get("EVENT_BUS_LOCAL_APPS", "").split(",") if a.strip()]
    or None,
}

# --- The shop ---------------------------------------------------------------------------------

SHOP_CURRENCY = os.environ.get("SHOP_CURRENCY", "EUR")
# The key of the idempotency fingerprint (an HMAC of an order request's lines and payment token,
# stored with the order). Changing it makes a retry of an order placed before the change a 409.
ORDERS_FINGERPRINT_SECRET = os.environ.get("ORDERS_FINGERPRINT_SECRET") or SECRET_KEY

# How long an order may wait in each step of its saga before it is cancelled (timed_out) and
# compensated: for its payment (placed), its stock (paid), its shipment to be scheduled
# (stock_reserved). Longer than a delivery's retries take to dead-letter (about 10 minutes
# with the outbox's defaults), so an operator has time to replay a dead letter first.
ORDERS_DEADLINES = {
    "placed": env_float("ORDERS_DEADLINE_PAYMENT_SECONDS", 1800.0),
    "paid": env_float("ORDERS_DEADLINE_STOCK_SECONDS", 1800.0),
    "stock_reserved": env_float("ORDERS_DEADLINE_SHIPMENT_SECONDS", 1800.0),
}
# Deadline rows of orders that ended (completed or cancelled) and have not changed for this many
# days are deleted (orders.deadlines_purge, hourly); 0 keeps them. By default the events'
# retention window: an order's deadlines go with its story.
ORDERS_DEADLINE_RETENTION_DAYS = env_float(
    "ORDERS_DEADLINE_RETENTION_DAYS", float(OUTBOX["RETENTION_DAYS"])
)
# The saga console's "stuck" filter: no progress for this long.
ORDERS_STUCK_AFTER_SECONDS = env_float("ORDERS_STUCK_AFTER_SECONDS", 300.0)

# The payment gateway adapter. The simulated gateway captures tok_visa, declines
# tok_chargeDeclined, and times out on a share of calls (TIMEOUT_RATE, 0..1) so that retries
# are exercised; TIMEOUTS_PER_CHARGE makes each charge time out that many times first
# (counted per process).
PAYMENTS = {
    "GATEWAY": os.environ.get("PAYMENTS_GATEWAY", "payments.gateway.SimulatedGateway"),
    "TIMEOUT_RATE": env_float("PAYMENTS_GATEWAY_TIMEOUT_RATE", 0.0),
    "TIMEOUTS_PER_CHARGE": int(os.environ.get("PAYMENTS_GATEWAY_TIMEOUTS_PER_CHARGE", "0")),
    # How long the simulated gateway remembers an idempotency key (real gateways: about a day).
    "KEY_RETENTION_SECONDS": env_float("PAYMENTS_GATEWAY_KEY_RETENTION_SECONDS", 24 * 3600.0),
}

# --- Cache (throttle counts) -----------------------------------------------------------------
# CACHE_URL: redis://host:6379/N in production, so every web process counts together;
# locmem:// for one process; unset: files in var/cache/, shared by this machine's processes.
CACHE_URL = os.environ.get("CACHE_URL", "")
if CACHE_URL.startswith(("redis://", "rediss://")):
    _cache = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
elif CACHE_URL == "locmem://":
    _cache = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
elif CACHE_URL in ("", "file://") or CACHE_URL.startswith("file://"):
    _cache = {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": CACHE_URL.removeprefix("file://") or str(VAR_DIR / "cache"),
    }
else:
    raise ImproperlyConfigured(f"CACHE_URL={CACHE_URL!r}: use redis://, locmem:// or file://")
CACHES = {"default": {**_cache, "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "shop")}}

# Email (the notifications app's messages to customers). EMAIL_URL, read by dj-email-url:
# smtp://user:password@host:port (?tls=1 or ?ssl=1), submission://... (STARTTLS, port 587),
# file:// (the default: one file per message in var/mail/, or file:///an/absolute/folder),
# console:// (printed by the process that sends it, the worker, as a log line), dummy://.
EMAIL_URL = os.environ.get("EMAIL_URL", "") or "file://"
_email_scheme = EMAIL_URL.partition("://")[0]
if _email_scheme not in ("smtp", "submission", "submit", "console", "file", "dummy"):
    raise ImproperlyConfigured(
        f"EMAIL_URL={EMAIL_URL!r}: use smtp://, submission://, console://, file:// or dummy://"
    )
_email = dj_email_url.parse(EMAIL_URL)
if _email_scheme in ("smtp", "submission", "submit"):
    _email["EMAIL_BACKEND"] = "django.core.mail.backends.smtp.EmailBackend"
if _email_scheme == "file":
    _email["EMAIL_FILE_PATH"] = EMAIL_URL.removeprefix("file://") or str(VAR_DIR / "mail")
# A message is sent inside its delivery's transaction: a mail server that hangs must fail the
# attempt (it is retried) well within the outbox's lease.
_email["EMAIL_TIMEOUT"] = _email["EMAIL_TIMEOUT"] or env_float("EMAIL_TIMEOUT_SECONDS", 10)
globals().update({k: v for k, v in _email.items() if v is not None})
DEFAULT_FROM_EMAIL = os.environ.get("DJANGO_DEFAULT_FROM_EMAIL", "Shop <shop@localhost>")


# Throttles (shop/throttling.py), in DRF's syntax: N/second, N/minute, N/hour or N/day; "off"
# counts nothing (load tests and the test suite).
def env_rate(name: str, default: str) -> str | None:
    value = (os.environ.get(name) or default).strip()
    if value == "off":
        return None
    count, _, period = value.partition("/")
    if not count.isdigit() or period not in {
        "s",
        "sec",
        "second",
        "m",
        "min",
        "minute",
        "h",
        "hour",
        "d",
        "day",
    }:
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate like 10/min")
    return value


THROTTLE_RATES = {
    "login": env_rate("THROTTLE_RATE_LOGIN", "10/min"),
    "orders": env_rate("THROTTLE_RATE_ORDERS", "60/min"),
}

# --- REST framework ---------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "shop.token_auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["shop.api.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "shop.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "shop.schema.AutoSchema",
    # Errors are RFC 9457 problem documents (shop/problems.py); responses are JSON only.
    "EXCEPTION_HANDLER": "shop.problems.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_THROTTLE_CLASSES": [
        "shop.throttling.LoginAddressThrottle",
        "shop.throttling.LoginUsernameThrottle",
        "shop.throttling.OrderWriteThrottle",
    ],
}

# The schema and Swagger UI describe every endpoint and field: public while
# debugging, for logged-in users only in production unless this says otherwise.
API_DOCS_PUBLIC = env_bool("API_DOCS_PUBLIC", DEBUG)

# API tokens (django-rest-knox, shop/auth.py): stored hashed, several per user, expiring.
REST_KNOX = {
    "TOKEN_TTL": dt.timedelta(hours=env_float("API_TOKEN_TTL_HOURS", 24.0)),
    "AUTH_HEADER_PREFIX": "Token",
}

SPECTACULAR_SETTINGS = {
    "SERVE_PERMISSIONS": ["shop.api.ApiDocsVisible"],
    "TITLE": "Shop API",
    "DESCRIPTION": "Event-driven shop: orders are accepted at once and move through the saga.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Observability: logs, metrics, tracing, health (docs/operations.md) ----------------------

# Structured logs through structlog: JSON lines when stderr is not a terminal, readable lines
# on one; LOG_FORMAT=json|console decides instead.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "").strip().lower() or None
if LOG_FORMAT not in (None, "json", "console"):
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r} must be json or console")
LOGGING_CONFIG = "shop.observability.logs.configure"
from shop.observability.logs import logging_settings  # noqa: E402

LOGGING = logging_settings(level=os.environ.get("LOG_LEVEL", "INFO").upper(), renderer=LOG_FORMAT)
# Celery's two INFO lines per task message ("Task ... received", "Task ... succeeded in ...")
# were about a tenth of a worker's CPU per saga order (docs/benchmarks.md, experiment
# celery_lean_worker); LOG_LEVEL=DEBUG keeps them, and a task that fails is logged at any level.
if os.environ.get("LOG_LEVEL", "INFO").upper() != "DEBUG":
    LOGGING["loggers"].update(
        {
            "celery.worker.strategy": {"level": "WARNING"},
            "celery.app.trace": {"level": "WARNING"},
        }
    )

# Prometheus: every process (web, worker, relay, beat) counts into files in this folder, and
# /metrics adds them up. prometheus_client reads the variable when it is imported, so it is
# set here, before any import of it; each process empties the folder at start when no process
# still running owns a file in it (shop/observability/metrics.py says why).
PROMETHEUS_MULTIPROC_DIR = Path(
    os.environ.get("PROMETHEUS_MULTIPROC_DIR") or VAR_DIR / "prometheus"
)
PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(PROMETHEUS_MULTIPROC_DIR)


# Sensitive event fields (a payment token, an email address) are encrypted in the event store
# and on the bus with these Fernet keys, comma-separated, the first one writing and every one
# reading (docs/outbox.md, Sensitive fields). Production must set them; while debugging (make
# run, the tests) a key derived from SECRET_KEY is used, which production refuses.
def _dev_event_key(secret: str) -> str:
    import base64

    return base64.urlsafe_b64encode(
        hashlib.sha256(f"shop-dev-event-encryption:{secret}".encode()).digest()
    ).decode()


EVENT_ENCRYPTION_KEYS = [
    key.strip() for key in os.environ.get("EVENT_ENCRYPTION_KEYS", "").split(",") if key.strip()
]
if not EVENT_ENCRYPTION_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "EVENT_ENCRYPTION_KEYS must be set when DJANGO_DEBUG is off: generate a key with "
            "python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        )
    EVENT_ENCRYPTION_KEYS = [_dev_event_key(SECRET_KEY)]
elif not DEBUG and _dev_event_key(_DEV_SECRET) in EVENT_ENCRYPTION_KEYS:
    raise ImproperlyConfigured("EVENT_ENCRYPTION_KEYS must not hold the development key")

# /metrics answers a scraper bearing METRICS_TOKEN; without a token it is open only while
# debugging (make run), and refused in production (a deploy check warns about it).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_PUBLIC = DEBUG
if METRICS_TOKEN and len(METRICS_TOKEN) < 32:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 32 characters")

# Tracing is configured from the OTEL_* variables (off unless an exporter or endpoint is set).

# /readyz: how long a broker check may take; heartbeats older than this are stale.
HEALTH_BROKER_TIMEOUT_SECONDS = env_float("HEALTH_BROKER_TIMEOUT_SECONDS", 1.0)
OUTBOX["HEARTBEAT_STALE_SECONDS"] = env_float("OUTBOX_HEARTBEAT_STALE_SECONDS", 30.0)
# The heartbeats /readyz requires: "relay" alone where `manage.py outbox_relay` replaces beat.
HEALTH_HEARTBEATS = [
    h.strip() for h in os.environ.get("HEALTH_HEARTBEATS", "relay,beat").split(",") if h.strip()
]

INSTALLED_APPS.append("shop.observability")
# Probes and scrapers talk plain HTTP to the process, behind any TLS-terminating proxy.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
LOGIN_URL = "/accounts/login/"  # login of the HTML pages, for any user (shop/urls.py)
