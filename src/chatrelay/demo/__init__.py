"""``chatrelay demo``: a small WhatsApp-Web-style app that shows the library working.

It is also the reference integration: `DemoService` stores data, then calls the
relay's emitter, and gives the relay its hooks (who may join a room, what a delivery
ack means). Needs the ``demo`` extra (``pip install 'chatrelay[demo]'``), and the
``redis`` extra too for several servers sharing one Redis (``create_app(redis_url=…)``).
"""

from .._public import publish as _publish
from ._app import DemoApp, create_app
from ._models import Conversation, DemoError, User
from ._service import DemoService
from ._store import DemoStore, Draft, MemoryStore, StoreUnavailable

__all__ = [
    "Conversation",
    "DemoApp",
    "DemoError",
    "DemoService",
    "DemoStore",
    "Draft",
    "MemoryStore",
    "StoreUnavailable",
    "User",
    "create_app",
]

_publish(__name__, __all__)
