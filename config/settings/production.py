"""Production: every secret must come from the environment; nothing falls back to a default.

Missing `SECRET_KEY`, `OWNER_PSEUDONYM_SECRET`, `DATABASE_URL`, `REDIS_URL`,
`JWT_ISSUER`, `JWT_JWKS_URL`, `JWT_AUDIENCE` or `ALLOWED_HOSTS` stops the
process at start-up with ImproperlyConfigured.
"""

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import REDIS_KEY_PREFIX, env, redis_session_store
from core.observability.logs import logging_config

SECRET_KEY = env("SECRET_KEY")
OWNER_PSEUDONYM_SECRET = env("OWNER_PSEUDONYM_SECRET")
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
JWT_ISSUER = env("JWT_ISSUER")
JWT_JWKS_URL = env("JWT_JWKS_URL")
JWT_AUDIENCE = env.list("JWT_AUDIENCE")

# Archives are encrypted under keys that only the environment holds.
ARCHIVE_KEKS = env("ARCHIVE_KEKS")

if OIDC_RP_CLIENT_ID:  # noqa: F405
    OIDC_RP_CLIENT_SECRET = env("ADMIN_OIDC_CLIENT_SECRET")

METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_BIND = env("METRICS_BIND", default="")
if not (METRICS_TOKEN or METRICS_BIND):
    raise ImproperlyConfigured("Set METRICS_TOKEN or METRICS_BIND: /metrics is never public in production.")

# Development tokens are never accepted in production, whatever the environment says.
DEV_MODE = False
DEBUG = False

for _name, _value in {"SECRET_KEY": SECRET_KEY, "OWNER_PSEUDONYM_SECRET": OWNER_PSEUDONYM_SECRET}.items():
    if len(_value) < 50 or "dev-only" in _value:
        raise ImproperlyConfigured(f"{_name} must be a random value of at least 50 characters.")

# Active sessions must be shared by every gateway instance.
REDIS_URL = env("REDIS_URL")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{REDIS_KEY_PREFIX}:cache",
    }
}
ACTIVE_SESSION_STORE = redis_session_store(REDIS_URL)
SCHEDULER_EMBEDDED = env.bool("SCHEDULER_EMBEDDED", default=False)  # run `manage.py run_scheduler`
IDEMPOTENCY_STORE = {
    "CLASS": "sessions_app.idempotency.RedisIdempotencyStore",
    "OPTIONS": {
        "url": REDIS_URL,
        "prefix": REDIS_KEY_PREFIX,
        "pending_seconds": SESSION_LIMITS["TURN_LOCK_SECONDS"],  # noqa: F405
    },
}
OWNER_LIMITER = {
    "CLASS": "core.limits.RedisLimiter",
    "OPTIONS": {
        "url": REDIS_URL,
        "prefix": REDIS_KEY_PREFIX,
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
