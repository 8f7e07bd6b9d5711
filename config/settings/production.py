"""Production: every secret must come from the environment; nothing falls back to a default.

Missing `SECRET_KEY`, `OWNER_PSEUDONYM_SECRET`, `DATABASE_URL`, `REDIS_URL`,
`JWT_ISSUER`, `JWT_JWKS_URL`, `JWT_AUDIENCE`, `ARCHIVE_KEKS` or `ALLOWED_HOSTS`
stops the process at start-up with ImproperlyConfigured; so do weak secrets, an
empty or malformed KEK list, `ALLOWED_HOSTS=*` and JWT algorithms the verifier
refuses (config/settings/safety.py).
"""

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import REDIS_CLUSTER, REDIS_KEY_PREFIX, env, pooled, redis_cache, redis_session_store
from config.settings.safety import require_algorithms, require_hosts, require_keks, require_strong_secret
from core.observability.logs import logging_config

SECRET_KEY = env("SECRET_KEY")
OWNER_PSEUDONYM_SECRET = env("OWNER_PSEUDONYM_SECRET")
DATABASES = {"default": pooled(env.db("DATABASE_URL"))}
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
require_hosts(ALLOWED_HOSTS)
JWT_ISSUER = env("JWT_ISSUER")
JWT_JWKS_URL = env("JWT_JWKS_URL")
JWT_AUDIENCE = env.list("JWT_AUDIENCE")
require_algorithms(JWT_ALGORITHMS)  # noqa: F405

# Archives are encrypted under keys that only the environment holds: never the
# development key made on local disk (different per replica, lost with the container).
ARCHIVE_KEKS = env("ARCHIVE_KEKS")
require_keks(ARCHIVE_KEKS, ARCHIVE_ACTIVE_KEK)  # noqa: F405

if OIDC_RP_CLIENT_ID:  # noqa: F405
    OIDC_RP_CLIENT_SECRET = env("ADMIN_OIDC_CLIENT_SECRET")
    # Admin accounts are linked by (issuer, subject): ID tokens from any other issuer are refused.
    ADMIN_OIDC_ISSUER = env("ADMIN_OIDC_ISSUER")

METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_BIND = env("METRICS_BIND", default="")
if not (METRICS_TOKEN or METRICS_BIND):
    raise ImproperlyConfigured("Set METRICS_TOKEN or METRICS_BIND: /metrics is never public in production.")
if METRICS_TOKEN:
    require_strong_secret("METRICS_TOKEN", METRICS_TOKEN, min_length=32, min_bits=64)

# Development tokens are never accepted in production, whatever the environment says.
DEV_MODE = False
DEBUG = False

for _name, _value in {"SECRET_KEY": SECRET_KEY, "OWNER_PSEUDONYM_SECRET": OWNER_PSEUDONYM_SECRET}.items():
    require_strong_secret(_name, _value, min_length=50, min_bits=128)

# Active sessions must be shared by every gateway instance.
REDIS_URL = env("REDIS_URL")
CACHES = {"default": redis_cache(REDIS_URL)}
ACTIVE_SESSION_STORE = redis_session_store(REDIS_URL)
SCHEDULER_EMBEDDED = env.bool("SCHEDULER_EMBEDDED", default=False)  # run `manage.py run_scheduler`
ARCHIVE_OWNER_GATE = {
    "CLASS": "archive.owner_gate.RedisOwnerGate",
    "OPTIONS": {"url": REDIS_URL, "prefix": REDIS_KEY_PREFIX, "cluster": REDIS_CLUSTER},
}
IDEMPOTENCY_STORE = {
    "CLASS": "sessions_app.idempotency.RedisIdempotencyStore",
    "OPTIONS": {
        "url": REDIS_URL,
        "prefix": REDIS_KEY_PREFIX,
        "cluster": REDIS_CLUSTER,
        "pending_seconds": SESSION_LIMITS["TURN_LOCK_SECONDS"],  # noqa: F405
    },
}
OWNER_LIMITER = {
    "CLASS": "limits.redis.RedisLimiter",
    "OPTIONS": {
        "url": REDIS_URL,
        "prefix": REDIS_KEY_PREFIX,
        "cluster": REDIS_CLUSTER,
        "sync_seconds": RATE_LIMIT_SYNC_SECONDS,  # noqa: F405
        **RATE_LIMITS,  # noqa: F405
    },
}

# HTTPS is terminated by the ingress in front of the gateway. Django takes the scheme from the
# server, which believes X-Forwarded-Proto only from FORWARDED_ALLOW_IPS (no SECURE_PROXY_SSL_HEADER:
# it would believe the header from any client).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

LOG_FORMAT = env("LOG_FORMAT", default="json")
LOGGING = logging_config(level=env("LOG_LEVEL", default="INFO"), fmt=LOG_FORMAT)
