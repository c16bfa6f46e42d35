"""chatrelay: the real-time layer of a chat backend.

Rooms, presence, typing indicators and message events, over Socket.IO, WebSockets or
an in-memory transport, on asyncio or trio. Start with `Relay`.

This package is the application's API. Adapter authors also use `chatrelay.lowlevel`;
the exceptions live in `chatrelay.exceptions`, the test helpers in `chatrelay.testing`.
"""

from typing import TYPE_CHECKING

from . import exceptions as exceptions
from . import lowlevel as lowlevel
from ._auth import Authenticator as Authenticator
from ._auth import Credentials as Credentials
from ._auth import DevelopmentAuthenticator as DevelopmentAuthenticator
from ._auth import Identity as Identity
from ._config import HistorySettings as HistorySettings
from ._config import Limits as Limits
from ._config import RelayConfig as RelayConfig
from ._connection import Delivery as Delivery
from ._debounce import TypingChanged as TypingChanged
from ._debounce import TypingDebouncer as TypingDebouncer
from ._emitter import Emitter as Emitter
from ._presence import PresenceChanged as PresenceChanged
from ._presence import PresenceTracker as PresenceTracker
from ._public import moved as _moved
from ._public import publish as _publish
from ._relay import AudienceHook as AudienceHook
from ._relay import DeliveryHook as DeliveryHook
from ._relay import JoinAuthorizer as JoinAuthorizer
from ._relay import Relay as Relay
from ._relay import RelayStatistics as RelayStatistics
from ._relay import allow_all as allow_all
from ._rooms import RoomRegistry as RoomRegistry
from ._rooms import RoomStatistics as RoomStatistics
from ._types import ConnectionId as ConnectionId
from ._types import ConversationId as ConversationId
from ._types import MessageId as MessageId
from ._types import NodeId as NodeId
from ._types import UserId as UserId
from ._version import __version__ as __version__
from .events import Message as Message
from .events import MessageStatus as MessageStatus
from .events import Position as Position
from .events import Sender as Sender
from .events import is_forward as is_forward

__all__ = [
    "AudienceHook",
    "Authenticator",
    "ConnectionId",
    "ConversationId",
    "Credentials",
    "Delivery",
    "DeliveryHook",
    "DevelopmentAuthenticator",
    "Emitter",
    "HistorySettings",
    "Identity",
    "JoinAuthorizer",
    "Limits",
    "Message",
    "MessageId",
    "MessageStatus",
    "NodeId",
    "Position",
    "PresenceChanged",
    "PresenceTracker",
    "Relay",
    "RelayConfig",
    "RelayStatistics",
    "RoomRegistry",
    "RoomStatistics",
    "Sender",
    "TypingChanged",
    "TypingDebouncer",
    "UserId",
    "__version__",
    "allow_all",
    "is_forward",
]

_publish(__name__, __all__)

# Names that used to be exported here, and where they live now.
_MOVED = {
    "BackplaneError": "chatrelay.exceptions",
    "ChatRelayError": "chatrelay.exceptions",
    "ClusterView": "chatrelay._cluster",
    "Connection": "chatrelay.lowlevel",
    "ConnectionClosed": "chatrelay.exceptions",
    "Forbidden": "chatrelay.exceptions",
    "InternalError": "chatrelay.exceptions",
    "InvalidPayload": "chatrelay.exceptions",
    "NotInConversation": "chatrelay.exceptions",
    "Outbound": "chatrelay.lowlevel",
    "OutgoingStream": "chatrelay.lowlevel",
    "PayloadTooLarge": "chatrelay.exceptions",
    "ProtocolError": "chatrelay.exceptions",
    "RateLimited": "chatrelay.exceptions",
    "TokenBucket": "chatrelay._limits",
    "TooManyConnections": "chatrelay.exceptions",
    "Unauthorized": "chatrelay.exceptions",
    "UnknownEvent": "chatrelay.exceptions",
}

# Type checkers see the old names with their types; at run time they come from
# `__getattr__`, with a DeprecationWarning that names their new home.
if TYPE_CHECKING:
    from ._cluster import ClusterView as ClusterView
    from ._connection import Connection as Connection
    from ._connection import Outbound as Outbound
    from ._limits import TokenBucket as TokenBucket
    from ._outgoing import OutgoingStream as OutgoingStream
    from .exceptions import BackplaneError as BackplaneError
    from .exceptions import ChatRelayError as ChatRelayError
    from .exceptions import ConnectionClosed as ConnectionClosed
    from .exceptions import Forbidden as Forbidden
    from .exceptions import InternalError as InternalError
    from .exceptions import InvalidPayload as InvalidPayload
    from .exceptions import NotInConversation as NotInConversation
    from .exceptions import PayloadTooLarge as PayloadTooLarge
    from .exceptions import ProtocolError as ProtocolError
    from .exceptions import RateLimited as RateLimited
    from .exceptions import TooManyConnections as TooManyConnections
    from .exceptions import Unauthorized as Unauthorized
    from .exceptions import UnknownEvent as UnknownEvent
else:
    __getattr__ = _moved(__name__, _MOVED)
