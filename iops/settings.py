"""IOps settings: one module, driven by the environment (see docs/configuration.md).

With no variables set it runs embedded: SQLite under var/, the `database` stream, the in-memory
channel layer and an in-process worker. DATABASE_URL, REDIS_URL and IOPS_STREAM switch roles.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from iops.lib.env import (
    absolute_base_url,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
    frame_ancestors,
    time_zone_name,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("IOPS_VAR_DIR", str(BASE_DIR / "var")) or BASE_DIR / "var")
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
TESTING = env_bool("IOPS_TESTING", False)
# A production start: a server database, not DEBUG, not the test suite. It must not run on defaults
# meant for a laptop or on .env.example's placeholders.
PRODUCTION = bool(env_str("DATABASE_URL")) and not DEBUG and not TESTING


def _not_a_placeholder(name: str, value: str | None) -> str | None:
    """.env.example's secrets start with "change-me": a production start with one is refused."""
    if PRODUCTION and value and value.lower().startswith("change-me"):
        raise ImproperlyConfigured(
            f"{name} is still the .env.example placeholder; set your own, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(64))'"
        )
    return value


def _secret_key() -> str:
    value = _not_a_placeholder("SECRET_KEY", env_str("SECRET_KEY"))
    if value:
        return value
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when DATABASE_URL selects a production database")
    # Embedded mode: a per-checkout key kept outside the repository (var/ is git-ignored).
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(64))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "ninja",
    "ingest",
    "metrics",
    "alerts",
    "insights",
    "pipeline",
    "simulator",
    "dashboard",
    "iops",  # the composition root, last: operations, retention, the launchers serve and bootstrap
]

MIDDLEWARE = [
    "iops.lib.http.FrameAncestorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "iops.lib.request_id.RequestIdMiddleware",
    "iops.lib.http.UnstorableInputMiddleware",
    "iops.lib.http.DatabaseErrorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "dashboard.timezones.DisplayTimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "iops.urls"
ASGI_APPLICATION = "iops.asgi.application"
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

# --- database -------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'iops.sqlite3'}")
# Tests close connections after each unit of work: a persistent connection held by a thread pool
# (Channels' database_sync_to_async executor) would keep the test database from being dropped.
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0 if TESTING else 60)
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets the dashboard read while the worker thread writes; IMMEDIATE avoids upgrade deadlocks.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- streams, workers, channel layer ------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
IOPS_STREAM = env_choice(
    "IOPS_STREAM", "redis" if REDIS_URL else "database", ("database", "redis", "kinesis")
)
if IOPS_STREAM == "redis" and not REDIS_URL:
    raise ImproperlyConfigured("IOPS_STREAM=redis needs REDIS_URL")
# A production start refuses a Redis stream without its append-only file (everything accepted and not
# yet processed would be lost on a Redis restart); /healthz reports it (issue 21).
REDIS_REQUIRE_AOF = env_bool("REDIS_REQUIRE_AOF", PRODUCTION)
IOPS_STREAM_KEY = env_str("IOPS_STREAM_KEY", "iops:events") or "iops:events"
IOPS_STREAM_GROUP = env_str("IOPS_STREAM_GROUP", "iops-workers") or "iops-workers"
KINESIS_STREAM_NAME = env_str("KINESIS_STREAM_NAME")
AWS_REGION = env_str("AWS_REGION", "us-east-1")
AWS_ENDPOINT_URL = env_str("AWS_ENDPOINT_URL")  # moto or LocalStack in tests/dev
if IOPS_STREAM == "kinesis" and not KINESIS_STREAM_NAME:
    raise ImproperlyConfigured("IOPS_STREAM=kinesis needs KINESIS_STREAM_NAME")

