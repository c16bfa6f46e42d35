"""The behaviours `check_transport` checks, each over clients of one transport."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Final

import anyio
import attrs

from .._connection import Delivery
from .._exceptions import ConnectionClosed
from .._relay import Relay
from ..events import Message, MessageStatus
from ._clients import Connect, PausableClient, TransportClient, TransportEvent

__all__ = ["BEHAVIOURS", "CHECKS", "Context", "NotChecked"]


class NotChecked(Exception):
    """A behaviour cannot be checked with these clients; the message says why."""


def _require(condition: bool, message: str) -> None:
    # Not `assert`: the check must hold under `python -O` too.
    if not condition:
        raise AssertionError(message)


@attrs.define
class Context:
    """What a behaviour gets: the relay the check made, ``connect``, and bounded waits."""

    relay: Relay
    connect: Connect
    timeout: float
    deliveries: list[Delivery]
    presence_grace: float
    markers: Iterator[int] = attrs.field(factory=itertools.count)

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait (bounded) for state of the relay that no event announces."""
        with anyio.move_on_after(self.timeout):
            while not predicate():  # noqa: ASYNC110 (nothing signals these changes)
                await anyio.sleep(0.01)
        _require(predicate(), f"{what} (waited {self.timeout} s)")

    async def settle(self, client: TransportClient, room: str) -> None:
        """Send ``client`` a marker through ``room`` and wait for it.

        Events reach a connection in the order the relay handed them over, so once
        the marker arrived, nothing handed over before it is still on its way: what
        the client did not receive by then, it was never sent.
        """
        marker = f"marker-{next(self.markers)}"
        await self.relay.message_status(room, marker, MessageStatus.READ, user_id="marker")
        while True:
            event = await self.receive(client, "message:status")
            if event.data.get("messageId") == marker:
                return

    async def receive(
        self, client: TransportClient, event: str, *, extra: float = 0.0
    ) -> TransportEvent:
        """The client's next ``event``; a timeout fails the check, saying which."""
        try:
            return await client.receive(event, timeout=self.timeout + extra)
        except TimeoutError:
            raise AssertionError(f"no {event} arrived within {self.timeout + extra:g} s") from None


def _names(client: TransportClient, *events: str) -> list[str]:
    return [e.event for e in client.received if e.event in events]


def _message(message_id: str, conversation: str, sender: str, text: str = "hi") -> Message:
    return Message(
        id=message_id,
        conversation_id=conversation,
        sender_id=sender,
        type="text",
        content={"text": text},
        status=MessageStatus.SENT,
        created_at=datetime.now(UTC),
    )


async def _join(client: TransportClient, conversation: str) -> dict[str, Any]:
    ack = await client.request("conversation:join", {"conversationId": conversation})
    _require(ack.get("ok") is True, f"joining {conversation!r} was refused: {ack!r}")
    return ack


# --- the behaviours -------------------------------------------------------------------


async def _join_ack(ctx: Context) -> None:
    async with ctx.connect("alice") as alice, ctx.connect("bob") as bob:
        ack = await _join(alice, "c1")
        _require(
            ack.get("conversationId") == "c1"
            and ack.get("members") == ["alice"]
            and ack.get("typing") == [],
            f"the first join's ack is {ack!r}; expected"
            " {ok: true, conversationId: 'c1', members: ['alice'], typing: []}",
        )
        typing = await alice.request("typing:start", {"conversationId": "c1"})
        _require(typing == {"ok": True}, f"typing:start was acked with {typing!r}")
        ack = await _join(bob, "c1")
        _require(
            sorted(ack.get("members", [])) == ["alice", "bob"] and ack.get("typing") == ["alice"],
            f"the second join's ack is {ack!r}; expected members alice and bob, alice typing",
        )
        left = await bob.request("conversation:leave", {"conversationId": "c1"})
        _require(
            left == {"ok": True, "conversationId": "c1"},
            f"conversation:leave was acked with {left!r}",
        )


async def _members_only(ctx: Context) -> None:
    async with (
        ctx.connect("alice") as alice,
        ctx.connect("bob") as bob,
        ctx.connect("carol") as carol,
    ):
        await _join(alice, "c1")
        await _join(bob, "c1")
        await _join(carol, "c2")
        await ctx.relay.message_received(_message("m1", "c1", "dave"))
        for member in (alice, bob):
            got = await ctx.receive(member, "message:received")
            _require(
                got.data["message"]["id"] == "m1",
                f"a member received {got.data!r} instead of message m1",
            )
        await ctx.settle(carol, "c2")
        _require(
            _names(carol, "message:received") == [],
            "a client that is not a member of the room received its message:received",
        )
        await bob.request("conversation:leave", {"conversationId": "c1"})
        await _join(bob, "c2")
        await ctx.relay.message_received(_message("m2", "c1", "dave"))
        await ctx.receive(alice, "message:received")
        await ctx.settle(bob, "c2")
        ids = [e.data["message"]["id"] for e in bob.received if e.event == "message:received"]
        _require(ids == ["m1"], f"a client that left the room still received {ids[1:]!r}")


