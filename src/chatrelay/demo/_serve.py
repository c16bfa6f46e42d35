"""uvicorn that drains the relay on SIGTERM or Ctrl-C, before it closes the sockets.

uvicorn's own shutdown closes every WebSocket first and runs the application's
shutdown after: too late to drain. `DrainingServer` catches the first signal, drains
the relay (`chatrelay.Relay.drain`: each connection told, then closed, spread over
the window), and only then lets uvicorn shut down as usual. A second signal stops at
once, as with plain uvicorn.
"""

from __future__ import annotations

import asyncio
import logging
import math
from types import FrameType

import uvicorn

from .._outlet import CLOSE_GRACE
from .._relay import Relay

__all__ = ["DrainingServer"]

_logger = logging.getLogger("chatrelay.demo")


class DrainingServer(uvicorn.Server):
    """A `uvicorn.Server` whose first SIGTERM / SIGINT drains ``relay`` first.

    Args:
        config: uvicorn's configuration.
        relay: The relay to drain.
        window: Seconds over which its connections are closed (0: uvicorn's shutdown
            as usual).
    """

    def __init__(self, config: uvicorn.Config, relay: Relay, window: float) -> None:
        super().__init__(config)
        self.relay = relay
        self.window = window
        self._drain: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        """Serve, remembering the loop for the signal handler."""
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The first signal drains, then exits; a second one exits at once."""
        loop = self._loop
        if self._drain is not None or self.window <= 0 or loop is None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        # A signal handler runs between two bytecodes of the main thread: hand the
        # drain to the loop, waking it up.
        loop.call_soon_threadsafe(self._start_drain, sig, frame)

    def _start_drain(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is not None:
            super().handle_exit(sig, frame)  # a second signal meanwhile
            return
        _logger.warning("signal %d: draining for %g s, then stopping", sig, self.window)
        self._drain = asyncio.get_running_loop().create_task(self._drain_then_exit(sig, frame))

    async def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        try:
            await self.relay.drain(self.window)
            # Every connection was told and closed: what uvicorn would wait for now
            # is the closes under way, which abort after CLOSE_GRACE anyway. Waiting
            # longer only keeps a server that is going away.
            grace = math.ceil(CLOSE_GRACE)  # uvicorn takes whole seconds
            current = self.config.timeout_graceful_shutdown
            if current is None or current > grace:
                self.config.timeout_graceful_shutdown = grace
        except Exception:
            _logger.exception("draining failed; stopping")
        finally:
            super().handle_exit(sig, frame)
