"""Settings, read from the environment (every variable: docs/configuration.md)."""

import re
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key
from kombu import Queue

from common.version import VERSION
from config import stack
from config.database import database_from_url
from config.log_filters import CELERY_TASK_LOGGERS
from config.redis_transport import broker_transport
from config.results import is_database_backend, result_backend_default

BASE_DIR = Path(__file__).resolve().parent.parent

# A second terminal in the project folder reaches the stack `make run` started (see config/stack.py).
stack.join_running_stack(BASE_DIR)

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=False)

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        if not any(env.str(name, default="") for name in stack.SERVER_VARIABLES):
            # Nothing configured and no stack to join: one line, not a traceback.
            sys.exit(stack.nothing_running(BASE_DIR))
        raise ImproperlyConfigured("Set DJANGO_SECRET_KEY (or DJANGO_DEBUG=true for a throwaway key).")
    SECRET_KEY = get_random_secret_key()

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# Behind TLS (directly or through a proxy that sets X-Forwarded-Proto), turn on every
# HTTPS protection at once; locally the service answers plain HTTP on 127.0.0.1.
HTTPS = env.bool("DJANGO_HTTPS", default=False)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    # The desk's admin templates (the index with its Monitoring links) override the admin's own.
    "desk",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_results",
    # Failed admin logins counted per client address, and the address locked out past a limit.
    "axes",
    "django_prometheus",
    "plans",
    "execution",
    "approvals",
    "cli",
]

MIDDLEWARE = [
    # Counts and times every request (/metrics), so it wraps everything else.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # The runs a request queues are sent once its answer is ready (in one publish batch).
    "config.middleware.RunsSentWithAnswerMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # The plan, subtask or approval a request is about, for its log lines (LOG_FORMAT=json).
    "config.middleware.LogContextMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Turns django-axes' lockout into its answer (429 with Retry-After).
    "axes.middleware.AxesMiddleware",
    # The admin's pages with control and bidirectional characters written out (after Django's
    # escaping). Synchronous, as every middleware here: the web's ASGI handler runs the chain as
    # WSGI does, in one call on a thread it keeps for requests (config/handler.py).
    "desk.middleware.AdminTextShown",
]

AUTHENTICATION_BACKENDS = [
    # django-axes first: it refuses a locked-out address before any password is checked.
    "desk.access.LoginLimits",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASES = {
    "default": database_from_url(
        env.str("DATABASE_URL", default="postgresql://postgres@127.0.0.1:5432/plans"),
        conn_max_age=env.int("DATABASE_CONN_MAX_AGE", default=0),
        # Django's PostgreSQL backend, counting connections, queries and their time for /metrics.
        engine="django_prometheus.db.backends.postgresql",
    )
}
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
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "config.storage.StaticFilesStorage"},
}
# After `collectstatic`, hashed and compressed files come from STATIC_ROOT; without it (or for
# a file added since), WhiteNoise serves the apps' own static folders, so the admin is styled either way.
WHITENOISE_USE_FINDERS = True
# An uncollected STATIC_ROOT is expected then; WhiteNoise would warn about it at every start.
warnings.filterwarnings("ignore", message=f"No directory at: {re.escape(str(STATIC_ROOT))}")

# A 10,000-subtask plan with its dependencies is a few megabytes of JSON. The API answers a
# larger body 413 request_too_large (api/errors.py), the admin's forms 400.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE", default=32 * 1024 * 1024)

# `plain` text lines, or `json`: one JSON object per line (time, level, logger, message, and
# plan_id / subtask_id / approval_id when the line is about one), for log collectors.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT is {LOG_FORMAT!r}: use plain or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "common.logs.JsonFormatter"},
    },
    # Filters sit on Celery's own loggers: workers replace the root logger's handlers
    # (worker_hijack_root_logger), never a named logger's filters. Workers give their own
    # handlers the format and the context (config/celery.py).
    "filters": {
        "housekeeping": {"()": "config.log_filters.HousekeepingToDebug"},
        "context": {"()": "common.logs.LogContextFilter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        **{name: {"filters": ["housekeeping"]} for name in CELERY_TASK_LOGGERS},
        # uvicorn's own lines in the same format (it set up its handlers before loading the app).
        **(
            {name: {"handlers": ["console"], "propagate": False} for name in ("uvicorn", "uvicorn.access")}
            if LOG_FORMAT == "json"
            else {}
        ),
    },
}