# Larger batches amortise each batch's fixed cost (one worker on 2 cores: 500 → 2,000 gave ~3,900 →
# ~6,000 events/s, bench/scaling.py --batch-size); a light stream still gives small batches.
WORKER_BATCH_SIZE = env_int("WORKER_BATCH_SIZE", 2000, minimum=1)
WORKER_BLOCK_MS = env_int("WORKER_BLOCK_MS", 200, minimum=1)
STREAM_CLAIM_IDLE_MS = env_int("STREAM_CLAIM_IDLE_MS", 30_000, minimum=100)
STREAM_MAX_DELIVERIES = env_int("STREAM_MAX_DELIVERIES", 5, minimum=1)
# In embedded mode the worker runs as a thread of the one server process; Celery is not used.
IOPS_EMBEDDED_WORKER = env_bool("IOPS_EMBEDDED_WORKER", not bool(REDIS_URL))

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": env_str("CHANNEL_LAYER_PREFIX", "iops") or "iops"},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
DASHBOARD_PUSH_INTERVAL_MS = env_int("DASHBOARD_PUSH_INTERVAL_MS", 500, minimum=50)

# memory://localhost/: the in-process broker of embedded mode, named so kombu does not warn about it.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL or "memory://localhost/")
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not bool(REDIS_URL))
# An eager task's failure raises at the call, so the caller's savepoint rolls its statements back.
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TIMEZONE = "UTC"

# --- ingest ---------------------------------------------------------------------------------
INGEST_MAX_BODY_BYTES = env_int("INGEST_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
INGEST_MAX_BATCH = 500
INGEST_MAX_FUTURE_SECONDS = 300
INGEST_RATE_LIMIT_PER_SEC = env_float("INGEST_RATE_LIMIT_PER_SEC", 5000.0)
INGEST_RATE_LIMIT_BURST = env_int("INGEST_RATE_LIMIT_BURST", 10000, minimum=1)
if INGEST_RATE_LIMIT_PER_SEC <= 0:
    raise ImproperlyConfigured("INGEST_RATE_LIMIT_PER_SEC must be > 0")
DATA_UPLOAD_MAX_MEMORY_SIZE = INGEST_MAX_BODY_BYTES + 1
# Daphne must have a whole request (line, headers, body) this long after its first line, and a new
# request line this long after a connection opens or its last response (iops/lib/daphne_guard.py).
HTTP_READ_TIMEOUT_SECONDS = env_float("HTTP_READ_TIMEOUT_SECONDS", 30.0)
if HTTP_READ_TIMEOUT_SECONDS <= 0:
    raise ImproperlyConfigured("HTTP_READ_TIMEOUT_SECONDS must be > 0")
EVENT_RETENTION_DAYS = env_int("EVENT_RETENTION_DAYS", 45, minimum=31)

# --- alert thresholds (docs/configuration.md "Alert rules and lifecycle") ----------------------------
ALERT_LOW_HEALTH_WARNING = env_float("ALERT_LOW_HEALTH_WARNING", 70.0)
ALERT_LOW_HEALTH_CRITICAL = env_float("ALERT_LOW_HEALTH_CRITICAL", 50.0)
ALERT_IB_CALLS_14D = env_int("ALERT_IB_CALLS_14D", 3, minimum=1)
# Our health score (metrics/health.py): a student watched for fewer days, with no failed first session,
# is "not enough data yet"; a first session counts as their first only after this many days of our data.
HEALTH_MIN_HISTORY_DAYS = env_int("HEALTH_MIN_HISTORY_DAYS", 14, minimum=1)
FIRST_SESSION_LOOKBACK_DAYS = env_int("FIRST_SESSION_LOOKBACK_DAYS", 30, minimum=0)

# Thresholds staff may override at runtime in the admin (alerts/thresholds.py): each process re-reads
# the stored version at most this often, so a change reaches every worker within it.
THRESHOLDS_CACHE_SECONDS = env_float("THRESHOLDS_CACHE_SECONDS", 5.0)
if THRESHOLDS_CACHE_SECONDS < 0:
    raise ImproperlyConfigured("THRESHOLDS_CACHE_SECONDS must be >= 0")
# Model quality (/quality): a precision needs this many labelled alerts, a calibration bin this many
# scored students; fewer is shown as "not enough data".
QUALITY_MIN_LABELS = env_int("QUALITY_MIN_LABELS", 5, minimum=1)
QUALITY_MIN_BIN = env_int("QUALITY_MIN_BIN", 5, minimum=1)

# --- churn model ----------------------------------------------------------------------------
BEDROCK_MODEL_ID = env_str("BEDROCK_MODEL_ID")

# --- security ------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG and bool(env_str("DATABASE_URL")) and not TESTING)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", False) else None
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Who may frame the embeddable panels (/embed/<panel>/): CSP frame-ancestors sources, e.g.
# "https://admin.example.com"; every other page answers frame-ancestors 'none'.
FRAME_ANCESTORS = frame_ancestors("FRAME_ANCESTORS", env_str("FRAME_ANCESTORS", "'none'"))
EMBED_LINK_MAX_AGE_SECONDS = env_int("EMBED_LINK_MAX_AGE_SECONDS", 7 * 86400, minimum=60)
SILENCED_SYSTEM_CHECKS = env_list("SILENCED_SYSTEM_CHECKS", [])

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"  # stored and computed times; pages show DISPLAY_TIME_ZONE or the user's own
DISPLAY_TIME_ZONE = time_zone_name("DISPLAY_TIME_ZONE", env_str("DISPLAY_TIME_ZONE", "UTC"))
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # embedded mode serves straight from static/ without collectstatic

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "iops@localhost")
# Where people reach IOps (behind its proxy): the base of every link sent out — alert messages, signed
# embed links — never the address daphne binds. DASHBOARD_BASE_URL is its older name, still read.
PUBLIC_BASE_URL = absolute_base_url(
    "PUBLIC_BASE_URL",
    env_str("PUBLIC_BASE_URL") or env_str("DASHBOARD_BASE_URL") or "http://127.0.0.1:8000",
)
METRICS_TOKEN = _not_a_placeholder("METRICS_TOKEN", env_str("METRICS_TOKEN"))

