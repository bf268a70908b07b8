"""Orchestra settings: one module, every value from the environment.

Two modes (docs/architecture.md):
- embedded (default): no DATABASE_URL / REDIS_URL; SQLite under var/, in-memory channel
  layer, local-memory cache, turns run on in-process worker threads.
- full stack: DATABASE_URL and REDIS_URL set; PostgreSQL, Redis channel layer and cache,
  Celery workers.

DJANGO_ENV=production refuses to start with an insecure configuration.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from infrastructure.logging import build_logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
env.smart_cast = False

DJANGO_ENV = env.str("DJANGO_ENV", default="development")
if DJANGO_ENV not in {"development", "production", "test"}:
    raise ImproperlyConfigured(
        f"DJANGO_ENV must be development, production or test, not {DJANGO_ENV!r}."
    )
PRODUCTION = DJANGO_ENV == "production"

DATA_DIR = Path(env.str("ORCHESTRA_DATA_DIR", default=str(BASE_DIR / "var")))

# Public on purpose: refused in production (below).
DEVELOPMENT_SECRET_KEY = "django-insecure-orchestra-development-key-do-not-use-in-production"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default=DEVELOPMENT_SECRET_KEY)
DEBUG = env.bool("DEBUG", default=not PRODUCTION and DJANGO_ENV != "test")
ALLOWED_HOSTS = [
    host.strip()
    for host in env.list(
        "ALLOWED_HOSTS", default=[] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]"]
    )
    if host.strip()
]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in env.list("CSRF_TRUSTED_ORIGINS", default=[])]

if PRODUCTION:
    if SECRET_KEY == DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 50:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set to a random value of at least 50 characters "
            "when DJANGO_ENV=production."
        )
    if DEBUG:
        raise ImproperlyConfigured("DEBUG must be off when DJANGO_ENV=production.")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DJANGO_ENV=production.")

DATABASE_URL = env.str("DATABASE_URL", default="")
REDIS_URL = env.str("REDIS_URL", default="")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
# Full stack means the shared services are there: locks, breakers, event buffers and
# the channel layer live in Redis, and turns run on Celery workers.
FULL_STACK = bool(REDIS_URL)

INSTALLED_APPS = [
    "orchestra_site.apps.OrchestraAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "import_export",
    "orchestra_site.apps.SiteConfig",
    "access",
    "agents",
    "commerce",
    "billing",
    "conversations",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "infrastructure.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "orchestra_site.urls"
ASGI_APPLICATION = "orchestra_site.asgi.application"
# Threads per web process for Django's views (orchestra_site/asgi.py): how many requests
# one process works on at once. Waiting for a turn and streaming its events hold none.
WEB_THREADS = env.int("WEB_THREADS", default=32)
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# Connections a process may hold: its threads share them (a psycopg pool on PostgreSQL).
# A request that finds none free waits DATABASE_POOL_TIMEOUT_SECONDS, then answers 503; a
# database that does not answer is given up after DATABASE_CONNECT_TIMEOUT_SECONDS.
DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=20)
DATABASE_POOL_TIMEOUT_SECONDS = env.float("DATABASE_POOL_TIMEOUT_SECONDS", default=3.0)
DATABASE_CONNECT_TIMEOUT_SECONDS = env.int("DATABASE_CONNECT_TIMEOUT_SECONDS", default=2)
if DATABASE_URL:
    DATABASES = {"default": env.db_url("DATABASE_URL")}
    _postgresql = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    if _postgresql:
        DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = (
            DATABASE_CONNECT_TIMEOUT_SECONDS
        )
    if _postgresql and DATABASE_POOL_MAX_SIZE:
        # A connection pool per process, rather than a connection kept by every thread.
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": 1,
            "max_size": DATABASE_POOL_MAX_SIZE,
            "timeout": DATABASE_POOL_TIMEOUT_SECONDS,
        }
    else:
        DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if _postgresql and env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
        # A statement run more than 5 times on a connection is prepared there: PostgreSQL's
        # CPU per turn a quarter lower (docs/performance.md). Off behind a pooler that
        # cannot keep prepared statements (PgBouncer in transaction mode before 1.22).
        DATABASES["default"].setdefault("OPTIONS", {}).update(
            server_side_binding=True, prepare_threshold=5
        )
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "orchestra.sqlite3",
            # Worker threads and the server share one file: wait for the write lock.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
# django-prometheus wraps the real backends to count queries and errors (PostgreSQL's in
# infrastructure/db/postgresql, which also sizes batches for server-side binding).
_PROMETHEUS_DB_ENGINES = {
    "django.db.backends.postgresql": "infrastructure.db.postgresql",
    "django.db.backends.sqlite3": "django_prometheus.db.backends.sqlite3",
}
DATABASES["default"]["ENGINE"] = _PROMETHEUS_DB_ENGINES.get(
    DATABASES["default"]["ENGINE"], DATABASES["default"]["ENGINE"]
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_prometheus.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2},
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": 1500, "expiry": 30},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django_prometheus.cache.backends.locmem.LocMemCache",
            "LOCATION": "orchestra",
        }
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

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
# Only collectstatic needs it (production); outside production files come from the apps.
STATIC_ROOT = env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles") if PRODUCTION else "")
STATIC_ROOT = Path(STATIC_ROOT) if STATIC_ROOT else None
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Outside production the files are served straight from the apps, no collectstatic.
WHITENOISE_USE_FINDERS = not PRODUCTION

LOGIN_URL = "admin:login"
# API paths answer a refused CSRF check in the API's error format.
CSRF_FAILURE_VIEW = "infrastructure.api_errors.csrf_failure"

# --- Security (production) -------------------------------------------------------
if PRODUCTION:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    # Probes and Prometheus scrape over plain HTTP inside the cluster.
    SECURE_REDIRECT_EXEMPT = [r"^health/$", r"^ready/$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- REST API ----------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "access.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["infrastructure.json_input.StorableJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # The same throttles, with their history in Redis when there is one
    # (access/throttling.py).
    "DEFAULT_THROTTLE_CLASSES": [
        "access.throttling.RedisAnonRateThrottle"
        if REDIS_URL
        else "rest_framework.throttling.AnonRateThrottle",
        "access.throttling.RedisUserRateThrottle"
        if REDIS_URL
        else "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("API_THROTTLE_ANON", default="60/minute"),
        "user": env.str("API_THROTTLE_USER", default="1200/minute"),
    },
    "EXCEPTION_HANDLER": "infrastructure.api_errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "infrastructure.openapi.OrchestraAutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Orchestra API",
    "DESCRIPTION": (
        "Conversations with AI agents, shipping quotes and usage. Authenticate with "
        "`Authorization: Bearer <API key>`. Every error has the shape "
        '`{"error": {"code", "message", "details"}}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
}

# Threads that run blocking work (the ORM, sync Redis) for code on an event loop
# (infrastructure/off_loop.py): as many as the process may hold database connections.
OFF_LOOP_THREADS = env.int("OFF_LOOP_THREADS", default=DATABASE_POOL_MAX_SIZE or 8)
# Redis connections per process and client kind (sync, and each event loop's async one).
REDIS_POOL_MAX_CONNECTIONS = env.int("REDIS_POOL_MAX_CONNECTIONS", default=50)
REDIS_POOL_TIMEOUT_SECONDS = env.float("REDIS_POOL_TIMEOUT_SECONDS", default=2.0)
REDIS_SOCKET_TIMEOUT_SECONDS = env.float("REDIS_SOCKET_TIMEOUT_SECONDS", default=5.0)

# --- Celery --------------------------------------------------------------------------
# The longest a turn may run.
TURN_TIMEOUT_SECONDS = env.int("TURN_TIMEOUT_SECONDS", default=300)
# No emulated acknowledgements on Redis (two more round trips and 0.5 ms of worker CPU per
# task, docs/performance.md): the turn engine's recovery brings back the turns of a worker
# that died, sooner than the emulation's visibility timeout would.
CELERY_BROKER_TRANSPORT_OPTIONS = {"ack_emulation": False}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "recover-turns": {
        "task": "conversations.recover_turns",
        "schedule": env.float("TURN_RECOVERY_INTERVAL_SECONDS", default=15.0),
    },
}

# --- Logging ---------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="json" if PRODUCTION or FULL_STACK else "console")
if LOG_FORMAT not in {"json", "console"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or console, not {LOG_FORMAT!r}.")
LOGGING = build_logging_config(json_lines=LOG_FORMAT == "json", level=LOG_LEVEL)

# --- Orchestra -------------------------------------------------------------------------
ORCHESTRA_ADMIN_USER = env.str("ORCHESTRA_ADMIN_USER", default="")
ORCHESTRA_ADMIN_PASSWORD = env.str("ORCHESTRA_ADMIN_PASSWORD", default="")
# Turn execution: Celery workers in full stack, this process's runner in the embedded mode.
TURN_EXECUTOR = env.str("TURN_EXECUTOR", default="celery" if FULL_STACK else "local")
if TURN_EXECUTOR not in {"celery", "local"}:
    raise ImproperlyConfigured(f"TURN_EXECUTOR must be celery or local, not {TURN_EXECUTOR!r}.")
# Conversations one process drains at once (conversations/runner.py): its turns in flight.
TURN_RUNNER_CAPACITY = env.int("TURN_RUNNER_CAPACITY", default=500)
# A worker holds a turn's lease (and its conversation's lock) for this long, renewing it
# every third of it while the turn runs; an expired lease means the worker is gone.
TURN_LEASE_SECONDS = env.int("TURN_LEASE_SECONDS", default=30)
TURN_MAX_ATTEMPTS = 3
# Queued turns older than this with no worker on them are enqueued again.
TURN_REQUEUE_AFTER_SECONDS = env.int("TURN_REQUEUE_AFTER_SECONDS", default=30)
TURN_EVENTS_MAXLEN = env.int("TURN_EVENTS_MAXLEN", default=5000)
TURN_EVENTS_TTL_SECONDS = env.int("TURN_EVENTS_TTL_SECONDS", default=3600)
# Deltas produced closer together than this are sent as one event.
TURN_DELTA_COALESCE_MS = env.int("TURN_DELTA_COALESCE_MS", default=20)
# Wait before the first retry of a failed model call (then doubling, with jitter).
LLM_RETRY_BACKOFF_S = env.float("LLM_RETRY_BACKOFF_S", default=0.5)
LOCAL_MODEL_TOKEN_DELAY_MS = env.int("LOCAL_MODEL_TOKEN_DELAY_MS", default=40)
# Encrypts provider API keys stored in the database; defaults to a key derived from
# SECRET_KEY (changing it then makes stored keys unreadable: they must be entered again).
ORCHESTRA_ENCRYPTION_KEY = env.str("ORCHESTRA_ENCRYPTION_KEY", default="")
READY_CHECK_TIMEOUT_SECONDS = env.float("READY_CHECK_TIMEOUT_SECONDS", default=2.0)
READY_DEGRADED_LATENCY_MS = env.float("READY_DEGRADED_LATENCY_MS", default=500.0)
