"""The test suite: development tokens on, fast password hashing, quiet logs."""

from config.settings.base import *  # noqa: F403
from config.settings.base import env, logging_config

DEV_MODE = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = logging_config(env("LOG_LEVEL", default="WARNING"))
WHITENOISE_USE_FINDERS = True
