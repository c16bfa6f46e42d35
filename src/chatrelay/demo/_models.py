"""What the demo keeps: users, conversations, and the error its rules raise."""

from __future__ import annotations

import attrs

__all__ = ["Conversation", "DemoError", "User"]


@attrs.frozen(kw_only=True)
class User:
    """A user of the demo."""

    id: str
    name: str


@attrs.frozen(kw_only=True)
class Conversation:
    """A conversation between participants."""

    id: str
    participant_ids: tuple[str, ...]
    name: str | None = None


class DemoError(Exception):
    """A request the service refuses; maps to an HTTP error ``{status, code, message}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
