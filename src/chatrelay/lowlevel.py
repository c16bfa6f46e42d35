"""The API for adapter authors: what a transport needs to serve a relay.

Applications do not need this module; they use `chatrelay`. An adapter (such as
`chatrelay.adapters.socketio` or `chatrelay.testing.MemoryTransport`) does this:

1. gather what the client presented into `chatrelay.Credentials` and call
   `chatrelay.Relay.authenticate`;
2. open a `Connection` with `chatrelay.Relay.connect`;
3. feed each inbound request to `Connection.handle` and send its reply;
4. send each `Outbound` event to the client through an `Outlet`, the core's
   outbound engine, given a `Wire` of the transport's (how to frame an event, hand
   it over now, or write it waiting): the outlet keeps order, the bounded queue, the
   pending acks and the ordering rule for acks; report the client's acks with
   `Outlet.acked` and `Connection.acknowledge`;
5. close the transport when the connection's stream ends, with its
   `Connection.close_reason`.

Errors travel as the exceptions of `chatrelay.exceptions`, and reach the wire through
one set of functions (`error_payload`, `failed_ack`, `close_error`; the size rule
`payload_size` / `check_payload_size`), so that every transport answers alike; the
payloads are those of `chatrelay.events`, encoded by `chatrelay.codec`.
"""

from ._connection import Connection as Connection
from ._connection import Outbound as Outbound
from ._errors import check_payload_size as check_payload_size
from ._errors import close_error as close_error
from ._errors import error_payload as error_payload
from ._errors import failed_ack as failed_ack
from ._errors import payload_size as payload_size
from ._outgoing import OutgoingStream as OutgoingStream
from ._outlet import Outlet as Outlet
from ._outlet import Wire as Wire
from ._public import publish as _publish

__all__ = [
    "Connection",
    "Outbound",
    "OutgoingStream",
    "Outlet",
    "Wire",
    "check_payload_size",
    "close_error",
    "error_payload",
    "failed_ack",
    "payload_size",
]

_publish(__name__, __all__)
