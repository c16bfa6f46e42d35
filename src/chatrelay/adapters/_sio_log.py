"""The logger the Socket.IO adapter gives python-socketio and engine.io for its own server.

Their per-packet lines show tokens and their errors come with a traceback per bad
packet; `QuietLibraryLog` keeps what an operator needs of them and no more.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

__all__ = ["QuietLibraryLog"]

_MAX_KEYS: Final = 256


class QuietLibraryLog(logging.LoggerAdapter[logging.Logger]):
    """The logger the adapter gives python-socketio and engine.io for its own server.

    Their per-packet INFO and WARNING lines (which show tokens) are dropped; an error
    is logged with its traceback the first time its message is seen, then as one
    line at most every `interval` seconds, with a count of those left out. So no
    client can have a traceback logged per packet.
    """

    def __init__(self, name: str, *, interval: float = 10.0) -> None:
        super().__init__(logging.getLogger(name), {})
        self.interval = interval
        self._seen: dict[str, tuple[float, int]] = {}

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level < logging.ERROR:
            return
        key = str(msg)
        if key not in self._seen and len(self._seen) >= _MAX_KEYS:
            key = ""  # past so many kinds of message, all others share one budget
        now = time.monotonic()
        last = self._seen.get(key)
        if last is None:
            self._seen[key] = (now, 0)
            self.logger.log(level, msg, *args, **kwargs)
            return
        stamp, skipped = last
        if now - stamp < self.interval:
            self._seen[key] = (stamp, skipped + 1)
            return
        kwargs.pop("exc_info", None)
        self._seen[key] = (now, 0)
        suffix = f" ({skipped} more since the last)" if skipped else ""
        self.logger.log(level, f"{msg}{suffix}", *args, **kwargs)

    def isEnabledFor(self, level: int) -> bool:
        return level >= logging.ERROR and self.logger.isEnabledFor(level)