# Throttle counts, live-stream slots and login lockouts are kept here: with CACHE_URL (Redis)
# every web process shares them; without it each process counts on its own.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": env.str("CACHE_URL")}
        if env.str("CACHE_URL", default="")
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- API -------------------------------------------------------------------------------

REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes unauthenticated requests 401, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON bodies only: one request content type per operation in the schema (the admin keeps its forms).
    "DEFAULT_PARSER_CLASSES": ["api.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.Pagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
        "rest_framework.throttling.ScopedRateThrottle",
    ],
    # Generous enough for a client polling a few times a second; stricter on logins.
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("API_THROTTLE_ANON", default="120/minute"),
        "user": env.str("API_THROTTLE_USER", default="1200/minute"),
        "token": env.str("API_THROTTLE_TOKEN", default="30/minute"),
    },
    # How many proxies in front of the service append to X-Forwarded-For: 0 counts each client by
    # the address that connected (a client's own X-Forwarded-For is ignored), N by the N-th address
    # from the end of that header (what the proxy nearest the service saw).
    "NUM_PROXIES": env.int("DJANGO_NUM_PROXIES", default=0),
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
# A plan's detail shows this many of its subtasks at once (?subtasks_page=N for the others); a
# client may ask for up to API_SUBTASKS_MAX_PAGE_SIZE with ?subtasks_page_size=.
API_SUBTASKS_PAGE_SIZE = env.int("API_SUBTASKS_PAGE_SIZE", default=100)
API_SUBTASKS_MAX_PAGE_SIZE = env.int("API_SUBTASKS_MAX_PAGE_SIZE", default=1000)

SPECTACULAR_SETTINGS = {
    "TITLE": "Plan execution service API",
    "DESCRIPTION": (
        "Submit plans (a goal and subtasks with dependencies), approve them, follow their execution, "
        "and decide the tool calls agents ask for. Errors are "
        '`{"error": {"code": ..., "message": ..., "details": {...}}}`.'
    ),
    "VERSION": VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "ENUM_NAME_OVERRIDES": {
        "PlanStatusEnum": "plans.models.PlanStatus",
        "SubtaskStatusEnum": "plans.models.SubtaskStatus",
        "FailurePolicyEnum": "plans.models.FailurePolicy",
        "ExecutionStateEnum": "execution.models.ExecState",
        "ApprovalStatusEnum": "approvals.models.ApprovalStatus",
        "ApprovalKindEnum": "approvals.models.ApprovalKind",
        "VoteDecisionEnum": "approvals.models.VoteDecision",
        "RuleDecisionEnum": "approvals.rules.DECISIONS",
        "ChannelEnum": "approvals.models.Channel",
        "GrantScopeEnum": "approvals.models.GrantScope",
    },
}

# The admin's login: after this many failed logins from one client address (counted as the API
# counts addresses, DJANGO_NUM_PROXIES), that address may not log in for ADMIN_LOGIN_COOLOFF_S.
AXES_ONLY_ADMIN_SITE = True
AXES_FAILURE_LIMIT = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(seconds=env.int("ADMIN_LOGIN_COOLOFF_S", default=900))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "desk.access.client_address"
AXES_LOCKOUT_CALLABLE = "desk.access.login_locked_out"
# No banner at every process start; lockouts are still logged (WARNING).
AXES_VERBOSE = False

