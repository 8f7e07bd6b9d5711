"""ASGI lifespan: close the process's long-lived connections when the server stops."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


class LifespanApp:
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _shutdown(self) -> None:
        # Imported here: the app registry is ready only once Django's application exists.
        from sessions_app.wiring import get_session_manager

        try:
            await get_session_manager().close()
        except Exception:
            logger.warning("closing connections failed", exc_info=True)
