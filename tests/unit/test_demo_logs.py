"""Tokens in query strings never reach the server's logs."""

from __future__ import annotations

import logging

import pytest

from chatrelay.demo._logs import RedactTokens, redact_server_logs


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, msg, args, None)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('"GET /ws?token=abc.def HTTP/1.1"', '"GET /ws?token=[redacted] HTTP/1.1"'),
        ("/ws?userId=a&token=x&y=1", "/ws?userId=a&token=[redacted]&y=1"),
        ("/ws?access_token=x", "/ws?access_token=[redacted]"),
        ("/ws?TOKEN=x", "/ws?TOKEN=[redacted]"),
        ("/ws?mytoken=x", "/ws?mytoken=x"),  # another parameter
        ("no query here", "no query here"),
    ],
)
def test_token_values_are_redacted(message: str, expected: str) -> None:
    entry = record(message)
    assert RedactTokens().filter(entry) is True
    assert entry.getMessage() == expected


def test_arguments_are_redacted_too() -> None:
    entry = record('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", "/ws?token=secret")
    RedactTokens().filter(entry)
    assert "secret" not in entry.getMessage()
    assert entry.getMessage().endswith('"WebSocket /ws?token=[redacted]" [accepted]')


def test_installed_once_on_uvicorns_loggers() -> None:
    redact_server_logs()
    redact_server_logs()
    for name in ("uvicorn.access", "uvicorn.error"):
        filters = logging.getLogger(name).filters
        assert sum(isinstance(f, RedactTokens) for f in filters) == 1
