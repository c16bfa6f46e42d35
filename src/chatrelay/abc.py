"""The interfaces that applications and integrations implement.

- :class:`Authenticator`: turn a connecting client's credentials into an identity.
- :class:`Backplane`: carry events between relay nodes.
"""

from ._auth import Authenticator as Authenticator
from ._backplane import Backplane as Backplane
from ._backplane import BackplaneMessage as BackplaneMessage

__all__ = ["Authenticator", "Backplane", "BackplaneMessage"]
