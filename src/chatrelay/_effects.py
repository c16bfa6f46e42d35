"""Carrying out what the hub asks, and feeding it what the backplane delivers.

`EffectRunner` is the I/O side of `chatrelay._hub.Hub`: it hands events to this
node's connections (fan-out), asks the application who hears of a presence change
(``presence_audience``, bounded in time), and talks to the backplane in both
directions: room events and control messages out, the other nodes' messages in,
decoded into typed messages for the hub.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from datetime import datetime
from functools import partial
from typing import Final

import anyio

from . import _nodes, codec
from ._backplane import Backplane, BackplaneGap, BackplaneHealth, BackplaneMessage
from ._connection import Connection
from ._exceptions import BackplaneError, CloseReason
from ._history import History, stamp
from ._hub import Announce, Close, Effect, Fanout, Hub, Publish, Subscribe, Tell, Unsubscribe
from ._nodes import (
    CONTROL_TOPIC,
    ROOM_TOPIC_PREFIX,
    AckFields,
    Heartbeat,
    MalformedMessage,
    RoomEvent,
    room_topic,
)
from ._outbound import Outbound
from ._probe import EchoProbe
from ._recorder import Recorder, Recording
from ._statistics import Counters
from ._types import ConnectionId, ConversationId, UserId
from .events import Position, UserOffline, UserOnline

__all__ = ["EffectRunner"]

logger = logging.getLogger("chatrelay")

# What `chatrelay._history.stamp` adds at most: the field, a 20-digit offset, an epoch
# of up to 32 characters.
_POSITION_BYTES: Final = 96


class EffectRunner:
    """Does what a relay's hub asks; see the module's docstring.

    Args:
        hub: The relay's rules and state.
        backplane: The relay's backplane (used only if it is shared).
        connections: The relay's open connections, by id (read, never changed here).
        counters: The relay's counters (backplane errors).
        presence_audience: The application's audience hook, if any.
        hook_timeout: Seconds the hook may take per call.
        heartbeat_interval: Seconds between two heartbeats.
        history: The history that numbers room events, or ``None`` when it is off.
        wake: Wakes the relay's timers (a deadline moved earlier).
        clock: The relay's clock for deadlines.
        wall_clock: The relay's wall clock.
    """

    def __init__(
        self,
        *,
        hub: Hub,
        backplane: Backplane,
        connections: dict[ConnectionId, Connection],
        counters: Counters,
        presence_audience: Callable[[UserId], Awaitable[Collection[UserId]]] | None,
        hook_timeout: float,
        heartbeat_interval: float,
        history: History | None,
        wake: Callable[[], None],
        clock: Callable[[], float],
        wall_clock: Callable[[], datetime],
    ) -> None:
        self._hub = hub
        self._backplane = backplane
        self._shared = backplane.shared
        self.node_id = backplane.node_id
        self._connections = connections
        self._counters = counters
        self._presence_audience = presence_audience
        self._hook_timeout = hook_timeout
        self._heartbeat_interval = heartbeat_interval
        self._history = history
        self._wake = wake
        self._clock = clock
        # Set by the relay: room -> connection -> live events set aside while it
        # catches up (`chatrelay._recovery.Recovery.catching`).
        self.catching: dict[ConversationId, dict[ConnectionId, list[Outbound]]] = {}
        self._wall_clock = wall_clock
        # Whether this node hears its own heartbeats (a deaf backplane otherwise).
        self.probe = EchoProbe(heartbeat_interval) if self._shared else None
        # Numbers room events in batches when the history is in another process.
        self.recorder = (
            None if history is None or history.local else Recorder(history, self._send_recorded)
        )

    async def broadcast(
        self,
        conversation: ConversationId,
        item: Outbound,
        exclude: ConnectionId | None,
        then: Callable[[], list[Effect]] | None = None,
    ) -> None:
        """Number a room event (history on), hand it to the room here, tell the others.

        ``then``: called once the event is accepted, returns effects that must follow
        it (the end of its sender's typing). Refused before anything is recorded or
        sent: a conversation id no backplane can name, an event larger than the
        backplane takes. With a history in another
        process, the event is queued to be numbered (`chatrelay._recorder`), and
        goes out, ``then`` after it, once it has its number.
        """
        if codec.has_lone_surrogate(conversation):
            # No client can be in such a room (requests refuse it), nor can a backplane
            # name its topic: refused before anything is sent.
            raise ValueError(f"conversation id {conversation!r} holds an unpaired surrogate")
        history = self._history
        payload = None
        if self._shared:
            payload = self._room_payload(conversation, item, exclude)
            # The position adds at most _POSITION_BYTES: checked before it is recorded.
            size = len(payload) + (_POSITION_BYTES if history is not None else 0)
            if size > self._backplane.max_payload_bytes:
                raise BackplaneError(
                    f"{item.event} of {size} bytes exceeds the backplane limit of"
                    f" {self._backplane.max_payload_bytes}"
                )
        effects = then() if then is not None else None
        if history is None:
            self.fanout(conversation, item, exclude)
            if payload is not None:
                await self.publish(room_topic(conversation), payload)
        elif self.recorder is not None:
            follow = None if not effects else partial(self.carry_out, effects)
            await self.recorder.record(Recording(conversation, item, exclude, payload, follow))
            return
        else:
            try:
                position: Position | None = await history.append(
                    conversation, item.event, item.json
                )
            except BackplaneError as exc:
                logger.warning(
                    "%s of %r sent without a position: %s", item.event, conversation, exc
                )
                position = None
            await self._send_recorded(Recording(conversation, item, exclude, payload), position)
        if effects:
            await self.carry_out(effects)

    async def _send_recorded(self, recording: Recording, position: Position | None) -> None:
        """Send a room event the history numbered (``None``: it could not)."""
        conversation, item, exclude = recording.conversation, recording.item, recording.exclude
        if position is None:
            self._counters.unrecorded += 1
        else:
            # The event was just made by the emitter and is not shared yet: stamped in place.
            item._stamp(position, stamp(item.json, position))
        if position is None or self._hub.sequencer.in_order(conversation, position):
            self.fanout(conversation, item, exclude)  # the usual case: the next one
        else:
            await self.carry_out(self._hub.room_event(conversation, item, exclude, self._clock()))
        payload = recording.payload
        if payload is not None:
            if position is not None:
                payload = _nodes.stamp_room_event(payload, position)
            await self.publish(room_topic(conversation), payload)
        if recording.then is not None:
            await recording.then()

    def _room_payload(
        self, conversation: ConversationId, item: Outbound, exclude: ConnectionId | None
    ) -> bytes:
        ack = item._ack
        event = RoomEvent(
            conversation_id=conversation,
            event=item.event,
            json=item.json,
            exclude=exclude,
            ack=None
            if ack is None
            else AckFields(
                conversation_id=ack.conversation_id,
                message_id=ack.message_id,
                sender_id=ack.sender_id,
            ),
        )
        return _nodes.encode(self.node_id, event)

    def fanout(
        self, conversation: ConversationId, item: Outbound, exclude: ConnectionId | None
    ) -> None:
        # A connection being forgotten is out of _connections before it is out of its
        # rooms, and forgetting it awaits backplane publishes: skip it meanwhile. The
        # recipients are looked up before the first push (a push never changes either).
        get = self._connections.get
        room = self._hub.rooms.connections(conversation)
        catching = self.catching.get(conversation)
        if catching:
            # Connections catching up get the room's live events after the missed ones.
            for connection_id, aside in catching.items():
                if connection_id != exclude:
                    aside.append(item)
            room = [c for c in room if c not in catching]
        if exclude is None:
            for conn in list(map(get, room)):
                if conn is not None:
                    conn._push(item)
            return
        for connection_id in list(room):
            if connection_id != exclude and (conn := get(connection_id)) is not None:
                conn._push(item)

    async def carry_out(self, effects: list[Effect]) -> None:
        """Do what the hub asked, in order."""
        for effect in effects:
            if isinstance(effect, Fanout):
                self.fanout(effect.conversation, effect.item, effect.exclude)
            elif isinstance(effect, Publish):
                if self._shared:
                    await self.publish(effect.topic, _nodes.encode(self.node_id, effect.message))
            elif isinstance(effect, Announce):
                await self.announce(effect.event, exclude=effect.exclude)
            elif isinstance(effect, Subscribe):
                if self._shared:
                    await self._backplane.subscribe(effect.topic)
            elif isinstance(effect, Unsubscribe):
                if self._shared:
                    await self._backplane.unsubscribe(effect.topic)
            elif isinstance(effect, Tell):
                conn = self._connections.get(effect.connection)
                if conn is not None:
                    conn._push(effect.item)
            elif isinstance(effect, Close):
                for connection_id in effect.connections:
                    conn = self._connections.get(connection_id)
                    if conn is not None:
                        conn.close(CloseReason.parse(effect.reason))
            else:
                self._wake()

    async def announce(
        self, event: UserOnline | UserOffline, *, exclude: ConnectionId | None
    ) -> None:
        item = Outbound(codec.event_name(event), codec.encode(event))
        targets: Iterable[Connection] = self._connections.values()
        if self._presence_audience is not None:
            try:
                with anyio.fail_after(self._hook_timeout):
                    audience = set(await self._presence_audience(event.user_id))
            except TimeoutError:
                logger.exception(
                    "presence_audience did not answer within %gs for %r; nobody is told",
                    self._hook_timeout,
                    event.user_id,
                )
                return
            except Exception:
                logger.exception("presence_audience hook failed for %r", event.user_id)
                return
            targets = [
                self._connections[cid]
                for user in audience
                for cid in self._hub.presence.connections(user)
                if cid in self._connections
            ]
        for conn in list(targets):
            if conn.id != exclude:
                conn._push(item)

    async def publish(self, topic: str, payload: bytes) -> None:
        try:
            await self._backplane.publish(topic, payload)
        except BackplaneError:
            self._counters.backplane_errors += 1
            logger.exception("backplane publish failed on %s", topic)

    async def heartbeat(self) -> None:
        deaf = False
        while True:
            await anyio.sleep(self._heartbeat_interval)
            await self.carry_out(self._hub.heartbeat())
            if self.probe is not None and self.probe.deaf(self._clock()) != deaf:
                deaf = not deaf
                if deaf:
                    logger.error(
                        "node %s hears nothing from the backplane, not even its own"
                        " heartbeats, though it reports itself connected: unhealthy",
                        self.node_id,
                    )
                else:
                    logger.warning("node %s hears the backplane again", self.node_id)

    async def listen(self) -> None:
        if self.probe is not None:
            self.probe.heard(self._clock())  # listening starts: the allowance too
        async for message in self._backplane.messages():
            if not isinstance(message, BackplaneMessage):
                await self._backplane_event(message)
                continue
            try:
                node, decoded = _nodes.decode(message.payload)
            except MalformedMessage as exc:
                logger.warning("ignoring a bad %r envelope from %s: %s", exc.kind, exc.node, exc)
                continue
            except ValueError:
                logger.warning("ignoring a malformed backplane message on %s", message.topic)
                continue
            if node == self.node_id:
                if self.probe is not None:
                    self.probe.heard(self._clock())
                continue
            # A kind from a newer node says at least that its node is alive.
            effects = self._hub.receive(
                node, decoded or Heartbeat(), self._clock(), self._wall_clock()
            )
            try:
                await self.carry_out(effects)
            except Exception:
                # What one node sent must not stop this one.
                logger.exception("failed to apply a message from %s", node)

    async def _backplane_event(self, event: object) -> None:
        if isinstance(event, BackplaneHealth):
            if event.healthy:
                logger.warning("backplane connected again; resuming node liveness checks")
            else:
                logger.warning("backplane down; other nodes are not judged by silence")
            if self.probe is not None:
                self.probe.connection(event.healthy, self._clock())
            await self.carry_out(self._hub.backplane_health(event.healthy, self._clock()))
        elif isinstance(event, BackplaneGap):
            if event.node == self.node_id:
                # This node's own entries, read back: its clients had each of them
                # from it directly, and its own state is not in question.
                return
            if event.topic == CONTROL_TOPIC:
                # Presence, membership or typing changes were lost: ask every node for
                # its state again; the differences are announced as they arrive.
                logger.warning("lost %d control messages; resynchronizing", event.lost)
                await self.carry_out(self._hub.lost_control())
            elif event.topic.startswith(ROOM_TOPIC_PREFIX):
                conversation = ConversationId(event.topic[len(ROOM_TOPIC_PREFIX) :])
                await self.carry_out(self._hub.lost_room(conversation))
        # Other events come from newer backplanes: nothing to do.
