"""The exception tree of chatrelay.

Every error that chatrelay raises on purpose derives from `ChatRelayError`.
Errors that a client caused carry the fields of the wire ``error`` event::

    ChatRelayError
    ├── ProtocolError (also ValueError)    a client request failed; has status/code/message/event
    │   ├── InvalidPayload                 400 invalid_payload
    │   ├── UnknownEvent                   400 unknown_event
    │   ├── UnsupportedSubprotocol         400 unsupported_subprotocol (WebSocket handshake)
    │   ├── Unauthorized                   401 unauthorized
    │   ├── Forbidden                      403 forbidden
    │   ├── UnknownNamespace               404 unknown_namespace (Socket.IO connect)
    │   ├── NotInConversation              409 not_in_conversation
    │   ├── PayloadTooLarge                413 payload_too_large
    │   ├── RateLimited                    429 rate_limited
    │   ├── TooManyConnections             429 too_many_connections
    │   ├── InternalError                  500 internal_error
    │   └── Unavailable                    503 unavailable (not serving now)
    ├── ConnectionClosed                   the connection is gone; has ``reason`` (a `CloseReason`)
    └── BackplaneError                     the backplane refused or lost a publish

Programmer misuse (a wrong argument type, a relay used outside ``async with``)
raises the builtin ``TypeError``, ``ValueError`` or ``RuntimeError`` instead.
"""

from ._exceptions import BackplaneError as BackplaneError
from ._exceptions import ChatRelayError as ChatRelayError
from ._exceptions import CloseReason as CloseReason
from ._exceptions import ConnectionClosed as ConnectionClosed
from ._exceptions import Forbidden as Forbidden
from ._exceptions import InternalError as InternalError
from ._exceptions import InvalidPayload as InvalidPayload
from ._exceptions import NotInConversation as NotInConversation
from ._exceptions import PayloadTooLarge as PayloadTooLarge
from ._exceptions import ProtocolError as ProtocolError
from ._exceptions import RateLimited as RateLimited
from ._exceptions import TooManyConnections as TooManyConnections
from ._exceptions import Unauthorized as Unauthorized
from ._exceptions import Unavailable as Unavailable
from ._exceptions import UnknownEvent as UnknownEvent
from ._exceptions import UnknownNamespace as UnknownNamespace
from ._exceptions import UnsupportedSubprotocol as UnsupportedSubprotocol
from ._public import publish as _publish

__all__ = [
    "BackplaneError",
    "ChatRelayError",
    "CloseReason",
    "ConnectionClosed",
    "Forbidden",
    "InternalError",
    "InvalidPayload",
    "NotInConversation",
    "PayloadTooLarge",
    "ProtocolError",
    "RateLimited",
    "TooManyConnections",
    "Unauthorized",
    "Unavailable",
    "UnknownEvent",
    "UnknownNamespace",
    "UnsupportedSubprotocol",
]

_publish(__name__, __all__)