# --- logging --------------------------------------------------------------------------------
LOG_FORMAT = env_choice("LOG_FORMAT", "text" if not env_str("DATABASE_URL") else "json", ("text", "json"))
LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "iops.lib.request_id.RequestIdFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            "rename_fields": {"asctime": "ts", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
        # Embedded mode runs every periodic task inline (some every few seconds): their "succeeded"
        # lines would drown the log. Failures are still logged; workers keep Celery's INFO lines.
        **({"celery.app.trace": {"level": "WARNING"}} if CELERY_TASK_ALWAYS_EAGER else {}),
    },
}

# --- ingest hot path and kinesis (issue #3) -------------------------------------------------
# API key lookups are cached in each web process this long; revocation takes effect within it.
INGEST_KEY_CACHE_SECONDS = env_float("INGEST_KEY_CACHE_SECONDS", 5.0)
# PutRecords attempts for records Kinesis refused (FailedRecordCount) before they are rejected (503).
KINESIS_PUT_ATTEMPTS = env_int("KINESIS_PUT_ATTEMPTS", 3, minimum=1)
# A shard lease not renewed for this long is taken over by another consumer.
KINESIS_LEASE_SECONDS = env_int("KINESIS_LEASE_SECONDS", 30, minimum=1)

# --- simulator (issue 8) -----------------------------------------------------------------------
SIMULATOR_ENABLED = env_bool("SIMULATOR_ENABLED", False)
SIMULATOR_TICK_EVENTS = env_int("SIMULATOR_TICK_EVENTS", 100, minimum=1)
SIMULATOR_SEED = env_int("SIMULATOR_SEED", 42)

