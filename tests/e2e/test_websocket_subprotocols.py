"""The WebSocket binding's subprotocol, ``chatrelay.v1`` (``Sec-WebSocket-Protocol``).

A browser that offers subprotocols fails the handshake unless the server selects one
of them, so the server answers ``chatrelay.v1`` whenever it is offered, nothing when
none is, and refuses a handshake that offers only others with HTTP 400 and the
wire's error fields as the body. The client is the `websockets` library, on uvicorn.
"""

from __future__ import annotations

import json

import pytest
from starlette.types import Receive, Scope, Send
from websockets.exceptions import InvalidStatus

from chatrelay import Relay
from chatrelay.adapters._wsframes import SUBPROTOCOL, select_subprotocol
from chatrelay.adapters.starlette import WebSocketAdapter
from ws_support import make_app, serving, ws_client

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the websockets client and uvicorn


@pytest.mark.parametrize(
    ("offered", "negotiated"),
    [
        (None, None),
        (["chatrelay.v1"], "chatrelay.v1"),
        (["other", "chatrelay.v1"], "chatrelay.v1"),
        (["chatrelay.v1", "other"], "chatrelay.v1"),
    ],
)
async def test_the_subprotocol_is_negotiated(
    offered: list[str] | None, negotiated: str | None
) -> None:
    async with (
        serving(make_app(WebSocketAdapter(Relay()))) as url,
        ws_client(url + "/ws?userId=bob", subprotocols=offered) as bob,
    ):
        assert bob.connection.subprotocol == negotiated
        reply = await bob.request("conversation:join", {"conversationId": "c1"})
        assert reply["ok"] is True
    assert SUBPROTOCOL == "chatrelay.v1"


@pytest.mark.parametrize("offered", [["other"], ["chatrelay.v2", "json"], ["CHATRELAY.V1"]])
async def test_only_other_subprotocols_are_refused_with_http_400(offered: list[str]) -> None:
    async with serving(make_app(WebSocketAdapter(Relay()))) as url:
        with pytest.raises(InvalidStatus) as refused:
            async with ws_client(url + "/ws?userId=bob", subprotocols=offered):
                pass
    response = refused.value.response
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    error = json.loads(response.body)
    assert (error["status"], error["code"]) == (400, "unsupported_subprotocol")
    assert repr(offered[0]) in error["message"]
    assert "'chatrelay.v1', or no subprotocol" in error["message"]


def test_select_subprotocol() -> None:
    assert select_subprotocol([]) is None
    assert select_subprotocol(["a", "chatrelay.v1"]) == "chatrelay.v1"
    with pytest.raises(ValueError, match="unsupported WebSocket subprotocol"):
        select_subprotocol(["a"])


async def test_without_the_denial_extension_the_refusal_is_http_403() -> None:
    inner = make_app(WebSocketAdapter(Relay()))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # A server without the ASGI denial response extension.
        await inner({**scope, "extensions": {}}, receive, send)

    async with serving(app) as url:
        with pytest.raises(InvalidStatus) as refused:
            async with ws_client(url + "/ws?userId=bob", subprotocols=["other"]):
                pass
    assert refused.value.response.status_code == 403
