"""The demo in a real browser: headless Chromium, driven by Playwright.

Alice and Bob each have a page. Alice types (Bob sees "typing…"), sends (Bob's page,
elsewhere in the app, acknowledges it: delivered), and the message turns read when
Bob opens the conversation.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from playwright.async_api import Browser, Page, WebSocket, async_playwright, expect

from chatrelay import RelayConfig
from chatrelay.demo import create_app
from socketio_support import serve_app

pytestmark = pytest.mark.anyio

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags a sandboxed, offline machine needs (no background traffic, no GPU).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000
HAVE_CHROMIUM = Path(CHROMIUM).exists()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium package")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def open_as(browser: Browser, url: str, user: str) -> Page:
    context = await browser.new_context(viewport={"width": 1000, "height": 600})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{url}/?user={user}")
    await expect(page.get_by_test_id("connection")).to_have_text("connected", timeout=WAIT_MS)
    assert errors == []
    return page


async def test_alice_and_bob_chat_in_the_browser(browser: Browser) -> None:
    demo = create_app(config=RelayConfig(typing_timeout=5))
    async with serve_app(demo.asgi, lifespan=True) as url:
        alice = await open_as(browser, url, "alice")
        bob = await open_as(browser, url, "bob")
        # Both pages open their first conversation, alice and bob's (c1).
        await expect(bob.get_by_test_id("presence")).to_have_text("online", timeout=WAIT_MS)

        await alice.get_by_test_id("composer").fill("Lunch at noon?")
        await expect(bob.get_by_test_id("typing")).to_contain_text("Alice typing", timeout=WAIT_MS)

        # Bob looks at another conversation when the message arrives.
        await bob.get_by_test_id("conversation").filter(has_text="Lunch crew").click()
        await alice.get_by_test_id("send").click()
        mine = alice.get_by_test_id("message").filter(has_text="Lunch at noon?")
        # Bob's page acknowledged message:received: on_delivered made it "delivered".
        await expect(mine).to_have_attribute("data-status", "delivered", timeout=WAIT_MS)

        await bob.get_by_test_id("conversation").filter(has_text="Alice").click()
        theirs = bob.get_by_test_id("message").filter(has_text="Lunch at noon?")
        await expect(theirs).to_be_visible(timeout=WAIT_MS)
        await expect(bob.get_by_test_id("typing")).to_be_hidden(timeout=WAIT_MS)
        # Opening the conversation marked it read, and alice's ticks turned blue.
        await expect(mine).to_have_attribute("data-status", "read", timeout=WAIT_MS)

        await bob.get_by_test_id("composer").fill("Sure, see you there")
        await bob.get_by_test_id("send").click()
        await expect(
            alice.get_by_test_id("message").filter(has_text="see you there")
        ).to_be_visible(timeout=WAIT_MS)

        shots = os.environ.get("CHATRELAY_SCREENSHOTS")
        if shots:  # docs/images/demo.png is made this way
            await alice.screenshot(path=str(Path(shots) / "demo.png"))
        assert (await demo.service.messages_of("c1"))[0].status.value == "read"


# What a page sees of each WebSocket handshake: the selected subprotocol, or how it
# failed (a browser fails a handshake whose answer selects none of those it offered).
_HANDSHAKE = """async ([url, offered]) => await new Promise((resolve) => {
  const ws = offered === null ? new WebSocket(url) : new WebSocket(url, offered);
  ws.onopen = () => { resolve({open: true, protocol: ws.protocol}); ws.close(); };
  ws.onclose = (event) => resolve({open: false, code: event.code});
})"""


async def test_the_browser_negotiates_the_websocket_subprotocol(browser: Browser) -> None:
    demo = create_app()
    async with serve_app(demo.asgi, lifespan=True) as url:
        page = await open_as(browser, url, "alice")
        ws_url = url.replace("http://", "ws://") + "/ws?userId=alice"
        cases: list[tuple[list[str] | None, dict[str, object]]] = [
            (None, {"open": True, "protocol": ""}),
            (["chatrelay.v1"], {"open": True, "protocol": "chatrelay.v1"}),
            (["other", "chatrelay.v1"], {"open": True, "protocol": "chatrelay.v1"}),
            (["other"], {"open": False, "code": 1006}),
        ]
        for offered, expected in cases:
            with anyio.fail_after(WAIT_MS / 1000):
                seen = await page.evaluate(_HANDSHAKE, [ws_url, offered])
            assert seen == expected, offered


async def test_the_page_refreshes_its_token_when_told(browser: Browser) -> None:
    # Tokens of /api/login last 4 s; the relay warns 3 s before the expiry and closes
    # 1 s after it. The page refreshes in band each time it is warned: one WebSocket,
    # never closed, well past the first token's expiry and grace.
    lifetime, grace = 4, 1.0
    demo = create_app(
        auth="jwt",
        jwt_secret="a demo secret that is long enough for HS256",
        token_lifetime=lifetime,
        config=RelayConfig(token_warning=3.0, token_grace=grace),
    )
    async with serve_app(demo.asgi, lifespan=True) as url:
        context = await browser.new_context(viewport={"width": 1000, "height": 600})
        page = await context.new_page()
        sockets: list[WebSocket] = []
        sent: list[str] = []
        received: list[str] = []
        refreshed = anyio.Event()

        def on_sent(payload: str | bytes) -> None:
            sent.append(str(payload))
            if '"auth:refresh"' in sent[-1]:
                refreshed.set()

        def opened(ws: WebSocket) -> None:
            sockets.append(ws)
            ws.on("framesent", on_sent)
            ws.on("framereceived", lambda payload: received.append(str(payload)))

        page.on("websocket", opened)
        await page.goto(f"{url}/?user=alice")
        connection = page.get_by_test_id("connection")
        await expect(connection).to_have_text("connected", timeout=WAIT_MS)
        started = anyio.current_time()
        with anyio.fail_after(WAIT_MS / 1000):
            await refreshed.wait()
        await anyio.sleep_until(started + lifetime + grace + 1)
        assert len(sockets) == 1
        assert not sockets[0].is_closed()
        assert not any("token_expired" in frame for frame in received)
        assert any('"expiresIn"' in frame and '"ok":true' in frame for frame in received)
        await expect(connection).to_have_text("connected")
