"""Authentication: who is on the other end of a connection.

Identity always comes from an `Authenticator`, never from a request payload.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

import attrs

from ._exceptions import Unauthorized
from ._types import UserId

__all__ = ["Authenticator", "Credentials", "DevelopmentAuthenticator", "Identity"]

logger = logging.getLogger("chatrelay.auth")


@attrs.frozen(kw_only=True)
class Credentials:
    """What a client presented when it connected, gathered by the adapter.

    Attributes:
        token: A bearer token (Socket.IO ``auth.token``, an ``Authorization: Bearer``
            header, a ``?token=`` parameter or a first ``auth`` frame).
        query: The handshake's query parameters.
        headers: The handshake's HTTP headers, with lower-case names.
        transport: The adapter's name, such as ``"socketio"`` or ``"memory"``.
    """

    token: str | None = attrs.field(default=None, repr=False)  # never in logs
    query: Mapping[str, str] = attrs.field(factory=dict)
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    transport: str = "unknown"


@attrs.frozen(kw_only=True)
class Identity:
    """An authenticated user.

    Attributes:
        user_id: The user, as the application names it.
        name: A display name, shown in typing indicators.
        claims: Whatever else the authenticator learned (JWT claims, for example).
        expires_at: When the credentials stop being valid (a JWT's ``exp``), if ever:
            the relay warns the client before (``auth:expiring``) and closes the
            connection after it unless the client refreshes (``auth:refresh``).
    """

    user_id: UserId
    name: str | None = None
    claims: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    expires_at: datetime | None = None


class Authenticator(ABC):
    """Turns the credentials of a connecting client into an `Identity`.

    Subclass it to plug in your own scheme; implement `authenticate`.
    """

    development: ClassVar[bool] = False
    """``True`` for authenticators that trust the client; refused in production mode."""

    @abstractmethod
    async def authenticate(self, credentials: Credentials) -> Identity:
        """Authenticate a connecting client.

        Args:
            credentials: What the client presented.

        Returns:
            The identity of the client.

        Raises:
            Unauthorized: If the credentials do not prove an identity.
        """


class DevelopmentAuthenticator(Authenticator):
    """Trusts the ``userId`` query parameter. For development only.

    A relay in production mode refuses to run with it. It logs one warning, the first
    time it lets someone in, so that it is not left on by accident.
    """

    development = True

    def __init__(self, *, parameter: str = "userId") -> None:
        self.parameter = parameter
        self._warned = False

    async def authenticate(self, credentials: Credentials) -> Identity:
        """Take the user id from the query parameter.

        Raises:
            Unauthorized: If the parameter is missing or empty.
        """
        user_id = credentials.query.get(self.parameter)
        if not user_id:
            raise Unauthorized(f"missing the {self.parameter!r} query parameter")
        if not self._warned:
            self._warned = True
            logger.warning(
                "development authentication: identity is taken from the %r query parameter;"
                " never use this in production",
                self.parameter,
            )
        return Identity(user_id=user_id)
