"""Development on one machine: embedded defaults, development tokens on."""

from config.settings.base import *  # noqa: F403
from config.settings.base import env

DEV_MODE = env.bool("DEV_MODE", default=True)

# Serve admin and API-docs assets straight from the apps, without collectstatic.
WHITENOISE_USE_FINDERS = True
