"""The test suite: development tokens on, fast password hashing, quiet logs."""

from config.settings.base import *  # noqa: F403
from config.settings.base import env
from core.observability.logs import logging_config

DEV_MODE = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = logging_config(level=env("LOG_LEVEL", default="WARNING"), fmt=env("LOG_FORMAT", default="console"))
WHITENOISE_USE_FINDERS = True