# Webhooks are signed with their plan owner's secret (POST /api/v1/webhook-secret/); this
# deployment-wide one signs for owners without one (with the deprecated X-Plans-Signature too).
# A plan may have a callback_url when its owner, or the deployment, has a secret.
WEBHOOK_SECRET = env.str("WEBHOOK_SECRET", default="")
# After a rotation, the previous secret signs beside the new one for this long.
WEBHOOK_SECRET_OVERLAP_S = env.int("WEBHOOK_SECRET_OVERLAP_S", default=24 * 3600)
# Per network operation (connect, each read); WEBHOOK_DEADLINE_S bounds a whole attempt.
WEBHOOK_TIMEOUT_S = env.float("WEBHOOK_TIMEOUT_S", default=5.0)
WEBHOOK_DEADLINE_S = env.float("WEBHOOK_DEADLINE_S", default=30.0)
WEBHOOK_MAX_RETRIES = env.int("WEBHOOK_MAX_RETRIES", default=8)
# Retry n waits a random time up to min(WEBHOOK_RETRY_BACKOFF_S * 2**n, WEBHOOK_RETRY_BACKOFF_MAX_S).
WEBHOOK_RETRY_BACKOFF_S = env.int("WEBHOOK_RETRY_BACKOFF_S", default=2)
WEBHOOK_RETRY_BACKOFF_MAX_S = env.int("WEBHOOK_RETRY_BACKOFF_MAX_S", default=600)
# Webhooks go to public addresses only; these host names, addresses and networks (CIDR) are
# allowed although they are loopback, link-local or private (e.g. a receiver on the same network).
WEBHOOK_ALLOWED_HOSTS = env.list("WEBHOOK_ALLOWED_HOSTS", default=[])

# Requests one web process works on at once (config/admission.py), each until its response
# starts; more wait their turn. As many threads serve them (config/handler.py), a request's
# middleware and view in one call on one of them. Their database connections come from the
# process's pool (WEB_DATABASE_POOL_SIZE): WEB_CONCURRENCY times that, plus one listener per
# process, must fit PostgreSQL's max_connections beside the workers.
WEB_MAX_CONCURRENT_REQUESTS = env.int("WEB_MAX_CONCURRENT_REQUESTS", default=16)
# The PostgreSQL connections of one web process come from a pool of at most this many
# (config/database.py; 0: none, each request connects anew, or each request thread keeps its
# own as DATABASE_CONN_MAX_AGE says); those unused for WEB_DATABASE_POOL_MAX_IDLE_S are closed,
# down to one. One, as a synchronous worker process has: its views use the CPU one at a time
# anyway (there is one process per core), and the connections stay one per process however
# many clients stream.
WEB_DATABASE_POOL_SIZE = env.int("WEB_DATABASE_POOL_SIZE", default=1)
WEB_DATABASE_POOL_MAX_IDLE_S = env.float("WEB_DATABASE_POOL_MAX_IDLE_S", default=10.0)

# Live event streams (GET /plans/{id}/events/ as Server-Sent Events): at most this many open
# at once per user (429 for one more), each ended after EVENT_STREAM_MAX_AGE_S (clients
# reconnect with Last-Event-ID and go on where they were).
EVENT_STREAMS_PER_USER = env.int("EVENT_STREAMS_PER_USER", default=10)
EVENT_STREAM_MAX_AGE_S = env.float("EVENT_STREAM_MAX_AGE_S", default=3600.0)

# --- Operations: health, metrics ------------------------------------------------------------

# /health/ready/ and /health/ check the database and the broker at most this often per process.
HEALTH_READY_CACHE_S = env.float("HEALTH_READY_CACHE_S", default=1.0)
# /health/ pings the workers at most this often (shared by the web processes through the cache),
HEALTH_WORKERS_CACHE_S = env.float("HEALTH_WORKERS_CACHE_S", default=5.0)
# waits at most this long for their answers,
HEALTH_PING_TIMEOUT_S = env.float("HEALTH_PING_TIMEOUT_S", default=0.5)
# and stops waiting once this many worker nodes answered (the ping's limit): fewer is "not ok".
HEALTH_WORKERS = env.int("HEALTH_WORKERS", default=1)

