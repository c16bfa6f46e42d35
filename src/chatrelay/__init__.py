"""chatrelay: the real-time layer of a chat backend.

Rooms, presence, typing indicators and message events, over Socket.IO, WebSockets or
an in-memory transport, on asyncio or trio. Start with `Relay`.
"""

from ._auth import Authenticator as Authenticator
from ._auth import Credentials as Credentials
from ._auth import DevelopmentAuthenticator as DevelopmentAuthenticator
from ._auth import Identity as Identity
from ._cluster import ClusterView as ClusterView
from ._config import Limits as Limits
from ._config import RelayConfig as RelayConfig
from ._connection import Connection as Connection
from ._connection import Delivery as Delivery
from ._connection import Outbound as Outbound
from ._debounce import TypingChanged as TypingChanged
from ._debounce import TypingDebouncer as TypingDebouncer
from ._emitter import Emitter as Emitter
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
from ._limits import TokenBucket as TokenBucket
from ._outgoing import OutgoingStream as OutgoingStream
from ._presence import PresenceChanged as PresenceChanged
from ._presence import PresenceTracker as PresenceTracker
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
from .events import Sender as Sender
from .events import is_forward as is_forward

__all__ = [
    "AudienceHook",
    "Authenticator",
    "BackplaneError",
    "ChatRelayError",
    "CloseReason",
    "ClusterView",
    "Connection",
    "ConnectionClosed",
    "ConnectionId",
    "ConversationId",
    "Credentials",
    "Delivery",
    "DeliveryHook",
    "DevelopmentAuthenticator",
    "Emitter",
    "Forbidden",
    "Identity",
    "InternalError",
    "InvalidPayload",
    "JoinAuthorizer",
    "Limits",
    "Message",
    "MessageId",
    "MessageStatus",
    "NodeId",
    "NotInConversation",
    "Outbound",
    "OutgoingStream",
    "PayloadTooLarge",
    "PresenceChanged",
    "PresenceTracker",
    "ProtocolError",
    "RateLimited",
    "Relay",
    "RelayConfig",
    "RelayStatistics",
    "RoomRegistry",
    "RoomStatistics",
    "Sender",
    "TokenBucket",
    "TooManyConnections",
    "TypingChanged",
    "TypingDebouncer",
    "Unauthorized",
    "Unavailable",
    "UnknownEvent",
    "UnknownNamespace",
    "UnsupportedSubprotocol",
    "UserId",
    "__version__",
    "allow_all",
    "is_forward",
]