async def _no_echo(ctx: Context) -> None:
    async with (
        ctx.connect("alice") as tab1,
        ctx.connect("alice") as tab2,
        ctx.connect("bob") as bob,
    ):
        for client in (tab1, tab2, bob):
            await _join(client, "c1")
        await tab1.request("typing:start", {"conversationId": "c1"})
        seen = await ctx.receive(bob, "typing:start")
        _require(seen.data.get("userId") == "alice", f"bob saw {seen.data!r}")
        try:
            other = await ctx.receive(tab2, "typing:start")
        except AssertionError as exc:
            raise AssertionError(f"the sender's other tab: {exc}") from None
        _require(other.data.get("userId") == "alice", f"the other tab saw {other.data!r}")
        await ctx.settle(tab1, "c1")
        _require(
            _names(tab1, "typing:start") == [],
            "the connection that started typing got its own typing:start back (an echo)",
        )


async def _typing_episode(ctx: Context) -> None:
    async with ctx.connect("alice") as alice, ctx.connect("bob") as bob:
        await _join(alice, "c1")
        await _join(bob, "c1")
        for _ in range(3):
            await alice.request("typing:start", {"conversationId": "c1"})
        await alice.request("typing:start", {"conversationId": "c1", "isTyping": True})
        await alice.request("typing:stop", {"conversationId": "c1"})
        await alice.request("typing:stop", {"conversationId": "c1", "isTyping": False})
        await ctx.settle(bob, "c1")
        typing = [e for e in bob.received if e.event in ("typing:start", "typing:stop")]
        _require(
            [e.event for e in typing] == ["typing:start", "typing:stop"],
            "one typing episode (4 starts, 2 stops) reached the room as"
            f" {[e.event for e in typing]!r}; expected one typing:start, one typing:stop",
        )
        for event, flag in zip(typing, (True, False), strict=True):
            _require(
                event.data.get("conversationId") == "c1"
                and event.data.get("userId") == "alice"
                and event.data.get("isTyping") is flag,
                f"{event.event} carried {event.data!r}",
            )


async def _errors_keep_connection(ctx: Context) -> None:
    async with ctx.connect("alice") as alice:
        bad: list[tuple[str, Any, int, str]] = [
            ("conversation:join", {"conversationId": 42}, 400, "invalid_payload"),
            ("no:such:event", {"conversationId": "c1"}, 400, "unknown_event"),
        ]
        for event, data, status, code in bad:
            reply = await alice.request(event, data)
            error = reply.get("error")
            _require(
                reply.get("ok") is False
                and isinstance(error, dict)
                and error.get("status") == status
                and error.get("code") == code
                and error.get("event") == event
                and isinstance(error.get("message"), str),
                f"a bad {event} was acked with {reply!r};"
                f" expected ok false and an error {status} {code}",
            )
            sent = await ctx.receive(alice, "error")
            _require(
                sent.data == error,
                f"the error event {sent.data!r} differs from the failed ack's {error!r}",
            )
        await _join(alice, "c1")
        count = len(_names(alice, "error"))
        _require(count == len(bad), f"{len(bad)} bad requests caused {count} error events")


async def _delivery_ack(ctx: Context) -> None:
    async with (
        ctx.connect("alice") as alice,
        ctx.connect("bob") as bob,
        ctx.connect("carol") as carol,
    ):
        for client in (alice, bob, carol):
            await _join(client, "c1")
        relay = ctx.relay
        await relay.message_received(_message("m1", "c1", "alice"))
        own = await ctx.receive(alice, "message:received")
        await alice.ack(own)  # the sender's own: not a delivery
        await relay.message_received(_message("m2", "c1", "carol"))
        theirs = await ctx.receive(alice, "message:received")
        await alice.ack(theirs)

        def reported() -> set[tuple[str, str]]:
            return {(d.user_id, d.message_id) for d in ctx.deliveries}

        await ctx.until(
            lambda: ("alice", "m2") in reported(),
            "a recipient's ack of message:received did not reach on_delivered",
        )
        _require(
            ("alice", "m1") not in reported(),
            "the sender's own ack of its message was reported as a delivery",
        )
        first = await ctx.receive(bob, "message:received")
        await bob.ack(first)
        await ctx.until(
            lambda: ("bob", "m1") in reported(),
            "a second recipient's ack did not reach on_delivered",
        )
        _require(
            reported() == {("alice", "m2"), ("bob", "m1")},
            f"on_delivered got {sorted(reported())!r}, more than the clients acked"
            " (does the client acknowledge by itself?)",
        )
        _require(
            all(d.conversation_id == "c1" for d in ctx.deliveries),
            f"a delivery names the wrong conversation: {ctx.deliveries!r}",
        )