# --- alert detection and lifecycle (issue 5) -------------------------------------------------
# Velocity drop: sessions this week / prior 3-week weekly mean below this, for students averaging ≥ the minimum.
ALERT_VELOCITY_DROP_RATIO = env_float("ALERT_VELOCITY_DROP_RATIO", 0.5)
ALERT_VELOCITY_MIN_PRIOR_WEEKLY = env_float("ALERT_VELOCITY_MIN_PRIOR_WEEKLY", 1.0)
ALERT_VELOCITY_MAX_CHANCE = env_float("ALERT_VELOCITY_MAX_CHANCE", 0.01)
# Tutor overload: utilisation (hours taught in 7 days / available hours) above, or mean rating below.
ALERT_TUTOR_UTILISATION = env_float("ALERT_TUTOR_UTILISATION", 0.9)
ALERT_TUTOR_RATING = env_float("ALERT_TUTOR_RATING", 3.5)
ALERT_TUTOR_MIN_RATED = env_int("ALERT_TUTOR_MIN_RATED", 5, minimum=1)
# Supply–demand imbalance: info while high demand, warning once sustained, critical when severe.
ALERT_IMBALANCE_SUSTAINED_MINUTES = env_int("ALERT_IMBALANCE_SUSTAINED_MINUTES", 60, minimum=0)
ALERT_IMBALANCE_SEVERE_RATIO = env_float("ALERT_IMBALANCE_SEVERE_RATIO", 3.0)
# Lifecycle: an active alert whose condition stays clear this long is resolved by the sweep;
# after a dismissal or an auto-resolve the same condition opens no new alert for the cooldown.
ALERT_AUTO_RESOLVE_MINUTES = env_int("ALERT_AUTO_RESOLVE_MINUTES", 30, minimum=1)
ALERT_COOLDOWN_MINUTES = env_int("ALERT_COOLDOWN_MINUTES", 60, minimum=0)
# A repeat of an open alert counts once per tick: within it the row is not rewritten (issue 20).
ALERT_REPEAT_TICK_SECONDS = env_int("ALERT_REPEAT_TICK_SECONDS", 60, minimum=0)
ALERT_SWEEP_SECONDS = env_int("ALERT_SWEEP_SECONDS", 30, minimum=5)
# How often snapshots untouched for an hour are refreshed (windows decay) and their rules re-run.
SNAPSHOT_REFRESH_SECONDS = env_int("SNAPSHOT_REFRESH_SECONDS", 300, minimum=30)
# Rate anomalies on the global per-minute series (alerts/anomaly.py).
ALERT_ANOMALY_WINDOW_MINUTES = env_int("ALERT_ANOMALY_WINDOW_MINUTES", 60, minimum=10)
ALERT_ANOMALY_Z_WARNING = env_float("ALERT_ANOMALY_Z_WARNING", 5.0)
ALERT_ANOMALY_Z_CRITICAL = env_float("ALERT_ANOMALY_Z_CRITICAL", 10.0)
ALERT_ANOMALY_MIN_VOLUME = env_float("ALERT_ANOMALY_MIN_VOLUME", 5.0)
ALERT_ANOMALY_MIN_RATIO = env_float("ALERT_ANOMALY_MIN_RATIO", 2.0)
ALERT_ANOMALY_CRITICAL_RATIO = env_float("ALERT_ANOMALY_CRITICAL_RATIO", 5.0)
ALERT_ANOMALY_MIN_HISTORY_MINUTES = env_int("ALERT_ANOMALY_MIN_HISTORY_MINUTES", 45, minimum=1)
# The alert sweep's Celery task lives outside alerts/tasks.py (owned by the delivery work).

