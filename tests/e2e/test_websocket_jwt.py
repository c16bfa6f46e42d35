"""JWT authentication on the WebSocket binding, end to end (uvicorn, asyncio).

The same `JWTAuthenticator` serves the Socket.IO binding; here its token comes from an
`Authorization: Bearer` header, a `?token=` parameter or the first `auth` frame.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from chatrelay import Relay, RelayConfig, allow_all
from chatrelay.adapters.starlette import WebSocketAdapter
from chatrelay.auth.jwt import JWTAuthenticator
from jwt_support import AUDIENCE, ISSUER, claims, public_pem, rs256, rsa_key, unsigned
from ws_support import WAIT, make_app, serving, ws_client

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def jwt_server() -> AsyncIterator[str]:
    authenticator = JWTAuthenticator(
        public_pem(rsa_key()),
        algorithms=["RS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        name_claim="name",
    )
    relay = Relay(
        config=RelayConfig(production=True),
        authenticator=authenticator,
        authorize_join=allow_all,
    )
    adapter = WebSocketAdapter(relay, allowed_origins=["https://chat.example"])
    async with serving(make_app(adapter), ws_max_size=adapter.max_frame_bytes) as url:
        yield url + "/ws"


GOOD: dict[str, Any] = {"sub": "alice", "name": "Alice"}
EXPIRED: dict[str, Any] = {"exp": int(time.time()) - 3600}


async def test_bearer_header_query_and_auth_frame() -> None:
    token = rs256(claims(**GOOD))
    async with (
        jwt_server() as url,
        ws_client(url, headers={"Authorization": f"Bearer {token}"}) as by_header,
        ws_client(f"{url}?token={token}") as by_query,
        ws_client(url) as by_frame,
    ):
        assert (await by_frame.request("auth", {"token": token}))["userId"] == "alice"
        for client in (by_header, by_query, by_frame):
            ack = await client.request("conversation:join", {"conversationId": "c1"})
            assert ack["members"] == ["alice"]
        await by_header.request("typing:start", {"conversationId": "c1"})
        typing = await by_query.receive("typing:start")
        assert typing["data"]["user"] == {"id": "alice", "name": "Alice"}


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda: rs256(claims(**GOOD, **EXPIRED)), id="expired"),
        pytest.param(lambda: rs256(claims(**GOOD, aud="other")), id="audience"),
        pytest.param(lambda: unsigned(claims(**GOOD)), id="alg-none"),
        pytest.param(lambda: "not.a.jwt", id="garbage"),
    ],
)
async def test_refused_tokens(token: Callable[[], str]) -> None:
    value = token()
    async with jwt_server() as url:
        # At the handshake: refused before accepting (HTTP 403).
        with anyio.fail_after(WAIT), pytest.raises(InvalidStatus) as refused:
            await connect(url, additional_headers={"Authorization": f"Bearer {value}"})
        assert refused.value.response.status_code == 403
        # In the first frame: an error naming the reason, then a close with 1008.
        async with ws_client(url) as client:
            await client.send("auth", {"token": value})
            error = await client.receive("error")
            assert error["data"]["status"] == 401
            assert error["data"]["code"] == "unauthorized"
            assert value not in error["data"]["message"]  # no part of a token echoed
            code, reason = await client.closed()
            assert code == 1008
            assert reason.startswith("unauthorized: ")
