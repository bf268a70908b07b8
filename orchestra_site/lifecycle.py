"""Ties the in-process machinery to the ASGI server that hosts it.

On the server's first call: its event loop becomes the process's io loop (channel-layer
sends and async I/O asked for by sync code go there; the in-memory layer lives there), in
the embedded mode recovery starts, so turns left queued by a previous run run at once, and
what the process has made so far, which it keeps for its lifetime, is frozen out of the
garbage collector's way (orchestra_site/gc_tuning.py).
"""

from django.conf import settings

from conversations.dispatch import start_embedded_recovery
from infrastructure import event_loops
from orchestra_site.gc_tuning import freeze_startup_objects


class BindWorkersToServer:
    def __init__(self, app):
        self.app = app
        self._bound = False

    def _bind(self) -> None:
        if not self._bound:
            self._bound = True
            event_loops.bind_server_loop()
            if settings.TURN_EXECUTOR == "local":
                start_embedded_recovery()
            freeze_startup_objects()

    async def __call__(self, scope, receive, send):
        self._bind()
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return None
        return await self.app(scope, receive, send)

    @staticmethod
    async def _lifespan(receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
