"""Keep tokens out of the server's logs.

uvicorn logs each request's path with its query string; a WebSocket client that
passes ``?token=…`` would have its bearer token written to the access log.
"""

from __future__ import annotations

import logging
import re

__all__ = ["RedactTokens", "redact_server_logs"]

_TOKEN = re.compile(r"(?i)((?:^|[?&])(?:access_)?token=)[^&\s\"']+")


class RedactTokens(logging.Filter):
    """Replaces the value of every ``token=`` query parameter in a record by ``[redacted]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record's message in place; never drops a record."""
        message = record.getMessage()
        redacted = _TOKEN.sub(r"\1[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def redact_server_logs() -> None:
    """Install `RedactTokens` on uvicorn's loggers."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
