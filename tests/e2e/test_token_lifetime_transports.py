"""JWTs that expire during a connection, over the real transports.

A token that expires in about 3 s: ``auth:expiring`` arrives first; an in-band
``auth:refresh`` with a fresh token keeps the connection past the old expiry and its
grace; a refresh with another user's token is refused and changes nothing, and the
connection is then closed with ``token_expired`` once the old expiry and the grace
have passed. On the WebSocket binding (a raw client under uvicorn; close code 4001)
and on Socket.IO (the official client on every engine.io transport, and
python-socketio's; an ``error`` event, then its transport is closed). The memory
transport's tests are in tests/relay/test_token_lifetime.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import pytest

from chatrelay import Relay, RelayConfig, allow_all
from chatrelay.adapters.starlette import WebSocketAdapter
from chatrelay.auth.jwt import JWTAuthenticator
from jwt_support import AUDIENCE, ISSUER, claims, public_pem, rs256, rsa_key
from socketio_support import ClientKind, connect, serving
from ws_support import make_app, ws_client
from ws_support import serving as serving_websocket

pytestmark = pytest.mark.anyio

LIFETIME: Final = 3  # seconds; a JWT's exp is a whole second, so 2 to 3 s
WARNING: Final = 2.0
GRACE: Final = 1.0
CONFIG: Final = RelayConfig(token_warning=WARNING, token_grace=GRACE)

# (engine.io transports, client kind) for Socket.IO
SOCKETIO: Final[list[tuple[list[str] | None, ClientKind]]] = [
    (["polling"], "js"),
    (["websocket"], "js"),
    (None, "js"),  # long-polling, then upgraded
    (["websocket"], "python"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def authenticator() -> JWTAuthenticator:
    return JWTAuthenticator(
        public_pem(rsa_key()), algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER
    )


def token(user: str, lifetime: int) -> tuple[str, float]:
    """A token for ``user`` and its expiry (``time.time()`` seconds)."""
    exp = int(time.time()) + lifetime
    return rs256(claims(sub=user, exp=exp)), float(exp)


@asynccontextmanager
async def websocket_url() -> AsyncIterator[str]:
    relay = Relay(config=CONFIG, authenticator=authenticator(), authorize_join=allow_all)
    adapter = WebSocketAdapter(relay)
    async with serving_websocket(make_app(adapter)) as url:
        yield url + "/ws"


async def until_wall(when: float) -> None:
    """Sleep until the wall clock (``time.time()``) reads ``when``."""
    await anyio.sleep(max(0.0, when - time.time()))


def assert_told(warned: dict[str, Any]) -> None:
    assert warned["expiresIn"] in range(LIFETIME + 1)


async def test_websocket_refresh_keeps_the_connection() -> None:
    first, expiry = token("alice", LIFETIME)
    async with websocket_url() as url, ws_client(f"{url}?token={first}") as alice:
        assert_told((await alice.receive("auth:expiring"))["data"])
        reply = await alice.request("auth:refresh", {"token": token("alice", 60)[0]})
        assert reply["ok"] is True
        assert 58 <= reply["expiresIn"] <= 60
        await until_wall(expiry + GRACE + 0.5)
        # Past the old expiry and its grace: open, and serving.
        assert (await alice.request("conversation:join", {"conversationId": "c1"}))["ok"]
        assert alice.close_code is None


async def test_websocket_another_users_token_is_refused_then_the_connection_expires() -> None:
    first, expiry = token("alice", LIFETIME)
    async with websocket_url() as url, ws_client(f"{url}?token={first}") as alice:
        reply = await alice.request("auth:refresh", {"token": token("mallory", 60)[0]})
        assert (reply["ok"], reply["error"]["code"]) == (False, "forbidden")
        assert_told((await alice.receive("auth:expiring"))["data"])
        assert await alice.closed() == (4001, "token_expired")
        assert time.time() >= expiry + GRACE - 0.1  # not before the grace ran out


@pytest.mark.parametrize(("transports", "kind"), SOCKETIO)
async def test_socketio_refresh_keeps_the_connection(
    transports: list[str] | None, kind: ClientKind
) -> None:
    first, expiry = token("alice", LIFETIME)
    async with (
        serving(config=CONFIG, authenticator=authenticator(), authorize_join=allow_all) as served,
        connect(kind, served.url, token=first, transports=transports) as alice,
    ):
        assert_told((await alice.receive("auth:expiring")).data)
        reply = await alice.request("auth:refresh", {"token": token("alice", 60)[0]})
        assert reply["ok"] is True
        assert 58 <= reply["expiresIn"] <= 60
        await until_wall(expiry + GRACE + 0.5)
        assert (await alice.request("conversation:join", {"conversationId": "c1"}))["ok"]
        assert alice.disconnect_reason is None
        assert alice.events("error") == []


@pytest.mark.parametrize(("transports", "kind"), SOCKETIO)
async def test_socketio_another_users_token_is_refused_then_the_connection_expires(
    transports: list[str] | None, kind: ClientKind
) -> None:
    first, expiry = token("alice", LIFETIME)
    async with (
        serving(config=CONFIG, authenticator=authenticator(), authorize_join=allow_all) as served,
        connect(kind, served.url, token=first, transports=transports) as alice,
    ):
        reply = await alice.request("auth:refresh", {"token": token("mallory", 60)[0]})
        assert (reply["ok"], reply["error"]["code"]) == (False, "forbidden")
        assert_told((await alice.receive("auth:expiring")).data)
        # Told why, then its transport closed: the official client reconnects by
        # itself (with fresh credentials), as it never does after "io server
        # disconnect"; python-socketio's reports an engine.io close as "server
        # disconnect" (docs/howto/socketio.md).
        reason = await alice.disconnected()
        assert time.time() >= expiry + GRACE - 0.1
        assert reason == ("transport close" if kind == "js" else "server disconnect")
        told = [(e["status"], e["code"]) for e in alice.events("error")]
        expected = [(403, "forbidden"), (401, "token_expired")]  # each failure says why
        if kind == "js" and transports == ["polling"]:
            # Over long-polling, socket.io-client acts on engine.io's CLOSE before it
            # hands over the events of the same response.
            assert told in (expected, expected[:1])
        else:
            assert told == expected
