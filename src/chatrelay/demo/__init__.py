"""``chatrelay demo``: a small WhatsApp-Web-style app that shows the library working.

It is also the reference integration: :class:`DemoService` stores data, then calls the
relay's emitter, and gives the relay its hooks (who may join a room, what a delivery
ack means). Needs the ``demo`` extra (``pip install 'chatrelay[demo]'``).
"""

from ._app import DemoApp, create_app
from ._service import Conversation, DemoError, DemoService, User

__all__ = ["Conversation", "DemoApp", "DemoError", "DemoService", "User", "create_app"]