async def _presence_grace(ctx: Context) -> None:
    relay = ctx.relay

    def presence(client: TransportClient, user: str) -> list[str]:
        return [
            e.event
            for e in client.received
            if e.event in ("user:online", "user:offline") and e.data.get("userId") == user
        ]

    async with ctx.connect("bob") as bob:
        async with ctx.connect("alice"):
            online = await ctx.receive(bob, "user:online")
            _require(online.data == {"userId": "alice"}, f"user:online carried {online.data!r}")
        await ctx.until(
            lambda: relay.statistics().connections == 1,
            "the relay still holds the closed connection",
        )
        left = anyio.current_time()
        async with ctx.connect("alice"):
            took = anyio.current_time() - left
            # carol is a clock: her grace ends after the one alice's reload started.
            async with ctx.connect("carol"):
                pass
            while True:
                offline = await ctx.receive(bob, "user:offline", extra=ctx.presence_grace)
                if offline.data.get("userId") == "carol":
                    break
            if took >= ctx.presence_grace:
                raise AssertionError(
                    f"reconnecting took {took:.2f} s, not less than the presence grace of"
                    f" {ctx.presence_grace} s: pass a larger presence_grace"
                )
            _require(
                presence(bob, "alice") == ["user:online"],
                f"a reconnect within the grace flapped: {presence(bob, 'alice')!r}",
            )
        offline = await ctx.receive(bob, "user:offline", extra=ctx.presence_grace)
        _require(
            offline.data.get("userId") == "alice" and isinstance(offline.data.get("lastSeen"), str),
            f"the last connection's close gave {offline.data!r}; expected alice's user:offline",
        )


async def _ack_ordering(ctx: Context) -> None:
    async with ctx.connect("alice") as alice, ctx.connect("bob") as bob:
        await _join(alice, "c1")
        await _join(bob, "c1")
        expected: list[str] = []
        text = "x" * 1024  # large enough that some of the burst waits to be written
        for n in range(100):
            await ctx.relay.message_received(_message(f"m{n}", "c1", "bob", text))
            await ctx.relay.message_status("c1", f"s{n}", MessageStatus.READ, user_id="bob")
            expected += [f"m{n}", f"s{n}"]
        await alice.request("typing:start", {"conversationId": "c1"})
        got = [
            e.data["message"]["id"] if e.event == "message:received" else e.data["messageId"]
            for e in alice.received
            if e.event in ("message:received", "message:status")
        ]
        _require(
            got == expected,
            f"a request's ack arrived after {len(got)} of the {len(expected)} events sent"
            " before it (or out of order): an ack overtook earlier events",
        )


async def _slow_consumer(ctx: Context) -> None:
    relay = ctx.relay
    async with ctx.connect("slow") as slow, ctx.connect("fast") as fast:
        if not isinstance(slow, PausableClient):
            raise NotChecked("the client cannot pause reading (it has no pause()/resume())")
        await _join(slow, "c1")
        await _join(fast, "c1")
        slow.pause()
        text = "x" * 1000
        sent = 0
        with anyio.move_on_after(ctx.timeout * 4):
            while not relay.statistics().slow_consumers and sent < 20_000:
                await relay.message_received(_message(f"m{sent}", "c1", "carol", text))
                # The reader gets each event while the other one stalls.
                read = await ctx.receive(fast, "message:received")
                _require(
                    read.data["message"]["id"] == f"m{sent}",
                    f"the client that kept reading got {read.data['message']['id']}"
                    f" instead of m{sent}",
                )
                sent += 1
        _require(
            relay.statistics().slow_consumers == 1,
            f"a client that stopped reading was not found slow after {sent} events"
            f" of 1 KiB (outgoing_bytes={relay.config.limits.outgoing_bytes}):"
            " does pause() stop reading?",
        )
        await ctx.until(
            lambda: relay.members("c1") == {"fast"},
            "the relay did not forget the slow consumer",
        )
        slow.resume()
        try:
            await slow.receive("chatrelay:never-sent", timeout=ctx.timeout)
        except ConnectionClosed:
            pass
        except TimeoutError:
            raise AssertionError(
                f"the slow consumer's connection was still open {ctx.timeout} s after the"
                " relay closed it"
            ) from None
        got = [e.data["message"]["id"] for e in slow.received if e.event == "message:received"]
        _require(
            got == [f"m{n}" for n in range(len(got))] and len(got) < sent,
            f"the slow consumer got {len(got)} of {sent} events, not a prefix in order",
        )


