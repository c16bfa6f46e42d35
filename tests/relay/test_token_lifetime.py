"""Credentials that expire: warned before, refreshed in band, closed after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chatrelay import Authenticator, Credentials, Identity, Relay, RelayConfig
from chatrelay.exceptions import CloseReason, Unauthorized
from chatrelay.testing import MemoryTransport
from relay_helpers import closed_with

pytestmark = pytest.mark.anyio

WARNING = 0.5
GRACE = 0.3
CONFIG = RelayConfig(token_warning=WARNING, token_grace=GRACE)
WAIT = 5.0


class Expiring(Authenticator):
    """Tokens ``"<user>:<seconds>"``: that user, credentials valid for that long."""

    async def authenticate(self, credentials: Credentials) -> Identity:
        user, _, seconds = (credentials.token or "").partition(":")
        if not user or not seconds:
            raise Unauthorized("a token is required")
        expires = datetime.now(UTC) + timedelta(seconds=float(seconds))
        return Identity(user_id=user, expires_at=expires)


async def test_expiring_then_refreshed_keeps_the_connection() -> None:
    async with (
        Relay(config=CONFIG, authenticator=Expiring()) as relay,
        MemoryTransport(relay).connect(token="alice:1.0") as alice,
    ):
        warned = await alice.receive("auth:expiring", timeout=WAIT)
        assert 0 <= warned.data["expiresIn"] <= 1
        reply = await alice.request("auth:refresh", {"token": "alice:60"})
        assert reply["ok"] is True
        assert 58 <= reply["expiresIn"] <= 60
        # Past the old expiry plus its grace: still open, nothing more said.
        await alice.request("conversation:join", {"conversationId": "c1"})
        with pytest.raises(TimeoutError):
            await alice.receive("auth:expiring", timeout=1.0 + GRACE)
        assert not alice.connection.closed


async def test_a_refresh_for_another_user_changes_nothing() -> None:
    async with (
        Relay(config=CONFIG, authenticator=Expiring()) as relay,
        MemoryTransport(relay).connect(token="alice:1.0") as alice,
    ):
        reply = await alice.request("auth:refresh", {"token": "mallory:60"})
        assert reply["ok"] is False
        assert reply["error"]["code"] == "forbidden"
        refused = await alice.request("auth:refresh", {"token": ""})
        assert refused["error"]["code"] == "unauthorized"
        assert alice.connection.identity.user_id == "alice"
        # The old expiry still holds: warned, then closed.
        await alice.receive("auth:expiring", timeout=WAIT)
        assert await closed_with(alice, WAIT) == CloseReason.TOKEN_EXPIRED


async def test_without_a_refresh_the_connection_closes_after_expiry_and_grace() -> None:
    async with Relay(config=CONFIG, authenticator=Expiring()) as relay:
        transport = MemoryTransport(relay)
        async with (
            transport.connect(token="alice:0.8") as alice,
            transport.connect(token="bob:60") as bob,
        ):
            assert await closed_with(alice, WAIT) == CloseReason.TOKEN_EXPIRED
            assert [e.event for e in alice.received if e.event == "auth:expiring"] == [
                "auth:expiring"
            ]
            assert not bob.connection.closed
