"""Backplanes that need no server: one process, or several relays in one process.

`LocalBackplane` is what a relay uses when it is given none: a single node.
`MemoryBus` connects several relays in one process as if they were servers of a
cluster, for tests. `MemoryHistory` keeps their conversations' recent room events
(`HistoryLog` is its store, without I/O). Redis-backed backplanes live in their own
module, behind the ``redis`` extra.
"""

from .._backplane import ENVELOPE_VERSION as ENVELOPE_VERSION
from .._backplane import Envelope as Envelope
from .._backplane import decode_envelope as decode_envelope
from .._backplane import encode_envelope as encode_envelope
from .._backplane import new_node_id as new_node_id
from .._history import HistoryLog as HistoryLog
from .._history import MemoryHistory as MemoryHistory
from .._public import publish as _publish
from ._memory import LocalBackplane as LocalBackplane
from ._memory import MemoryBackplane as MemoryBackplane
from ._memory import MemoryBus as MemoryBus

__all__ = [
    "ENVELOPE_VERSION",
    "Envelope",
    "HistoryLog",
    "LocalBackplane",
    "MemoryBackplane",
    "MemoryBus",
    "MemoryHistory",
    "decode_envelope",
    "encode_envelope",
    "new_node_id",
]

_publish(__name__, __all__)
