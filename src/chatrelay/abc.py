"""The interfaces that applications and integrations implement.

- `Authenticator`: turn a connecting client's credentials into an identity.
- `Backplane`: carry events between relay nodes.
- `History`: keep each conversation's recent room events, numbered (a backplane
  provides one, `Backplane.history`), with what its reads return: `HistoryRead`,
  `HistoryEntry`, `Unrecoverable`.
"""

from ._auth import Authenticator as Authenticator
from ._backplane import Backplane as Backplane
from ._backplane import BackplaneEvent as BackplaneEvent
from ._backplane import BackplaneGap as BackplaneGap
from ._backplane import BackplaneHealth as BackplaneHealth
from ._backplane import BackplaneMessage as BackplaneMessage
from ._backplane import BackplaneStatistics as BackplaneStatistics
from ._history import History as History
from ._history import HistoryEntry as HistoryEntry
from ._history import HistoryRead as HistoryRead
from ._history import Unrecoverable as Unrecoverable
from ._public import publish as _publish

__all__ = [
    "Authenticator",
    "Backplane",
    "BackplaneEvent",
    "BackplaneGap",
    "BackplaneHealth",
    "BackplaneMessage",
    "BackplaneStatistics",
    "History",
    "HistoryEntry",
    "HistoryRead",
    "Unrecoverable",
]

_publish(__name__, __all__)
