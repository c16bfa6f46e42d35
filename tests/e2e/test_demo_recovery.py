"""The demo page catches up after a reconnect, in a real browser (headless Chromium).

Alice's page loses the network. Meanwhile Bob answers her and reads her message, and
Carol writes in the group, through the REST API. Back online, the page joins each
conversation with the last position it saw:

- ``recovered: true``: the relay replays what she missed, as ordinary events before
  the join's ack; the page shows it without loading anything again.
- ``recovered: false`` (here: she missed more than the recovery limit): nothing is
  replayed, and the page loads that conversation again from the REST API.

Either way the page itself is not reloaded.
"""

from __future__ import annotations

import re

import httpx
import pytest
import test_demo_browser
from playwright.async_api import Browser, Page, Request, expect
from test_demo_browser import WAIT_MS, open_as

from chatrelay import HistorySettings, RelayConfig
from chatrelay.demo import DemoApp, create_app
from socketio_support import serve_app
from waiting import eventually

pytestmark = pytest.mark.anyio

# The fixtures of the other browser tests: asyncio, and one headless Chromium.
anyio_backend = test_demo_browser.anyio_backend
browser = test_demo_browser.browser

MESSAGES = "/api/conversations/{}/messages"


async def drop_connection(page: Page, demo: DemoApp) -> None:
    """Take the page's browser offline, and its WebSocket down with it.

    Chromium's offline emulation fails new requests (the page's reconnect attempts) but
    leaves an open WebSocket open: with Chromium 156 its ``readyState`` stays OPEN and
    the server keeps the connection. So the test closes the socket from the page (the
    page's global ``socket``), as a lost network eventually would; the page's own
    ``onclose`` handles it like any drop. The server has seen it go before this returns.
    """
    await page.context.set_offline(True)
    await page.evaluate("socket.close()")
    await expect(page.get_by_test_id("connection")).to_have_text("reconnecting…", timeout=WAIT_MS)
    await eventually(lambda: demo.relay.statistics().connections == 0)


async def missed_while_offline(api: httpx.AsyncClient, mine: str) -> None:
    """What alice misses: bob answers and reads her message ``mine``, carol writes."""
    for text in ("Yes, I'm here", "Running late"):
        response = await api.post(
            MESSAGES.format("c1"),
            json={"senderId": "bob", "type": "text", "content": {"text": text}},
        )
        assert response.status_code == 201
    response = await api.patch(
        f"/api/messages/{mine}/status", json={"status": "delivered", "userId": "bob"}
    )
    assert response.status_code == 200
    response = await api.post("/api/conversations/c1/read", json={"userId": "bob"})
    assert response.json() == {"updated": [mine]}
    response = await api.post(
        MESSAGES.format("c2"),
        json={"senderId": "carol", "type": "text", "content": {"text": "Pizza?"}},
    )
    assert response.status_code == 201


async def offline_and_back(browser: Browser, demo: DemoApp, url: str) -> list[str]:
    """Alice misses events while offline and comes back; the page shows all of them.

    Returns:
        The paths the page fetched with GET after it came back online.
    """
    alice = await open_as(browser, url, "alice")  # opens c1, with bob
    await alice.get_by_test_id("composer").fill("Are you there?")
    await alice.get_by_test_id("send").click()
    mine = alice.get_by_test_id("message").filter(has_text="Are you there?")
    await expect(mine).to_have_attribute("data-status", "sent", timeout=WAIT_MS)
    mine_id = await mine.get_attribute("data-id")
    assert mine_id is not None
    await alice.evaluate("window.notReloaded = true")
    errors: list[str] = []  # uncaught, e.g. a failed reconnect attempt's rejection
    alice.on("pageerror", lambda error: errors.append(str(error)))

    await drop_connection(alice, demo)
    async with httpx.AsyncClient(base_url=url, timeout=5) as api:
        await missed_while_offline(api, mine_id)

    fetched: list[str] = []

    def record(request: Request) -> None:
        if request.method == "GET":
            fetched.append(request.url.removeprefix(url))

    alice.on("request", record)
    # The page asks for presence once it has joined (and reloaded) every conversation.
    async with alice.expect_request(f"{url}/api/users/online", timeout=WAIT_MS):
        await alice.context.set_offline(False)
    await expect(alice.get_by_test_id("connection")).to_have_text("connected", timeout=WAIT_MS)

    messages = alice.get_by_test_id("message")
    texts = ["Are you there?", "Yes, I'm here", "Running late"]
    await expect(messages).to_have_text(
        [re.compile(re.escape(text)) for text in texts], timeout=WAIT_MS
    )
    await expect(mine).to_have_attribute("data-status", "read", timeout=WAIT_MS)
    await expect(mine.locator(".ticks")).to_have_class("ticks read", timeout=WAIT_MS)
    group = alice.get_by_test_id("conversation").filter(has_text="Lunch crew")
    await expect(group.locator(".preview")).to_have_text("Pizza?", timeout=WAIT_MS)
    await expect(group.locator(".badge")).to_have_text("1", timeout=WAIT_MS)
    assert await alice.evaluate("window.notReloaded") is True
    assert errors == []
    return fetched


async def test_missed_messages_and_ticks_are_replayed_after_a_reconnect(browser: Browser) -> None:
    app = create_app()
    async with serve_app(app.asgi, lifespan=True) as url:
        fetched = await offline_and_back(browser, app, url)
    assert not [path for path in fetched if path.endswith("/messages")]
    stats = app.relay.statistics()
    assert (stats.recoveries, stats.recoveries_failed) == (2, 0)  # c1 and c2


async def test_a_conversation_not_recovered_is_loaded_again_from_rest(browser: Browser) -> None:
    # c1 gets 4 room events (2 messages, 2 statuses) while alice is away: more than
    # the limit, so its join answers recovered: false. c2 gets 1 and is recovered.
    app = create_app(config=RelayConfig(history=HistorySettings(recovery_limit=3)))
    async with serve_app(app.asgi, lifespan=True) as url:
        fetched = await offline_and_back(browser, app, url)
    # c1 came again from REST; c2 by replay.
    assert [path for path in fetched if path.endswith("/messages")] == [MESSAGES.format("c1")]
    stats = app.relay.statistics()
    assert (stats.recoveries, stats.recoveries_failed) == (1, 1)