def _room_ids(client: TransportClient) -> list[str]:
    return [
        e.data["message"]["id"] if e.event == "message:received" else e.data["messageId"]
        for e in client.received
        if e.event in ("message:received", "message:status")
    ]


async def _recovery(ctx: Context) -> None:
    relay = ctx.relay
    async with ctx.connect("bob") as bob:
        ack = await _join(bob, "c1")
        start = ack.get("position")
        if start is None:
            raise NotChecked("the relay numbers no room events (history off)")
        for n in (1, 2):
            await relay.message_received(_message(f"m{n}", "c1", "alice"))
        await ctx.receive(bob, "message:received")
        last = (await ctx.receive(bob, "message:received")).data.get("position")
        _require(
            isinstance(last, dict) and last.get("offset") == start["offset"] + 2,
            f"the second message after joining at {start!r} carried position {last!r}",
        )
    await relay.message_received(_message("m3", "c1", "alice"))
    await relay.message_status("c1", "m3", MessageStatus.READ, user_id="alice")
    await relay.message_received(_message("m4", "c1", "alice"))
    async with ctx.connect("bob") as bob:
        ack = await bob.request("conversation:join", {"conversationId": "c1", "position": last})
        _require(
            ack.get("ok") is True and ack.get("recovered") is True,
            f"resuming from {last!r} was answered {ack!r}; expected recovered: true",
        )
        got = _room_ids(bob)
        _require(
            got == ["m3", "m3", "m4"],
            f"before the ack of the resuming join the client got {got!r};"
            " expected the missed m3, its status, m4, in order",
        )
        _require(
            ack.get("position", {}).get("offset") == last["offset"] + 3,
            f"the ack's position {ack.get('position')!r} is not that of the last missed event",
        )
        await relay.message_received(_message("m5", "c1", "alice"))
        live = await ctx.receive(bob, "message:received")
        while live.data["message"]["id"] != "m5":
            live = await ctx.receive(bob, "message:received")
        _require(_room_ids(bob) == ["m3", "m3", "m4", "m5"], "a missed event came twice")
    stale = {"offset": last["offset"], "epoch": "not-" + str(last["epoch"])}
    async with ctx.connect("bob") as bob:
        ack = await bob.request("conversation:join", {"conversationId": "c1", "position": stale})
        _require(
            ack.get("ok") is True and ack.get("recovered") is False and _room_ids(bob) == [],
            f"resuming from another epoch was answered {ack!r} after {_room_ids(bob)!r};"
            " expected recovered: false and nothing replayed",
        )


async def _told_why(ctx: Context, client: TransportClient) -> str:
    """Wait (bounded) for the server's close; its reason and the ``error`` codes before it."""
    try:
        with anyio.fail_after(ctx.timeout):
            while True:
                await client.receive("chatrelay:never-sent", timeout=ctx.timeout)
    except ConnectionClosed as closed:
        codes = [str(e.data.get("code")) for e in client.received if e.event == "error"]
        return " ".join([str(closed.reason), *codes])
    except TimeoutError:
        raise AssertionError(f"the connection was still open after {ctx.timeout} s") from None


async def _server_closes_say_why(ctx: Context) -> None:
    relay = ctx.relay
    async with ctx.connect("alice") as alice, ctx.connect("bob") as bob:
        await _join(alice, "c1")
        await _join(bob, "c1")
        await relay.disconnect_user("alice")
        why = await _told_why(ctx, alice)
        # socket.io-client over long-polling acts on the close before it hands over the
        # error event that came with it (it keeps it for after a reconnect).
        if "transport close" not in why:
            _require("disconnected" in why, f"disconnect_user closed a client saying {why!r}")
        typing = await bob.request("typing:start", {"conversationId": "c1"})
        _require(typing == {"ok": True}, "disconnect_user disturbed another user's client")
        await relay.drain(0.1)
        told = await ctx.receive(bob, "server:draining")
        _require(
            isinstance(told.data.get("reconnectAfterMs"), int),
            f"server:draining carried {told.data!r}",
        )
        why = await _told_why(ctx, bob)
        if "transport close" not in why:
            _require("server_restart" in why, f"a drain closed a client saying {why!r}")


CHECKS: Final[dict[str, Callable[[Context], Awaitable[None]]]] = {
    "join_ack": _join_ack,
    "members_only": _members_only,
    "no_echo": _no_echo,
    "typing_episode": _typing_episode,
    "errors_keep_connection": _errors_keep_connection,
    "delivery_ack": _delivery_ack,
    "presence_grace": _presence_grace,
    "ack_ordering": _ack_ordering,
    "slow_consumer": _slow_consumer,
    "recovery": _recovery,
    "server_closes_say_why": _server_closes_say_why,
}

BEHAVIOURS: Final = tuple(CHECKS)
"""The behaviours `check_transport` checks, in the order it checks them."""