# --- alert routing and delivery (issue 5, notify) ----------------------------------------------
# A delivery is tried this many times (exponential backoff with jitter from the base) before it
# becomes a dead letter; permanent errors (bad address, missing topic, HTTP 4xx) are dead at once.
ALERT_DELIVERY_MAX_ATTEMPTS = env_int("ALERT_DELIVERY_MAX_ATTEMPTS", 5, minimum=1)
ALERT_DELIVERY_BACKOFF_SECONDS = env_float("ALERT_DELIVERY_BACKOFF_SECONDS", 10.0)
ALERT_DELIVERY_BACKOFF_MAX_SECONDS = env_float("ALERT_DELIVERY_BACKOFF_MAX_SECONDS", 3600.0)
# How often due deliveries are swept (beat in production, a thread of `manage.py serve` embedded).
ALERT_DELIVERY_SWEEP_SECONDS = env_float("ALERT_DELIVERY_SWEEP_SECONDS", 5.0)
# Timeout of one webhook POST (also the AWS connect/read timeouts of SNS and EventBridge).
ALERT_WEBHOOK_TIMEOUT_SECONDS = env_float("ALERT_WEBHOOK_TIMEOUT_SECONDS", 5.0)
# Optional SQS queue that receives a copy of every dead letter (the prototype kept 14 days).
ALERT_DLQ_SQS_URL = env_str("ALERT_DLQ_SQS_URL")
if (
    ALERT_DELIVERY_BACKOFF_SECONDS <= 0
    or ALERT_WEBHOOK_TIMEOUT_SECONDS <= 0
    or ALERT_DELIVERY_SWEEP_SECONDS <= 0
):
    raise ImproperlyConfigured(
        "ALERT_DELIVERY_BACKOFF_SECONDS, ALERT_DELIVERY_SWEEP_SECONDS and ALERT_WEBHOOK_TIMEOUT_SECONDS must be > 0"
    )

# --- operations: heartbeats, /metrics, retention (issue 9, ops) ---------------------------------
# Each stream worker upserts its WorkerHeartbeat this often and logs one progress line per interval.
WORKER_HEARTBEAT_SECONDS = env_float("WORKER_HEARTBEAT_SECONDS", 5.0)
WORKER_LOG_SECONDS = env_float("WORKER_LOG_SECONDS", 60.0)
# /healthz fails its `worker` check when a worker is expected and no heartbeat is this recent.
WORKER_HEARTBEAT_MAX_AGE_SECONDS = env_int("WORKER_HEARTBEAT_MAX_AGE_SECONDS", 60, minimum=1)
# A worker is expected except under tests (the embedded `serve` and Celery workers both beat).
WORKER_EXPECTED = env_bool("WORKER_EXPECTED", not TESTING)
# The channel-layer round trip of /healthz gives up after this long (reported as a failed check).
HEALTHZ_TIMEOUT_SECONDS = env_float("HEALTHZ_TIMEOUT_SECONDS", 2.0)
# Web processes fold their accepted/rejected tallies into the database at most this often.
METRICS_FLUSH_SECONDS = env_float("METRICS_FLUSH_SECONDS", 5.0)
# Retention: minute/hour buckets and insights are kept this long (raw events: EVENT_RETENTION_DAYS).
AGGREGATE_RETENTION_DAYS = env_int("AGGREGATE_RETENTION_DAYS", 90, minimum=31)
RETENTION_BATCH_SIZE = env_int("RETENTION_BATCH_SIZE", 5000, minimum=1)
if WORKER_HEARTBEAT_SECONDS < 0 or WORKER_LOG_SECONDS <= 0 or METRICS_FLUSH_SECONDS < 0:
    raise ImproperlyConfigured(
        "WORKER_HEARTBEAT_SECONDS and METRICS_FLUSH_SECONDS must be >= 0, WORKER_LOG_SECONDS > 0"
    )
if HEALTHZ_TIMEOUT_SECONDS <= 0:
    raise ImproperlyConfigured("HEALTHZ_TIMEOUT_SECONDS must be > 0")
# A Redis outage must not end the Celery worker (its default gives up after 100 reconnects): it keeps
# retrying, and a task running when the broker went away is cancelled and redelivered (acks_late).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True