# /metrics answers `Authorization: Bearer <METRICS_TOKEN>`; unset, it answers only with DJANGO_DEBUG on.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# The service's own metrics are read from PostgreSQL and Redis at most this often (shared by the
# web processes through the cache): a scrape costs a few aggregate queries, not one per scraper.
METRICS_CACHE_S = env.float("METRICS_CACHE_S", default=10.0)

# --- Plans -----------------------------------------------------------------------------

PLANS_MAX_SUBTASKS = env.int("PLANS_MAX_SUBTASKS", default=10_000)
PLANS_MAX_GOAL_LENGTH = env.int("PLANS_MAX_GOAL_LENGTH", default=10_000)
PLANS_MAX_DESCRIPTION_LENGTH = env.int("PLANS_MAX_DESCRIPTION_LENGTH", default=10_000)
# The most keys one subtask's depends_on may list.
PLANS_MAX_DEPENDENCIES = env.int("PLANS_MAX_DEPENDENCIES", default=100)
# The most plans one user may have that are not finished (draft, approved, in progress); 0: no limit.
PLANS_MAX_ACTIVE_PER_USER = env.int("PLANS_MAX_ACTIVE_PER_USER", default=100)

# --- Execution -------------------------------------------------------------------------

# Redis re-delivers a message that stays unacknowledged longer than this; every time
# limit, retry countdown and lease below must stay well inside it.
CELERY_VISIBILITY_TIMEOUT_S = env.int("CELERY_VISIBILITY_TIMEOUT_S", default=3600)

EXECUTION_DEFAULT_TIMEOUT_S = env.int("EXECUTION_DEFAULT_TIMEOUT_S", default=300)
EXECUTION_MAX_TIMEOUT_S = env.int("EXECUTION_MAX_TIMEOUT_S", default=1800)
# Hard time limit = timeout + this grace, so the soft limit can be handled first.
EXECUTION_HARD_LIMIT_GRACE_S = env.int("EXECUTION_HARD_LIMIT_GRACE_S", default=30)
# A running subtask's lease ends this long after its hard time limit; past it the run is
# presumed hung (e.g. a frozen worker) and another attempt takes over.
EXECUTION_LEASE_SLACK_S = env.int("EXECUTION_LEASE_SLACK_S", default=30)
EXECUTION_RETRY_BACKOFF_BASE_S = env.float("EXECUTION_RETRY_BACKOFF_BASE_S", default=2.0)
EXECUTION_RETRY_BACKOFF_CAP_S = env.float("EXECUTION_RETRY_BACKOFF_CAP_S", default=300.0)
# A run over one of its agent's limits (max_concurrency) is sent again after this long, its
# worker free meanwhile; over requests_per_minute or held back by a Retry-After, after the wait.
EXECUTION_LIMIT_DEFER_S = env.float("EXECUTION_LIMIT_DEFER_S", default=1.0)
EXECUTION_RECONCILE_INTERVAL_S = env.float("EXECUTION_RECONCILE_INTERVAL_S", default=5.0)
# A queued subtask whose message has not started after this long, while its queue is
# empty, is presumed lost by the broker and dispatched again.
EXECUTION_QUEUED_STALL_S = env.float("EXECUTION_QUEUED_STALL_S", default=30.0)
# A subtask whose run was lost this many times (worker killed, hung past its lease) is
# failed as poison instead of being dispatched again.
EXECUTION_MAX_LOST_RUNS = env.int("EXECUTION_MAX_LOST_RUNS", default=3)
# The largest result (as JSON) an agent may return; a larger one fails the subtask, saying so.
EXECUTION_MAX_RESULT_BYTES = env.int("EXECUTION_MAX_RESULT_BYTES", default=1_000_000)
# The most bytes of its dependencies' results (as JSON) one run may gather; over it the run
# fails, saying so, without calling its agent (measured in PostgreSQL, nothing read out).
EXECUTION_MAX_CONTEXT_BYTES = env.int("EXECUTION_MAX_CONTEXT_BYTES", default=10_000_000)
# The largest conversation (as JSON) a model agent may keep: more fails the subtask, naming this
# limit. Above the context a run may gather, which its first message carries.
EXECUTION_MAX_CONVERSATION_BYTES = env.int("EXECUTION_MAX_CONVERSATION_BYTES", default=20_000_000)
# The most tool calls one model answer may ask for; more fails the subtask before any runs.
EXECUTION_MAX_TOOL_CALLS_PER_ANSWER = env.int("EXECUTION_MAX_TOOL_CALLS_PER_ANSWER", default=32)
EXECUTION_PYTHON_AGENT_MODULES = env.list("EXECUTION_PYTHON_AGENT_MODULES", default=[])
EXECUTION_HTTP_AGENT_URL = env.str("EXECUTION_HTTP_AGENT_URL", default="")
EXECUTION_HTTP_AGENT_TIMEOUT_S = env.float("EXECUTION_HTTP_AGENT_TIMEOUT_S", default=30.0)

