"""One origin policy for both transports: the same default, the same production rule."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from chatrelay import Relay, RelayConfig, allow_all
from chatrelay.adapters._origins import origin_policy
from chatrelay.adapters.socketio import SocketIOAdapter
from chatrelay.adapters.starlette import WebSocketAdapter
from ws_support import TokenAuthenticator

ORIGINS = [
    "https://chat.example.com",
    "https://chat.example.com:443",
    "http://chat.example.com",
    "http://localhost:5173",
    "https://evil.example",
    "null",
    "garbage",
]


def production_relay() -> Relay:
    return Relay(
        config=RelayConfig(production=True),
        authenticator=TokenAuthenticator(),
        authorize_join=allow_all,
    )


def decisions(allows: Callable[[str], bool]) -> dict[str, bool]:
    return {origin: bool(allows(origin)) for origin in ORIGINS}


def socketio_allows(adapter: SocketIOAdapter) -> Callable[[str], bool]:
    """What python-socketio asks for each handshake's ``Origin`` (its own callable)."""
    check = adapter.server.eio.cors_allowed_origins
    assert callable(check)
    return lambda origin: bool(check(origin))


def test_the_default_admits_any_web_origin_outside_production() -> None:
    policy = origin_policy(None, production=False)
    assert decisions(policy.allows) == {
        "https://chat.example.com": True,
        "https://chat.example.com:443": True,
        "http://chat.example.com": True,
        "http://localhost:5173": True,
        "https://evil.example": True,
        "null": False,  # only when listed
        "garbage": False,
    }
    assert policy.allows(None)


def test_production_needs_allowed_origins() -> None:
    with pytest.raises(ValueError, match="production mode needs allowed_origins"):
        origin_policy(None, production=True)
    assert origin_policy(["*"], production=True).allow_any_web


@pytest.mark.parametrize(
    "allowed",
    [None, ["*"], ["https://chat.example.com", "http://localhost:5173"], ["*", "null"]],
)
def test_both_adapters_decide_alike(allowed: Sequence[str] | None) -> None:
    relay = Relay()
    websocket = WebSocketAdapter(relay, allowed_origins=allowed)
    socketio = SocketIOAdapter(relay, allowed_origins=allowed)
    expected = decisions(origin_policy(allowed, production=False).allows)
    assert decisions(websocket.origins.allows) == expected
    assert decisions(socketio_allows(socketio)) == expected


def test_both_adapters_need_allowed_origins_in_production() -> None:
    relay = production_relay()
    with pytest.raises(ValueError, match="allowed_origins"):
        WebSocketAdapter(relay)
    with pytest.raises(ValueError, match="allowed_origins"):
        SocketIOAdapter(relay)
    SocketIOAdapter(relay, allowed_origins=["https://chat.example.com"])


def test_both_adapters_refuse_a_malformed_origin() -> None:
    relay = Relay()
    with pytest.raises(ValueError, match="is not an origin"):
        WebSocketAdapter(relay, allowed_origins=["https://chat.example.com/"])
    with pytest.raises(ValueError, match="is not an origin"):
        SocketIOAdapter(relay, allowed_origins=["https://chat.example.com/"])


def test_socketio_takes_one_origin_as_a_string() -> None:
    """python-socketio's ``cors_allowed_origins`` form, which the adapter took before."""
    adapter = SocketIOAdapter(Relay(), allowed_origins="https://chat.example.com")
    assert decisions(socketio_allows(adapter)) == decisions(
        origin_policy(["https://chat.example.com"], production=False).allows
    )
    anything = SocketIOAdapter(Relay(), allowed_origins="*")
    assert socketio_allows(anything)("https://evil.example")