# --- churn insights (issue 6) --------------------------------------------------------------------
# Within this window an entity's latest insight is kept while it still says the same (level, reasons,
# risk within 5 points: insights/local_model.same_story), even if figures it quotes moved; 0 = off.
INSIGHTS_CACHE_MINUTES = env_int("INSIGHTS_CACHE_MINUTES", 30, minimum=0)
# Bedrock budget per calendar minute and UTC day, claimed atomically in the database before each
# call (insights/budget.py), so it holds across workers; over it the local model answers with
# fallback_reason "budget: …".
INSIGHTS_BEDROCK_MAX_PER_MINUTE = env_int("INSIGHTS_BEDROCK_MAX_PER_MINUTE", 10, minimum=0)
INSIGHTS_BEDROCK_MAX_PER_DAY = env_int("INSIGHTS_BEDROCK_MAX_PER_DAY", 2000, minimum=0)
# One Converse call: read and connect timeouts, our retries on ThrottlingException (botocore's are off).
INSIGHTS_BEDROCK_TIMEOUT_SECONDS = env_float("INSIGHTS_BEDROCK_TIMEOUT_SECONDS", 10.0)
# TCP connect gives up sooner than a reply: an unreachable endpoint falls back within 3 s.
INSIGHTS_BEDROCK_CONNECT_TIMEOUT_SECONDS = min(3.0, INSIGHTS_BEDROCK_TIMEOUT_SECONDS)
INSIGHTS_BEDROCK_THROTTLE_RETRIES = env_int("INSIGHTS_BEDROCK_THROTTLE_RETRIES", 2, minimum=0)
INSIGHTS_BEDROCK_BACKOFF_SECONDS = env_float("INSIGHTS_BEDROCK_BACKOFF_SECONDS", 0.5)
# Beat: every INSIGHTS_BEAT_SECONDS, score the N riskiest students and tutors by the local model.
INSIGHTS_BEAT_TOP_N = env_int("INSIGHTS_BEAT_TOP_N", 20, minimum=0)
INSIGHTS_BEAT_SECONDS = env_int("INSIGHTS_BEAT_SECONDS", 900, minimum=60)
if INSIGHTS_BEDROCK_TIMEOUT_SECONDS <= 0 or INSIGHTS_BEDROCK_BACKOFF_SECONDS < 0:
    raise ImproperlyConfigured(
        "INSIGHTS_BEDROCK_TIMEOUT_SECONDS must be > 0 and INSIGHTS_BEDROCK_BACKOFF_SECONDS >= 0"
    )


# --- beat: one schedule for `celery -A iops beat` and the threads of `manage.py serve` -------------
def _every(task: str, seconds: float) -> dict[str, str | float]:
    return {"task": task, "schedule": float(seconds)}


CELERY_BEAT_SCHEDULE = {
    # Windows decay with time: stale snapshots refreshed and their alert rules run.
    "refresh-stale-snapshots": _every("alerts.refresh_stale", SNAPSHOT_REFRESH_SECONDS),
    # A no-op unless SIMULATOR_ENABLED is true (off by default, like the prototype's disabled schedule).
    "simulate-tick": _every("simulator.simulate_tick", 60),
    # Alert deliveries due now: first attempts the fast path missed, and retries (issue 5).
    "send-due-alert-deliveries": _every("alerts.send_due_deliveries", ALERT_DELIVERY_SWEEP_SECONDS),
    # Digests (issue 19): each digest channel's one message once its hour or day has ended.
    "send-alert-digests": _every("alerts.send_digests", 60),
    # Alert re-checks, rate anomalies (once a minute) and auto-resolve (issue 5).
    "alerts-sweep": _every("alerts.sweep", ALERT_SWEEP_SECONDS),
    # Retention (issue 9): expired raw events, buckets and insights in bounded batches (iops/tasks.py).
    "retention": _every("ingest.retention", 3600),
    # Churn/burnout insights for the N riskiest entities by the local model (issue 6).
    "insights-score-riskiest": _every("insights.score_riskiest", INSIGHTS_BEAT_SECONDS),
}