# Agent name -> implementation and its options. `coder`, `debug` and `ask` are the
# seeds' agents, played here by the deterministic script agent unless
# EXECUTION_AGENTS_FILE defines them (examples/agents.json makes them language models).
EXECUTION_AGENTS = {
    "script": {"class": "execution.agents.script.ScriptAgent"},
    "http": {
        "class": "execution.agents.http.HttpAgent",
        "url": EXECUTION_HTTP_AGENT_URL,
        "timeout_s": EXECUTION_HTTP_AGENT_TIMEOUT_S,
    },
    "python": {"class": "execution.agents.python.PythonAgent"},
    "coder": {"class": "execution.agents.script.ScriptAgent"},
    "debug": {"class": "execution.agents.script.ScriptAgent"},
    "ask": {"class": "execution.agents.script.ScriptAgent"},
}

# A JSON file of agent definitions ({"name": {"kind": ..., ...options}}) added to the
# agents above, replacing same-named ones; read and checked when every process starts.
EXECUTION_AGENTS_FILE = env.str("EXECUTION_AGENTS_FILE", default="")
# The directory the worker tools (read_file, list_files) are confined to; unset, they refuse.
EXECUTION_WORKSPACE_DIR = env.str("EXECUTION_WORKSPACE_DIR", default="")
# A streamed answer's text goes to the live event stream at most once per this many
# seconds per subtask (the pieces in between are joined).
EXECUTION_STREAM_DELTA_INTERVAL_S = env.float("EXECUTION_STREAM_DELTA_INTERVAL_S", default=0.1)

# --- Approvals -------------------------------------------------------------------------

# Default lifetime of a pending approval; 0 means approvals never expire.
APPROVALS_DEFAULT_TTL_S = env.int("APPROVALS_DEFAULT_TTL_S", default=24 * 3600)
# A JSON file of approval rules ({"rules": [...]}, docs/policies.md), matched in order against
# every approval about to be requested; read and checked when every process starts.
APPROVALS_POLICY_FILE = env.str("APPROVALS_POLICY_FILE", default="")
# Whether, by default, the plan's owner may not vote on its approvals (an "ask" rule may say otherwise).
APPROVALS_SEPARATE_REQUESTER = env.bool("APPROVALS_SEPARATE_REQUESTER", default=False)

# --- Celery ----------------------------------------------------------------------------

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
# On Redis, kombu's transport keeping one client object per connection pool (config/redis_transport.py).
CELERY_BROKER_TRANSPORT = broker_transport(CELERY_BROKER_URL)
# The broker's Redis server by default (config/results.py); `django-db` keeps each task's result in
# PostgreSQL, shown in the admin, at about 3 ms more per subtask.
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="") or result_backend_default(CELERY_BROKER_URL)
_results_in_database = is_database_backend(CELERY_RESULT_BACKEND)  # where the admin shows them
# Task names and arguments are stored with the results only where the admin shows them.
CELERY_RESULT_EXTENDED = _results_in_database
CELERY_RESULT_EXPIRES = env.int("CELERY_RESULT_EXPIRES_S", default=7 * 24 * 3600 if _results_in_database else 24 * 3600)
# A run's return value is read by no one (the engine keeps each outcome in its own tables), so
# where results are not shown (the admin shows django-db's) a run that succeeds stores nothing:
# the read-then-write Celery makes of every stored result took about a quarter of a no-op run's
# time in a worker's profile. Its chord still counts it (on_chord_part_return needs no stored
# result), and its failures, retries and revocations are still stored (AsyncResult(task_id).state).
CELERY_TASK_ANNOTATIONS = (
    {}
    if _results_in_database
    else {"execution.run_subtask": {"ignore_result": True, "store_errors_even_if_ignored": True}}
)
# One result backend object (and its Redis connection pool) per process, not one per thread: the
# web serves each request on a thread of its own, and made a backend and a connection for each.
CELERY_RESULT_BACKEND_THREAD_SAFE = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Unless this is set, Celery's Django fixup closes the database connections before and after
# every task, and a worker connects anew for each subtask, whatever CONN_MAX_AGE says. Set,
# it closes them only every this many tasks; Django's own rules (DATABASE_CONN_MAX_AGE and
# the health checks) decide at each task's start (execution/worker.py).
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
# Worker processes keep their database connections this many seconds, whatever
# DATABASE_CONN_MAX_AGE says for the web (execution/worker.py): a worker started with nothing
# set connects once, not once per task.
WORKER_DATABASE_CONN_MAX_AGE = env.int("WORKER_DATABASE_CONN_MAX_AGE", default=600)
# A worker checks its kept connection before a task (CONN_HEALTH_CHECKS) only when its last task
# ended at least this many seconds ago (execution/worker.py); 0 checks before every task.
WORKER_DATABASE_HEALTH_CHECK_IDLE_S = env.float("WORKER_DATABASE_HEALTH_CHECK_IDLE_S", default=1.0)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT_S}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Task events (what Flower shows of each task) cost a Redis publish per task and change of state.
# As in Celery, workers send them only when asked: Flower asks while it runs (its
# --enable_events, on by default), and `celery -A config control enable_events` does too.
CELERY_WORKER_SEND_TASK_EVENTS = env.bool("CELERY_WORKER_SEND_TASK_EVENTS", default=False)
CELERY_TASK_SEND_SENT_EVENT = env.bool("CELERY_TASK_SEND_SENT_EVENT", default=False)
# A task's start is not written to the result backend (with django-db, a row per task): Flower sees
# it from the task events, and the engine records each run's start itself.
CELERY_TASK_TRACK_STARTED = False
CELERY_TASK_DEFAULT_QUEUE = "control"
CELERY_TASK_QUEUES = [Queue("subtasks"), Queue("control"), Queue("webhooks")]
CELERY_TASK_ROUTES = {
    "execution.run_subtask": {"queue": "subtasks"},
    "execution.deliver_webhook": {"queue": "webhooks"},
}
# A tick not picked up before the next one is pointless: let it expire.
CELERY_BEAT_SCHEDULE = {
    "reconcile": {
        "task": "execution.reconcile",
        "schedule": EXECUTION_RECONCILE_INTERVAL_S,
        "options": {"expires": EXECUTION_RECONCILE_INTERVAL_S},
    },
    "expire-approvals": {
        "task": "approvals.expire_overdue",
        "schedule": EXECUTION_RECONCILE_INTERVAL_S,
        "options": {"expires": EXECUTION_RECONCILE_INTERVAL_S},
    },
}

FLOWER_URL = env.str("FLOWER_URL", default="http://127.0.0.1:5555/")
